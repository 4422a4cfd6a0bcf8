"""`python -m model run FILE [--seed N]` and `python -m model sweep FILE --seeds 1-1000 --jobs 2`.

One CLI for every scenario (model/scenario.py): each runs in the one world (model/world.py).
`mqtt` and `kafka` are kept as aliases of `run` (with `--seeds` they sweep).

`main(argv)` returns the exit code (never calls sys.exit): run -> 0 ok, 1 safety, 2 liveness,
3 crash; sweep -> 0 if every seed is ok, else the code of the worst outcome; 4 on a usage or
scenario error. `twinmq sim ...` (scenarios/cli.py) calls `main(argv)` with argv starting at
`run`/`sweep`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from model.checkers.raft import OUTCOME_CODES
from model.scenario import Scenario, ScenarioError, load, with_bugs

USAGE_ERROR = 4
SEEDS_MAX = 1_000_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinmq sim", description="TwinMQ deterministic simulator")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one seed")
    run.add_argument("file")
    run.add_argument("--seed", type=int, help="default: the scenario's seed")
    run.add_argument("--trace", metavar="OUT.jsonl")
    run.add_argument("--bug", action="append", default=[], metavar="NAME",
                     help="plant a Raft or broker bug (checker tests)")
    run.add_argument("--state-log", choices=("journal", "memory"), help="override state_log")
    run.add_argument("--trace-messages", action="store_true", help="trace every message sent")
    run.add_argument("--tick-by-tick", action="store_true", help="disable tick skipping")
    for alias in ("mqtt", "kafka"):
        old = sub.add_parser(alias, help="same as run (with --seeds: sweep)")
        old.add_argument("file")
        old.add_argument("--seed", type=int)
        old.add_argument("--trace", metavar="OUT.jsonl")
        old.add_argument("--bug", action="append", default=[], metavar="NAME")
        old.add_argument("--state-log", choices=("journal", "memory"))
        old.add_argument("--seeds", metavar="A-B")
        old.add_argument("--jobs", type=int, default=1)
    sweep = sub.add_parser("sweep", help="run many seeds in parallel processes")
    sweep.add_argument("file")
    sweep.add_argument("--seeds", default="1-100", help="A-B (inclusive) or a comma list")
    sweep.add_argument("--jobs", type=int, default=2)
    sweep.add_argument("--bug", action="append", default=[], metavar="NAME")
    sweep.add_argument("--out", metavar="results.jsonl",
                       help="per-seed results (default: results/<scenario>-seeds-<spec>.jsonl)")
    sweep.add_argument("--stop-on-first", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:  # argparse exits on --help and on errors
        return 0 if exc.code == 0 else USAGE_ERROR
    if args.command in ("mqtt", "kafka"):
        args.command = "sweep" if args.seeds else "run"
        args.out, args.stop_on_first, args.trace_messages, args.tick_by_tick = (
            None, False, False, False)
    try:
        scenario = with_bugs(load(args.file), args.bug)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    if getattr(args, "state_log", None):
        import dataclasses

        scenario = dataclasses.replace(scenario, state_log=args.state_log)
    if args.command == "run":
        return _run(scenario, args)
    from model.sim.sweep import parse_seeds, sweep

    try:
        seeds = parse_seeds(args.seeds, SEEDS_MAX)
    except ValueError as exc:
        print(f"error: --seeds: {exc}", file=sys.stderr)
        return USAGE_ERROR
    out = args.out or default_results_path(args.file, args.seeds, args.bug)
    return sweep(args.file, scenario, seeds, args.jobs, args.bug, out, args.stop_on_first)


def default_results_path(file: str, seeds: str, bugs: list[str]) -> str:
    """results/<scenario>-seeds-<spec>[-<bug>...].jsonl (results/ is git-ignored)."""
    name = "-".join([Path(file).stem, "seeds", seeds.replace(",", "_"), *bugs])
    return str(Path("results") / f"{name}.jsonl")


def reproduce_line(file: str, seed: int, bugs: list[str], state_log: str | None = None) -> str:
    extra = "".join(f" --bug {b}" for b in bugs)
    if state_log:
        extra += f" --state-log {state_log}"
    return f"twinmq sim run {file} --seed {seed}{extra}"


def _run(scenario: Scenario, args: argparse.Namespace) -> int:
    import dataclasses

    from model.world import World

    if args.trace_messages:
        scenario = dataclasses.replace(scenario, trace_messages=True)
    if args.tick_by_tick:
        cluster = dataclasses.replace(scenario.cluster, tick_skipping=False)
        scenario = dataclasses.replace(scenario, cluster=cluster)
    seed = scenario.seed if args.seed is None else args.seed
    out = Path(args.trace).open("w") if args.trace else None
    wall0 = time.perf_counter()
    try:
        result = World(scenario, seed, trace_out=out).run()
    finally:
        if out is not None:
            out.close()
    wall = time.perf_counter() - wall0
    sim_s = result.sim_us / 1e6
    bugs = [*scenario.cluster.bugs, *scenario.broker_bugs]
    print(f"scenario: {scenario.name} ({args.file}) seed {seed}"
          f"{' bugs ' + ','.join(bugs) if bugs else ''}")
    print(f"sim time: {sim_s:.3f} s, wall: {wall:.3f} s, ratio {sim_s / max(wall, 1e-9):.0f}x")
    print("stats: " + json.dumps(result.stats, sort_keys=True))
    if result.detail:
        print(f"detail: {result.detail}")
    print(f"trace-hash: {result.trace_hash}")
    print(f"outcome: {result.outcome}")
    print(f"reproduce: {reproduce_line(args.file, seed, args.bug, args.state_log)}")
    return OUTCOME_CODES[result.outcome]


if __name__ == "__main__":
    raise SystemExit(main())
