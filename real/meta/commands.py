"""Meta commands: the canonical byte encoding and a static (state-free) schema check.

A command is the JSON object `{"args": {...}, "op": "<op>"}` encoded with sorted keys and compact
separators, so equal commands are equal bytes. Decoding never raises: bad bytes from the log yield a
`MetaError` value whose message names the culprit (op, field, expected type).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

COMMAND_BYTES_MAX = 64 * 1024
NAME_CHARS_MAX = 249
ADDR_CHARS_MAX = 255
CONFIG_KEY_CHARS_MAX = 256
CONFIG_VALUE_CHARS_MAX = 4096
TOPIC_CONFIG_KEYS_MAX = 64
SHARDS_MAX = 1024
REPLICAS_MAX = 16
GROUP_CHARS_MAX = 255
OFFSETS_MAX = 1024
METADATA_CHARS_MAX = 4096
CLIENT_CHARS_MAX = 65535
ENGINES = ("file", "memory", "rocksdb", "s3")

Scalar = str | int | float | bool


class MetaError(Exception):
    """A command (or snapshot) is malformed. `str(err)` names the op and field at fault."""


@dataclass(frozen=True, slots=True)
class Command:
    op: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: str
    """One of: "id" (int >= 1), "uint" (int >= 0), "shards", "name", "addr", "key", "scalar",
    "engine", "config" (dict of str -> scalar), "group" (a consumer group id), "offsets" (a list
    of [topic, partition, offset, metadata] committed for a group), "client" (an MQTT client
    identifier: any string of 1 to `CLIENT_CHARS_MAX` characters)."""
    required: bool = True


def _f(name: str, kind: str, required: bool = True) -> _Field:
    return _Field(name, kind, required)


SCHEMA: dict[str, tuple[_Field, ...]] = {
    "node.register": (
        _f("node_id", "id"),
        _f("addr", "addr"),
        _f("mqtt_addr", "addr", False),
        _f("kafka_addr", "addr", False),
        _f("admin_addr", "addr", False),
    ),
    "node.unregister": (_f("node_id", "id"),),
    "member.add": (_f("node_id", "id"), _f("raft_addr", "addr")),
    "member.remove": (_f("node_id", "id"),),
    "topic.create": (
        _f("name", "name"),
        _f("shards", "shards"),
        _f("engine", "engine"),
        _f("config", "config", False),
        _f("leader", "id", False),
        _f("replication", "replication", False),
    ),
    "topic.delete": (_f("name", "name"),),
    "shard.set_leader": (
        _f("topic", "name"),
        _f("shard", "uint"),
        _f("node_id", "id"),
        _f("epoch", "uint", False),
    ),
    "shard.set_isr": (
        _f("topic", "name"),
        _f("shard", "uint"),
        _f("leader", "id"),
        _f("epoch", "uint"),
        _f("version", "uint"),
        _f("isr", "ids"),
    ),
    "shard.elect": (
        _f("topic", "name"),
        _f("shard", "uint"),
        _f("epoch", "uint"),
        _f("version", "uint"),
        _f("leader", "uint"),
        _f("isr", "ids"),
        _f("unclean", "bool", False),
    ),
    "topic.add_shards": (_f("name", "name"), _f("shards", "shards")),
    "group.commit": (_f("group", "group"), _f("offsets", "offsets")),
    "group.delete": (_f("group", "group"),),
    "config.put": (_f("key", "key"), _f("value", "scalar")),
    "config.add": (_f("key", "key"), _f("delta", "uint")),
    "config.delete": (_f("key", "key"),),
    "mqtt.claim": (
        _f("client", "client"),
        _f("node", "id"),
        _f("life", "uint"),
        _f("conn", "uint"),
    ),
}
OPS = tuple(sorted(SCHEMA))


def encode_command(op: str, **fields: Any) -> bytes:
    """Canonical bytes for `op` with `fields`. Raises MetaError if the command fails the schema
    (unknown op, missing/extra/ill-typed field), so a bad command never reaches the log from
    here."""
    err = check_command(op, fields)
    if err is not None:
        raise MetaError(err)
    data = canonical_json({"args": fields, "op": op})
    if len(data) > COMMAND_BYTES_MAX:
        raise MetaError(f"{op}: command is {len(data)} bytes (max {COMMAND_BYTES_MAX})")
    assert decode_command(data) == Command(op, fields)
    return data


def decode_command(data: bytes) -> Command | MetaError:
    """Parse and schema-check `data`. Never raises."""
    if len(data) > COMMAND_BYTES_MAX:
        return MetaError(f"command is {len(data)} bytes (max {COMMAND_BYTES_MAX})")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return MetaError(f"command is not UTF-8 JSON: {type(exc).__name__}: {exc}")
    if type(obj) is not dict or sorted(obj) != ["args", "op"]:
        return MetaError("command must be a JSON object with exactly the keys 'args' and 'op'")
    op, args = obj["op"], obj["args"]
    if type(op) is not str:
        return MetaError(f"command field 'op' must be a string, got {type(op).__name__}")
    if type(args) is not dict:
        return MetaError(f"{op}: command field 'args' must be an object, got {type(args).__name__}")
    err = check_command(op, args)
    return MetaError(err) if err is not None else Command(op, args)


def check_command(op: str, args: dict[str, Any]) -> str | None:
    """The first schema violation of `op` with `args` as a message, or None. Pure, never raises."""
    if op not in SCHEMA:
        return f"unknown op {op!r} (known: {', '.join(OPS)})"
    fields = SCHEMA[op]
    known = {f.name for f in fields}
    for name in sorted(args):
        if name not in known:
            return f"{op}: unknown field {name!r} (known: {', '.join(sorted(known))})"
    for field in fields:
        if field.name not in args:
            if field.required:
                return f"{op}: missing field {field.name!r}"
            continue
        err = _check_value(field.kind, args[field.name])
        if err is not None:
            return f"{op}: field {field.name!r} {err}"
    return None


def _check_value(kind: str, value: Any) -> str | None:
    if kind in ("id", "uint", "shards"):
        if type(value) is not int:
            return f"must be an integer, got {_type_name(value)}"
        low = 0 if kind == "uint" else 1
        high = SHARDS_MAX if kind == "shards" else (1 << 63) - 1
        if not low <= value <= high:
            return f"must be in [{low}, {high}], got {value}"
        return None
    if kind in ("name", "addr", "key"):
        return _check_string(kind, value)
    if kind == "client":
        if type(value) is not str:
            return f"must be a string, got {_type_name(value)}"
        if not 1 <= len(value) <= CLIENT_CHARS_MAX:
            return f"must have 1 to {CLIENT_CHARS_MAX} characters, got {len(value)}"
        return None
    if kind == "engine":
        if type(value) is not str or value not in ENGINES:
            return f"must be one of {', '.join(ENGINES)}, got {value!r}"
        return None
    if kind == "scalar":
        return _check_scalar(value)
    if kind == "replication":
        if type(value) is not int:
            return f"must be an integer, got {_type_name(value)}"
        if not 1 <= value <= REPLICAS_MAX:
            return f"must be in [1, {REPLICAS_MAX}], got {value}"
        return None
    if kind == "bool":
        return None if type(value) is bool else f"must be a boolean, got {_type_name(value)}"
    if kind == "ids":
        return _check_ids(value)
    if kind == "group":
        return _check_group(value)
    if kind == "offsets":
        return _check_offsets(value)
    assert kind == "config", kind
    return _check_config(value)


def _check_string(kind: str, value: Any) -> str | None:
    if type(value) is not str:
        return f"must be a string, got {_type_name(value)}"
    limit = {"name": NAME_CHARS_MAX, "addr": ADDR_CHARS_MAX, "key": CONFIG_KEY_CHARS_MAX}[kind]
    if not 1 <= len(value) <= limit:
        return f"must have 1 to {limit} characters, got {len(value)}"
    bad = [c for c in value if c.isspace() or not c.isprintable()]
    if kind == "name":
        bad += [c for c in value if c in "+#"]
    if bad:
        return f"must not contain {bad[0]!r}, got {value!r}"
    return None


def _check_group(value: Any) -> str | None:
    # Kafka group ids are any non-empty string; control characters are refused here so logs and
    # the admin API stay readable.
    if type(value) is not str:
        return f"must be a string, got {_type_name(value)}"
    if not 1 <= len(value) <= GROUP_CHARS_MAX:
        return f"must have 1 to {GROUP_CHARS_MAX} characters, got {len(value)}"
    if not value.isprintable():
        return f"must be printable, got {value!r}"
    return None


def _check_offsets(value: Any) -> str | None:
    if type(value) is not list or not 1 <= len(value) <= OFFSETS_MAX:
        return f"must be a list of 1 to {OFFSETS_MAX} [topic, partition, offset, metadata]"
    for item in value:
        if type(item) is not list or len(item) != 4:
            return f"entry {item!r} must be [topic, partition, offset, metadata]"
        topic, partition, offset, metadata = item
        err = _check_string("name", topic)
        if err is not None:
            return f"entry topic {err}"
        if type(partition) is not int or not 0 <= partition < SHARDS_MAX:
            return f"entry partition must be an integer in [0, {SHARDS_MAX}), got {partition!r}"
        if type(offset) is not int or not -1 <= offset < (1 << 63):
            return f"entry offset must be an integer >= -1, got {offset!r}"
        if type(metadata) is not str or len(metadata) > METADATA_CHARS_MAX:
            return f"entry metadata must be a string of at most {METADATA_CHARS_MAX} characters"
    return None


def _check_ids(value: Any) -> str | None:
    if type(value) is not list or not 1 <= len(value) <= REPLICAS_MAX:
        return f"must be a list of 1 to {REPLICAS_MAX} node ids"
    for item in value:
        if type(item) is not int or not 1 <= item < (1 << 31):
            return f"entry {item!r} must be a node id (an integer in [1, 2**31))"
    if len(set(value)) != len(value):
        return f"must not repeat a node id, got {value}"
    return None


def _check_scalar(value: Any) -> str | None:
    if type(value) not in (str, int, float, bool):
        return f"must be a string, integer, float or boolean, got {_type_name(value)}"
    if type(value) is float and not math.isfinite(value):
        return f"must be finite, got {value!r}"
    if type(value) is int and not -(1 << 63) <= value < (1 << 63):
        return "must fit in 64 bits"
    if type(value) is str and len(value) > CONFIG_VALUE_CHARS_MAX:
        return f"must have at most {CONFIG_VALUE_CHARS_MAX} characters, got {len(value)}"
    return None


def _check_config(value: Any) -> str | None:
    if type(value) is not dict:
        return f"must be an object, got {_type_name(value)}"
    if len(value) > TOPIC_CONFIG_KEYS_MAX:
        return f"must have at most {TOPIC_CONFIG_KEYS_MAX} keys, got {len(value)}"
    for key in sorted(value, key=str):
        if type(key) is not str:
            return f"key {key!r} must be a string"
        err = _check_string("key", key) or _check_scalar(value[key])
        if err is not None:
            return f"key {key!r} {err}"
    return None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def canonical_json(obj: Any) -> bytes:
    """The one canonical JSON encoding used for commands and snapshots."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return text.encode("ascii")
