"""JSONL trace of a simulation and its hash.

One line per event: `{"t":<sim time, integer microseconds>,"node":<id or 0>,"kind":<str>, <fields
in sorted key order>}`. The hash is sha256 over the lines (each followed by a newline), so two runs
are identical iff their `trace-hash` is. Lines are hashed as they are produced; they are kept in
memory or written to a file only when asked (speed matters: a sweep hashes and forgets).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import IO, Any

_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=False, ensure_ascii=True)
_HEADER = ("t", "node", "kind")


@dataclass(frozen=True, slots=True)
class TraceEvent:
    t_us: int
    node: int
    kind: str
    fields: tuple[tuple[str, Any], ...]

    def to_line(self) -> str:
        """Byte-identical to `json.dumps(record, separators=(",", ":"))`, with a fast path for
        int and bool values (most fields), which the JSON encoder renders the same way."""
        parts = [f'{{"t":{self.t_us},"node":{self.node},"kind":{_ENCODER.encode(self.kind)}']
        for key, value in self.fields:
            assert key not in _HEADER, f"trace field {key!r} shadows a header field"
            kind = type(value)
            if kind is int:
                parts.append(f',"{key}":{value}')
            elif kind is bool:
                parts.append(f',"{key}":{"true" if value else "false"}')
            else:
                parts.append(f',"{key}":{_ENCODER.encode(value)}')
        parts.append("}")
        return "".join(parts)


class Trace:
    """Collects events: hashes every line; optionally keeps them and/or streams them to a file."""

    def __init__(self, out: IO[str] | None = None, keep: bool = False) -> None:
        self._hash = hashlib.sha256()
        self._out = out
        self.lines: list[str] | None = [] if keep else None
        self.count = 0
        self.kinds: dict[str, int] = {}

    def emit(self, t_us: int, node: int, kind: str, **fields: Any) -> None:
        assert type(t_us) is int and t_us >= 0, f"trace time must be int us, got {t_us!r}"
        assert type(node) is int, node
        event = TraceEvent(t_us, node, kind, tuple(sorted(fields.items())))
        line = event.to_line()
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.lines is not None:
            self.lines.append(line)
        if self._out is not None:
            self._out.write(line)
            self._out.write("\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def hash_lines(lines: list[str]) -> str:
    """The trace-hash of already-rendered lines (to verify a trace file)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()
