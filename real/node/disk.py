"""Durable Raft storage for the meta group: one append-only, CRC-checked log file.

Layout of `<dir>/raft.log`:

    MAGIC (8 bytes), then records: u32 payload length | u32 CRC-32 of payload | payload
    payload = kind byte + body
      b"E" entry       u64 term, u64 index, u8 kind, data       (drops stored entries >= index)
      b"H" hard state  u64 term, u64 vote, u64 commit
      b"S" snapshot    u64 index, u64 term, u16 nvoters, u16 nlearners, u64 ids..., data
                                                                  (drops every stored entry)

Replaying the records rebuilds a `DurableState`. Recovery stops at the first short record, bad CRC
or undecodable payload. If no valid record follows it anywhere in the file, it is a torn tail
from a crash mid-write and the file is truncated there, so a crash at any byte position recovers a
prefix of what was written, never garbage. If a valid record *does* follow (searched at every byte
position after the bad one), the damage is mid-log corruption of data that was once durable:
DiskCorruption naming both positions, and nothing is truncated (silently dropping acknowledged
entries would be worse than refusing to start). A record that passes its CRC but contradicts the
log (a gap in indexes) is corruption too.

Compaction (`rewrite`) writes snapshot + hard state + the entries after the snapshot to a temporary
file, fsyncs it, renames it over the log and fsyncs the directory.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from real.raft.types import (
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)

MAGIC = b"TWMQRL01"
LOG_NAME = "raft.log"
LOCK_NAME = "LOCK"
RECORD_BYTES_MAX = 256 << 20
_HEAD = struct.Struct(">II")
_ENTRY = struct.Struct(">QQB")
_HARD = struct.Struct(">QQQ")
_SNAP = struct.Struct(">QQHH")
_KINDS = {EntryKind.NORMAL: 0, EntryKind.CONF_CHANGE: 1}
_KINDS_BACK = {v: k for k, v in _KINDS.items()}


class DiskError(Exception):
    """Storage cannot be used (locked by another process, unreadable)."""


class DiskCorruption(DiskError):
    """A CRC-valid record contradicts the log: not a torn tail, so nothing is truncated."""


@dataclass(frozen=True, slots=True)
class Recovery:
    durable: DurableState
    records: int
    truncated_bytes: int
    """Bytes of torn tail dropped at open."""


# ---- record codec (pure) ---------------------------------------------------------------------

def encode_record(payload: bytes) -> bytes:
    assert 1 <= len(payload) <= RECORD_BYTES_MAX, len(payload)
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def encode_entry(e: Entry) -> bytes:
    assert e.index >= 1 and e.term >= 1, e
    return encode_record(b"E" + _ENTRY.pack(e.term, e.index, _KINDS[e.kind]) + e.data)


def encode_hard_state(h: HardState) -> bytes:
    return encode_record(b"H" + _HARD.pack(h.term, h.vote, h.commit))


def encode_snapshot(s: Snapshot) -> bytes:
    conf = s.meta.conf
    ids = conf.voters + conf.learners
    body = _SNAP.pack(s.meta.index, s.meta.term, len(conf.voters), len(conf.learners))
    body += struct.pack(f">{len(ids)}Q", *ids) + s.data
    return encode_record(b"S" + body)


def decode_payload(payload: bytes) -> Entry | HardState | Snapshot:
    """Raises ValueError/struct.error/KeyError on a malformed payload."""
    kind, body = payload[:1], payload[1:]
    if kind == b"E":
        term, index, k = _ENTRY.unpack_from(body)
        return Entry(term, index, _KINDS_BACK[k], bytes(body[_ENTRY.size:]))
    if kind == b"H":
        if len(body) != _HARD.size:
            raise ValueError(f"hard state record of {len(body)} bytes")
        return HardState(*_HARD.unpack(body))
    if kind == b"S":
        index, term, nv, nl = _SNAP.unpack_from(body)
        ids = struct.unpack_from(f">{nv + nl}Q", body, _SNAP.size)
        conf = ConfState(tuple(ids[:nv]), tuple(ids[nv:]))
        data = bytes(body[_SNAP.size + 8 * (nv + nl):])
        return Snapshot(SnapshotMeta(index, term, conf), data)
    raise ValueError(f"unknown record kind {kind!r}")


def scan(buf: bytes) -> tuple[list[Entry | HardState | Snapshot], int]:
    """Decode records after MAGIC; return them and the byte length of the valid prefix."""
    assert buf[: len(MAGIC)] == MAGIC
    records: list[Entry | HardState | Snapshot] = []
    pos = len(MAGIC)
    while pos + _HEAD.size <= len(buf):
        length, crc = _HEAD.unpack_from(buf, pos)
        end = pos + _HEAD.size + length
        if length == 0 or length > RECORD_BYTES_MAX or end > len(buf):
            break
        payload = buf[pos + _HEAD.size:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            records.append(decode_payload(payload))
        except (ValueError, KeyError, struct.error, AssertionError):
            break
        pos = end
    assert len(MAGIC) <= pos <= len(buf)
    return records, pos


def next_valid_record(buf: bytes, start: int) -> int | None:
    """The first byte position >= `start` where a whole, CRC-valid, decodable record begins."""
    head = _HEAD.size
    for pos in range(start, len(buf) - head + 1):
        length, crc = _HEAD.unpack_from(buf, pos)
        end = pos + head + length
        if length == 0 or length > RECORD_BYTES_MAX or end > len(buf):
            continue
        payload = buf[pos + head:end]
        if zlib.crc32(payload) != crc:
            continue
        try:
            decode_payload(payload)
        except (ValueError, KeyError, struct.error, AssertionError):
            continue
        return pos
    return None


def replay(records: list[Entry | HardState | Snapshot]) -> DurableState:
    """Fold records into a DurableState. Raises DiskCorruption on a logical contradiction."""
    hard, snap, entries = fold(HardState(), None, [], records)
    return DurableState(hard_state=hard, snapshot=snap, entries=tuple(entries))


def fold(hard: HardState, snap: Snapshot | None, entries: list[Entry],
         records: list[Entry | HardState | Snapshot]
         ) -> tuple[HardState, Snapshot | None, list[Entry]]:
    """Apply `records` to a state; mutates `entries` in place. Raises DiskCorruption."""
    for i, rec in enumerate(records):
        if isinstance(rec, HardState):
            hard = rec
        elif isinstance(rec, Snapshot):
            snap, entries = rec, []
        else:
            first = snap.meta.index + 1 if snap is not None else 1
            last = entries[-1].index if entries else first - 1
            if not first <= rec.index <= last + 1:
                raise DiskCorruption(f"record {i}: entry index {rec.index} outside "
                                     f"[{first}, {last + 1}]")
            del entries[rec.index - first:]
            entries.append(rec)
    assert not entries or entries[-1].index - entries[0].index == len(entries) - 1
    return hard, snap, entries


# ---- the file ----------------------------------------------------------------------------------

class RaftDisk:
    """The meta group's stable storage under `directory` (created if missing, locked)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.dir / LOCK_NAME)
        self.path = self.dir / LOG_NAME
        self.recovery = self._recover()
        d = self.recovery.durable
        self._hard, self._snap, self._entries = d.hard_state, d.snapshot, list(d.entries)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.bytes = self.path.stat().st_size

    def _recover(self) -> Recovery:
        buf = self.path.read_bytes() if self.path.exists() else b""
        if not buf.startswith(MAGIC):
            if not MAGIC.startswith(buf):  # a short file is a torn creation: start over
                raise DiskError(f"{self.path}: not a TwinMQ raft log (bad magic)")
            _write_new(self.path, MAGIC)
            _fsync_dir(self.dir)
            return Recovery(DurableState(), 0, len(buf))
        records, valid = scan(buf)
        later = next_valid_record(buf, valid + 1) if valid < len(buf) else None
        if later is not None:
            raise DiskCorruption(
                f"{self.path}: bad record at byte {valid} but a valid record follows at byte "
                f"{later}: mid-log corruption, not a torn tail; refusing to truncate (restore "
                f"the data directory from a replica or backup)")
        durable = replay(records)
        if valid < len(buf):
            with self.path.open("r+b") as f:
                f.truncate(valid)
                os.fsync(f.fileno())
        return Recovery(durable, len(records), len(buf) - valid)

    def durable(self) -> DurableState:
        return DurableState(self._hard, self._snap, tuple(self._entries))

    @property
    def entry_count(self) -> int:
        return len(self._entries)

    def save(self, *, snapshot: Snapshot | None = None, entries: tuple[Entry, ...] = (),
             hard_state: HardState | None = None, sync: bool) -> None:
        """Append snapshot, entries, hard state (in that order); fsync if `sync`."""
        parts: list[bytes] = []
        records: list[Entry | HardState | Snapshot] = []
        if snapshot is not None:
            parts.append(encode_snapshot(snapshot))
            records.append(snapshot)
        parts += [encode_entry(e) for e in entries]
        records += entries
        if hard_state is not None:
            parts.append(encode_hard_state(hard_state))
            records.append(hard_state)
        if not parts:
            return
        # Validate against a copy before writing, so a bad Ready never reaches the file.
        state = fold(self._hard, self._snap, list(self._entries), records)
        _write_all(self._fd, b"".join(parts))
        if sync:
            os.fsync(self._fd)
        self._hard, self._snap, self._entries = state
        self.bytes += sum(len(p) for p in parts)

    def rewrite(self, snapshot: Snapshot) -> None:
        """Compact: keep `snapshot`, the hard state and the entries after the snapshot."""
        keep = [e for e in self._entries if e.index > snapshot.meta.index]
        assert not keep or keep[0].index == snapshot.meta.index + 1, (snapshot.meta, keep[0])
        assert self._hard.commit >= snapshot.meta.index, (self._hard, snapshot.meta)
        body = [MAGIC, encode_snapshot(snapshot)] + [encode_entry(e) for e in keep]
        body.append(encode_hard_state(self._hard))
        tmp = self.dir / (LOG_NAME + ".tmp")
        _write_new(tmp, b"".join(body))
        os.close(self._fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.dir)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._snap, self._entries = snapshot, keep
        self.bytes = self.path.stat().st_size
        assert self.bytes == sum(len(b) for b in body)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise DiskError(f"{path.parent}: in use by another process (lock {path.name})") from exc
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        assert n > 0
        view = view[n:]


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
