"""`python -m real …` / `twinmq serve|user|ctl …`: the CLI as a testable function.

    main(["serve", "--admin-port", "8081", "--data-dir", "/tmp/d"]) -> exit status
    main(["user", "add", "--file", "pw", "alice", "--password", "s3cret"])
    main(["user", "delete", "--file", "pw", "alice"]); main(["user", "list", "--file", "pw"])
    main(["ctl", "--admin", "http://127.0.0.1:8080", "clients"])
    main(["ctl", "disconnect", "sensor-7"])

Usage errors (unknown flag, bad value, unknown config key) print one line naming the culprit to
stderr and return 2; runtime failures (unreadable file, node unreachable) print one line and
return 1. For `serve`, flags override the config file, which overrides the defaults. `user` and
`ctl` are in `real/node/ctl.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from real.node.config import ConfigError, load_config

PROG = "twinmq"


def _auto_or_bool(text: str) -> str | bool:
    """--allow-anonymous auto|true|false."""
    choices: dict[str, str | bool] = {"auto": "auto", "true": True, "false": False}
    value = choices.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"must be auto, true or false, got {text!r}")
    return value


def _bool(text: str) -> bool:
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")
    return value


# flag -> NodeConfig field and the parser of its value
SERVE_FLAGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "--node-id": ("node_id", int),
    "--data-dir": ("data_dir", str),
    "--bind": ("bind", str),
    "--mqtt-port": ("mqtt_port", int),
    "--kafka-port": ("kafka_port", int),
    "--admin-port": ("admin_port", int),
    "--storage": ("storage_engine", str),
    "--fsync": ("storage_fsync", str),
    "--sync-thread": ("storage_sync_thread", _bool),
    "--s3-endpoint": ("storage_s3_endpoint", str),
    "--ws-port": ("ws_port", int),
    "--mqtts-port": ("mqtts_port", int),
    "--wss-port": ("wss_port", int),
    "--tls-cert": ("tls_cert_file", str),
    "--tls-key": ("tls_key_file", str),
    "--allow-anonymous": ("mqtt_allow_anonymous", _auto_or_bool),
    "--password-file": ("mqtt_password_file", str),
    "--acl-file": ("mqtt_acl_file", str),
    "--peers": ("cluster_peers", str),
    "--cluster-secret-file": ("cluster_secret_file", str),
    "--join": ("cluster_join", _bool),
    "--replication-factor": ("kafka_default_replication_factor", int),
    "--min-insync-replicas": ("kafka_min_insync_replicas", int),
    "--hold-unsynced": ("storage_hold_unsynced", _bool),
    "--log-timestamps": ("log_timestamps", _bool),
    "--mqtt-cluster": ("mqtt_cluster", _bool),
    "--peer-tls-cert": ("cluster_tls_cert_file", str),
    "--peer-tls-key": ("cluster_tls_key_file", str),
    "--peer-tls-ca": ("cluster_tls_ca_file", str),
}
COMMANDS = ("serve", "user", "ctl", "cluster")


class UsageError(Exception):
    pass


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of calling sys.exit, so main() can return a status."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
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
    _add_user_parser(sub)
    _add_ctl_parser(sub)
    return parser


def _add_user_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from real.mqtt.auth import ITERATIONS_DEFAULT

    user = sub.add_parser("user", help="manage a password file (mosquitto_passwd format, for "
                          "MQTT and Kafka PLAIN) and its Kafka SCRAM sidecar FILE.scram",
                          exit_on_error=False)
    actions = user.add_subparsers(dest="user_command", metavar="ACTION")
    add = actions.add_parser("add", help="add a user or change its password",
                             exit_on_error=False)
    add.add_argument("username", metavar="USERNAME")
    add.add_argument("--password", help="the password (default: one line from stdin, or a "
                                        "prompt without echo on a terminal)")
    add.add_argument("--iterations", type=int, default=ITERATIONS_DEFAULT,
                     help=f"PBKDF2 iterations (default {ITERATIONS_DEFAULT}, like mosquitto)")
    delete = actions.add_parser("delete", help="remove a user", exit_on_error=False)
    delete.add_argument("username", metavar="USERNAME")
    listing = actions.add_parser("list", help="print the usernames", exit_on_error=False)
    for action in (add, delete, listing):
        action.add_argument("--file", type=Path, required=True, metavar="PATH",
                            help="the password file (created by add if absent)")


def _add_ctl_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from real.node.ctl import CTL_COMMANDS, DEFAULT_ADMIN

    ctl = sub.add_parser("ctl", help="query or steer a running node over its admin HTTP API",
                         exit_on_error=False)
    where = ctl.add_mutually_exclusive_group()
    where.add_argument("--admin", default=DEFAULT_ADMIN, metavar="URL",
                       help=f"the node's admin server (default {DEFAULT_ADMIN})")
    where.add_argument("--cluster", type=Path, metavar="DIR",
                       help="every node of the cluster `twinmq cluster up` started in DIR")
    ctl.add_argument("--json", action="store_true", help="print JSON compactly")
    ctl.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    ctl.add_argument("ctl_command", choices=CTL_COMMANDS, metavar="COMMAND",
                     help=", ".join(CTL_COMMANDS))
    ctl.add_argument("client_id", nargs="?", metavar="CLIENT_ID", help="for disconnect")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["cluster"]:
        from real.node.cluster import main as cluster_main

        return cluster_main(args_list[1:])
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(args_list)
        if extra:
            known = ", ".join(["--config", *SERVE_FLAGS])
            where = f"{args.command}: " if args.command else ""
            hint = f" (known flags: {known})" if args.command == "serve" else ""
            raise UsageError(f"{PROG}: error: {where}unknown argument {extra[0]!r}{hint}")
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
        print(f"{PROG}: error: a command is required ({', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    assert args.command in COMMANDS, args.command
    if args.command == "user":
        return _user(args)
    if args.command == "ctl":
        return _ctl(args)
    return _serve(args)


def _user(args: argparse.Namespace) -> int:
    from real.node import ctl

    if args.user_command is None:
        print(f"{PROG}: error: user: an action is required (add, delete, list)", file=sys.stderr)
        return 2
    try:
        if args.user_command == "add":
            password = (args.password.encode("utf-8") if args.password is not None
                        else ctl.read_password_input(sys.stdin))
            is_new = ctl.user_add(args.file, args.username, password, args.iterations)
            print(f"{'added' if is_new else 'updated'} user {args.username!r} in {args.file}")
        elif args.user_command == "delete":
            ctl.user_delete(args.file, args.username)
            print(f"deleted user {args.username!r} from {args.file}")
        else:
            for name in ctl.user_list(args.file):
                print(name)
    except ctl.CtlError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.status
    except OSError as exc:
        print(f"{PROG}: error: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _ctl(args: argparse.Namespace) -> int:
    from real.node import ctl

    try:
        if args.cluster is not None:
            ctl.run_ctl_cluster(args.cluster, args.ctl_command, args.client_id,
                                compact=args.json, timeout=args.timeout, out=print)
        else:
            ctl.run_ctl(args.admin, args.ctl_command, args.client_id, compact=args.json,
                        timeout=args.timeout, out=print)
    except ctl.CtlError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.status
    return 0


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
        for failure in failures.exceptions:
            print(f"{PROG}: error: {failure}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
