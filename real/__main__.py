"""`python -m real …` / `twinmq serve …`: the CLI as a testable function.

    main(["serve", "--admin-port", "8081", "--data-dir", "/tmp/d"]) -> exit status

Usage errors (unknown flag, bad value, unknown config key) print one line naming the culprit to
stderr and return 2. Flags override the config file, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from real.node.config import ConfigError, load_config

PROG = "twinmq"
# flag -> NodeConfig field
SERVE_FLAGS = {
    "--node-id": ("node_id", int),
    "--data-dir": ("data_dir", str),
    "--bind": ("bind", str),
    "--mqtt-port": ("mqtt_port", int),
    "--kafka-port": ("kafka_port", int),
    "--admin-port": ("admin_port", int),
    "--storage": ("storage_engine", str),
    "--fsync": ("storage_fsync", str),
    "--s3-endpoint": ("storage_s3_endpoint", str),
}


class UsageError(Exception):
    pass


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of calling sys.exit, so main() can return a status."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr, end="")
        raise _Exit(status)


def build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="TwinMQ node and tools", exit_on_error=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run one all-in-one node", exit_on_error=False)
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    for flag, (field, kind) in SERVE_FLAGS.items():
        serve.add_argument(flag, dest=field, type=kind, default=None,
                           help=f"overrides the config file ({field})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(args_list)
        if extra:
            known = ", ".join(["--config", *SERVE_FLAGS])
            where = f"{args.command}: " if args.command else ""
            raise UsageError(f"{PROG}: error: {where}unknown argument {extra[0]!r} "
                             f"(known flags: {known})")
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except argparse.ArgumentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except _Exit as exc:
        return exc.status
    if args.command is None:
        print(parser.format_usage().rstrip(), file=sys.stderr)
        print(f"{PROG}: error: a command is required (serve)", file=sys.stderr)
        return 2
    assert args.command == "serve", args.command
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    overrides = {field: getattr(args, field) for field, _ in SERVE_FLAGS.values()
                 if getattr(args, field) is not None}
    flag_names = {field: flag for flag, (field, _) in SERVE_FLAGS.items()}
    try:
        cfg = load_config(args.config, overrides, flag_names=flag_names)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from real.node.disk import DiskError
    from real.node.server import serve

    try:
        return asyncio.run(serve(cfg))
    except (DiskError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except ExceptionGroup as group:  # from the TaskGroup, e.g. could not register in meta
        failures, rest = group.split((RuntimeError, OSError))
        if rest is not None:
            raise
        assert failures is not None
        for exc in failures.exceptions:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
