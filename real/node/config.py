"""Node configuration: defaults < TOML file < command-line flags.

Every key is declared once in `KEYS` (its dotted TOML path, the NodeConfig field, type and check).
An unknown key or a bad value raises ConfigError naming the file (or flag) and the key.

    node_id = 1
    data_dir = "./data"
    bind = "127.0.0.1"
    [listeners]
    mqtt_port = 1883
    kafka_port = 9092
    admin_port = 8080
    [storage]
    engine = "file"            # memory | file | rocksdb | s3 (the default; topics may choose)
    fsync = "group"            # always | group | never (file and rocksdb engines)
    group_commit_ms = 2        # group: fsync at most this long after the oldest unsynced append
    segment_bytes = 67108864   # file journal segment size
    s3_endpoint = ""           # empty: start an embedded SeaweedFS S3 server on loopback
    s3_bucket = "twinmq"
    s3_linger_ms = 0           # 0: one PUT per append (durable on return); > 0: batch into objects
    [raft]
    tick_ms = 10
    election_tick_min = 10
    election_tick_max = 19
    heartbeat_tick = 1
    snapshot_entries = 1000    # compact the meta log past this many entries
    seed = 0                   # 0: derive from node_id
    [admin]
    request_bytes_max = 8192
    connections_max = 64
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

STORAGE_ENGINES = ("memory", "file", "rocksdb", "s3")
FSYNC_POLICIES = ("always", "group", "never")


class ConfigError(Exception):
    """A configuration problem; the message names the file or flag and the key."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int = 1
    data_dir: Path = Path("./data")
    bind: str = "127.0.0.1"
    mqtt_port: int = 1883
    kafka_port: int = 9092
    admin_port: int = 8080
    storage_engine: str = "file"
    storage_fsync: str = "group"
    storage_group_commit_ms: int = 2
    storage_segment_bytes: int = 64 << 20
    storage_s3_endpoint: str = ""
    storage_s3_bucket: str = "twinmq"
    storage_s3_linger_ms: int = 0
    tick_ms: int = 10
    election_tick_min: int = 10
    election_tick_max: int = 19
    heartbeat_tick: int = 1
    snapshot_entries: int = 1000
    raft_seed: int = 0
    admin_request_bytes_max: int = 8192
    admin_connections_max: int = 64

    def __post_init__(self) -> None:
        assert self.node_id >= 1, self.node_id
        assert self.storage_engine in STORAGE_ENGINES, self.storage_engine
        assert 1 <= self.heartbeat_tick < self.election_tick_min <= self.election_tick_max


@dataclass(frozen=True, slots=True)
class Key:
    path: str
    """Dotted TOML path, e.g. "listeners.admin_port"."""
    field: str
    type: type
    check: Callable[[Any], str | None]


def _range(low: int, high: int) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be in [{low}, {high}], got {v}"


def _nonempty(v: Any) -> str | None:
    return None if v else "must not be empty"


def _engine(v: Any) -> str | None:
    ok = v in STORAGE_ENGINES
    return None if ok else f"must be one of {', '.join(STORAGE_ENGINES)}, got {v!r}"


def _fsync(v: Any) -> str | None:
    ok = v in FSYNC_POLICIES
    return None if ok else f"must be one of {', '.join(FSYNC_POLICIES)}, got {v!r}"


def _bucket(v: Any) -> str | None:
    ok = 3 <= len(v) <= 63 and all(c.islower() or c.isdigit() or c in "-." for c in v)
    return None if ok else f"must be an S3 bucket name (3-63 of a-z 0-9 - .), got {v!r}"


def _endpoint(v: Any) -> str | None:
    ok = v == "" or v.startswith(("http://", "https://"))
    return None if ok else f"must be empty or an http(s):// URL, got {v!r}"


_PORT = _range(0, 65535)
KEYS: tuple[Key, ...] = (
    Key("node_id", "node_id", int, _range(1, 2**31 - 1)),
    Key("data_dir", "data_dir", str, _nonempty),
    Key("bind", "bind", str, _nonempty),
    Key("listeners.mqtt_port", "mqtt_port", int, _PORT),
    Key("listeners.kafka_port", "kafka_port", int, _PORT),
    Key("listeners.admin_port", "admin_port", int, _PORT),
    Key("storage.engine", "storage_engine", str, _engine),
    Key("storage.fsync", "storage_fsync", str, _fsync),
    Key("storage.group_commit_ms", "storage_group_commit_ms", int, _range(1, 60_000)),
    Key("storage.segment_bytes", "storage_segment_bytes", int, _range(4096, 1 << 40)),
    Key("storage.s3_endpoint", "storage_s3_endpoint", str, _endpoint),
    Key("storage.s3_bucket", "storage_s3_bucket", str, _bucket),
    Key("storage.s3_linger_ms", "storage_s3_linger_ms", int, _range(0, 60_000)),
    Key("raft.tick_ms", "tick_ms", int, _range(1, 60_000)),
    Key("raft.election_tick_min", "election_tick_min", int, _range(2, 10_000)),
    Key("raft.election_tick_max", "election_tick_max", int, _range(2, 10_000)),
    Key("raft.heartbeat_tick", "heartbeat_tick", int, _range(1, 10_000)),
    Key("raft.snapshot_entries", "snapshot_entries", int, _range(2, 10_000_000)),
    Key("raft.seed", "raft_seed", int, _range(0, 2**63 - 1)),
    Key("admin.request_bytes_max", "admin_request_bytes_max", int, _range(256, 1 << 20)),
    Key("admin.connections_max", "admin_connections_max", int, _range(1, 10_000)),
)
_BY_PATH = {k.path: k for k in KEYS}
_BY_FIELD = {k.field: k for k in KEYS}
assert sorted(_BY_FIELD) == sorted(f.name for f in fields(NodeConfig))


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None,
                *, flag_names: Mapping[str, str] | None = None) -> NodeConfig:
    """Defaults, then the TOML file at `path` (if any), then `overrides` (NodeConfig field ->
    value, e.g. from CLI flags; `flag_names` maps a field to the flag for error messages)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_file(Path(path)))
    for field_name in sorted(overrides or {}):
        value = (overrides or {})[field_name]
        key = _BY_FIELD.get(field_name)
        assert key is not None, f"unknown override field {field_name!r}"
        where = (flag_names or {}).get(field_name, field_name)
        values[field_name] = _check(key, value, f"command line: {where}")
    return _build(values, str(path) if path is not None else "command line")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    for dotted, value in _flatten(doc, path):
        key = _BY_PATH.get(dotted)
        if key is None:
            known = ", ".join(k.path for k in KEYS)
            raise ConfigError(f"{path}: unknown key '{dotted}' (known: {known})")
        values[key.field] = _check(key, value, f"{path}: key '{dotted}'")
    return values


def _flatten(doc: dict[str, Any], path: Path, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name in doc:
        dotted = prefix + name
        value = doc[name]
        is_section = any(k.path.startswith(dotted + ".") for k in KEYS)
        if isinstance(value, dict) and is_section and not prefix:
            out += _flatten(value, path, dotted + ".")
        elif is_section:
            raise ConfigError(f"{path}: key '{dotted}' must be a table [{dotted}], "
                              f"got {type(value).__name__}")
        else:
            out.append((dotted, value))
    return out


def _check(key: Key, value: Any, where: str) -> Any:
    if type(value) is not key.type:
        want = {int: "an integer", str: "a string"}[key.type]
        raise ConfigError(f"{where} must be {want}, got {type(value).__name__} {value!r}")
    err = key.check(value)
    if err is not None:
        raise ConfigError(f"{where} {err}")
    return Path(value) if key.field == "data_dir" else value


def _build(values: dict[str, Any], source: str) -> NodeConfig:
    cfg = replace(NodeConfig(), **{k: v for k, v in values.items() if k not in _TICKS})
    ticks = {k: values.get(k, getattr(cfg, k)) for k in _TICKS}
    if not 1 <= ticks["heartbeat_tick"] < ticks["election_tick_min"]:
        raise ConfigError(f"{source}: raft.heartbeat_tick ({ticks['heartbeat_tick']}) must be "
                          f"below raft.election_tick_min ({ticks['election_tick_min']})")
    if ticks["election_tick_min"] > ticks["election_tick_max"]:
        raise ConfigError(f"{source}: raft.election_tick_min ({ticks['election_tick_min']}) "
                          f"must not exceed raft.election_tick_max ({ticks['election_tick_max']})")
    return replace(cfg, **ticks)


_TICKS = ("heartbeat_tick", "election_tick_min", "election_tick_max")
