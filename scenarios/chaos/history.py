"""A client history of a real-cluster run, and the Kafka-log checker that judges it.

The history is Jepsen's shape: one entry per operation step, `invoke` when a client starts an
operation, then `ok` (with what the system answered), `fail` (it certainly did not happen) or
`info` (unknown: a timeout, a lost connection). Times are seconds on the runner's monotonic
clock. `History.dump(path)` writes it as JSON Lines, one entry per line.

`check_kafka(history, reads, polls)` looks for the anomalies Jepsen's Kafka work names:

- **lost**: a send acknowledged (`ok`) whose value no final read holds;
- **duplicate**: one value at two offsets (an idempotent producer must never cause one);
- **inconsistent offset**: one offset holding two values across reads, or a value read at
  another offset than the one its `ok` named (offsets reused after a failover);
- **skip**: a consumer that polled offset a and then b skipped an offset between them that a
  final read holds (a consumer must see every committed record, in order);
- **nonmonotonic poll**: a consumer whose offsets went backwards without a seek.

`unseen` counts `info` sends absent from the reads (allowed: their outcome was unknown).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Op:
    process: str
    type: str  # invoke | ok | fail | info
    f: str  # send | poll | kill | restart | ...
    value: Any
    time: float


@dataclass(slots=True)
class History:
    ops: list[Op] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, process: str, type_: str, f: str, value: Any) -> None:
        op = Op(process, type_, f, value, round(time.monotonic() - self.t0, 6))
        with self._lock:
            self.ops.append(op)

    def dump(self, path: Path) -> None:
        with path.open("w") as out:
            for op in self.ops:
                out.write(json.dumps(asdict(op), sort_keys=True) + "\n")


@dataclass(slots=True)
class Verdict:
    acked: int = 0
    failed: int = 0
    unknown: int = 0
    lost: list[Any] = field(default_factory=list)
    duplicates: list[Any] = field(default_factory=list)
    inconsistent: list[Any] = field(default_factory=list)
    skips: list[Any] = field(default_factory=list)
    nonmonotonic: list[Any] = field(default_factory=list)
    unseen: int = 0
    polled: int = 0
    no_offset: int = 0
    """Acknowledged sends whose delivery report carried no offset (librdkafka reports none for
    some retried idempotent batches): checked for presence only."""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.inconsistent or self.skips
                    or self.nonmonotonic)

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "acked": self.acked, "failed": self.failed,
                "unknown": self.unknown, "lost": len(self.lost),
                "duplicates": len(self.duplicates), "inconsistent": len(self.inconsistent),
                "skips": len(self.skips), "nonmonotonic": len(self.nonmonotonic),
                "unseen": self.unseen, "polled": self.polled, "no_offset": self.no_offset}


Read = list[tuple[int, int, bytes]]
"""(partition, offset, value) from the start of each partition, as one full read saw them."""


def check_kafka(history: History, reads: Iterable[Read],
                polls: dict[str, list[tuple[int, int]]] | None = None) -> Verdict:
    """Judge a history of `send` operations (value: {"value": str, "partition": p}; ok value
    adds "offset") against final `reads` and the per-consumer `polls` [(partition, offset)]."""
    v = Verdict()
    at: dict[tuple[int, int], bytes] = {}
    where: dict[bytes, set[tuple[int, int]]] = {}
    for read in reads:
        for p, off, value in read:
            old = at.setdefault((p, off), value)
            if old != value:
                v.inconsistent.append({"partition": p, "offset": off, "values": [old, value]})
            where.setdefault(value, set()).add((p, off))
    for value, places in sorted(where.items()):
        if len(places) > 1:
            v.duplicates.append({"value": value, "at": sorted(places)})
    for op in history.ops:
        if op.f != "send" or op.type == "invoke":
            continue
        value = op.value["value"].encode()
        if op.type == "ok":
            v.acked += 1
            places = where.get(value)
            if not places:
                v.lost.append(op.value)
            elif op.value.get("offset") is None:
                v.no_offset += 1
            elif op.value["offset"] >= 0 and \
                    (op.value["partition"], op.value["offset"]) not in places:
                v.inconsistent.append({"acked": op.value, "read_at": sorted(places)})
        elif op.type == "fail":
            v.failed += 1
        else:
            v.unknown += 1
            if value not in where:
                v.unseen += 1
    present = {p: sorted(off for (q, off) in at if q == p) for p in {p for p, _ in at}}
    for name, seq in (polls or {}).items():
        last: dict[int, int] = {}
        for p, off in seq:
            v.polled += 1
            prev = last.get(p)
            if prev is not None:
                if off <= prev:
                    v.nonmonotonic.append({"consumer": name, "partition": p,
                                           "after": prev, "got": off})
                else:
                    between = [o for o in present.get(p, ()) if prev < o < off]
                    if between:
                        v.skips.append({"consumer": name, "partition": p, "from": prev,
                                        "to": off, "skipped": between[:10]})
            last[p] = off
    return v
