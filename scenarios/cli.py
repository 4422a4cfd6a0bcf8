"""`twinmq`: one command for both worlds.

    twinmq serve ...        run a real node            (real/__main__.py)
    twinmq user ...         manage an MQTT password file (real/__main__.py)
    twinmq ctl ...          query a running node's admin API (real/__main__.py)
    twinmq cluster ...      start, inspect, stop a local cluster (real/node/cluster.py)
    twinmq sim run|sweep    run the simulator          (model/__main__.py; mqtt and kafka:
                                                        aliases of run)

This dispatcher lives in `scenarios/` because it is the one package allowed to import both `real`
and `model` (`real` must never import `model`).
"""

from __future__ import annotations

import sys

USAGE = """usage: twinmq <command> [args]

commands:
  serve              start a node (see: twinmq serve --help)
  user add|delete|list --file PATH [USERNAME]   MQTT password file (mosquitto_passwd format)
  ctl [--admin URL] COMMAND                     health, node, clients, sessions, ...
  cluster up|status|down --dir DIR [--nodes N]  a cluster of serve processes on this machine
  sim run FILE       run one simulated scenario (--seed N, --trace OUT, --bug NAME,
                     --state-log journal|memory; default seed: the scenario's)
  sim sweep FILE     run many seeds in parallel (--seeds 1-1000 --jobs 2)
  sim mqtt FILE      aliases of sim run, for any scenario (with --seeds A-B [--jobs N]:
  sim kafka FILE       of sim sweep)
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "sim":
        # run, sweep, and the aliases mqtt and kafka (model/__main__.py): one world for all
        from model.__main__ import main as sim_main

        return sim_main(rest)
    if command in ("serve", "user", "ctl", "cluster"):
        from real.__main__ import main as real_main

        return real_main(args)
    print(f"twinmq: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
