"""The meta Raft log: one append-only, CRC-checked file, written through the `FileSystem` port.

The same object runs in both worlds: the real node passes `real.node.osfs.OsFileSystem` (wrapped,
with its lock file, by `real.node.disk.RaftDisk`), the simulator passes a
`model.devices.fs.SimFileSystem` per node, so a simulated power loss crashes the real on-disk format
(torn last write, unsynced appends lost, directory entries lost without `sync_dir`).

API:

    log = RaftLog(fs, directory)      # opens or creates <directory>/raft.log, recovers it
    log.recovery                      # Recovery(durable, records, truncated_bytes)
    log.durable() -> DurableState     # what the log holds now (written, synced or not)
    log.save(snapshot=, entries=, hard_state=, sync=)   # one append; fdatasync if `sync`
    log.sync()                        # fdatasync the log
    log.rewrite(snapshot)             # compaction: a new file replaces the log atomically
    log.close()                       # sync, release the file handle
    log.path, log.bytes, log.entry_count

Layout of `<directory>/raft.log` (unchanged since `TWMQRL01`; an existing data dir recovers):

    MAGIC (8 bytes), then records: u32 payload length | u32 CRC-32 of payload | payload
    payload = kind byte + body
      b"E" entry       u64 term, u64 index, u8 kind, data       (drops stored entries >= index)
      b"H" hard state  u64 term, u64 vote, u64 commit
      b"S" snapshot    u64 index, u64 term, u16 nvoters, u16 nlearners, u64 ids..., data
                                                                  (drops every stored entry)

Replaying the records rebuilds a `DurableState`. Recovery stops at the first short record, bad CRC
or undecodable payload. If no valid record follows it anywhere in the file, it is a torn tail
from a crash mid-write and the file is truncated there (and synced), so a crash at any byte
position recovers a prefix of what was written, never garbage. If a valid record *does* follow
(searched at every byte position after the bad one), the damage is mid-log corruption of data that
was once durable: DiskCorruption naming the file and both byte positions, and nothing is truncated
(silently dropping acknowledged entries would be worse than refusing to start). A record that
passes its CRC but contradicts the log (a gap in indexes) is corruption too. A file shorter than
MAGIC and a prefix of it is a torn creation and starts over; any other bad magic is refused.

A `save` is validated against a copy of the state before anything is written, and written in one
`append`, so a bad Ready never reaches the file. Compaction (`rewrite`) writes snapshot + hard
state + the entries after the snapshot with `write_file_atomic` (temp file, fdatasync, rename,
sync of the directory): a crash at any point recovers either the old log or the new one.
Device failures surface as the port's `DeviceError`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from real.raft.types import (
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from real.storage.devices import FileSystem, parent_dir, write_file_atomic

MAGIC = b"TWMQRL01"
LOG_NAME = "raft.log"
RECORD_BYTES_MAX = 256 << 20
_HEAD = struct.Struct(">II")
_ENTRY = struct.Struct(">QQB")
_HARD = struct.Struct(">QQQ")
_SNAP = struct.Struct(">QQHH")
_KINDS = {EntryKind.NORMAL: 0, EntryKind.CONF_CHANGE: 1}
_KINDS_BACK = {v: k for k, v in _KINDS.items()}

Record = Entry | HardState | Snapshot


class DiskError(Exception):
    """Storage cannot be used (locked by another process, unreadable, not a Raft log)."""


class DiskCorruption(DiskError):
    """A CRC-valid record contradicts the log: not a torn tail, so nothing is truncated."""


@dataclass(frozen=True, slots=True)
class Recovery:
    durable: DurableState
    records: int
    truncated_bytes: int
    """Bytes of torn tail dropped at open."""


# ---- record codec ------------------------------------------------------------------------------

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


def decode_payload(payload: bytes) -> Record:
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


def _record_at(buf: bytes, pos: int) -> tuple[Record, int] | None:
    """The whole, CRC-valid, decodable record starting at `pos` and its end, else None."""
    length, crc = _HEAD.unpack_from(buf, pos)
    end = pos + _HEAD.size + length
    if length == 0 or length > RECORD_BYTES_MAX or end > len(buf):
        return None
    payload = buf[pos + _HEAD.size:end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return decode_payload(payload), end
    except (ValueError, KeyError, struct.error, AssertionError):
        return None


def scan(buf: bytes) -> tuple[list[Record], int]:
    """Decode records after MAGIC; return them and the byte length of the valid prefix."""
    assert buf[: len(MAGIC)] == MAGIC
    records: list[Record] = []
    pos = len(MAGIC)
    while pos + _HEAD.size <= len(buf):
        found = _record_at(buf, pos)
        if found is None:
            break
        records.append(found[0])
        pos = found[1]
    assert len(MAGIC) <= pos <= len(buf)
    return records, pos


def next_valid_record(buf: bytes, start: int) -> int | None:
    """The first byte position >= `start` where a whole, CRC-valid, decodable record begins."""
    for pos in range(start, len(buf) - _HEAD.size + 1):
        if _record_at(buf, pos) is not None:
            return pos
    return None


def replay(records: list[Record]) -> DurableState:
    """Fold records into a DurableState. Raises DiskCorruption on a logical contradiction."""
    hard, snap, entries = fold(HardState(), None, [], records)
    return DurableState(hard_state=hard, snapshot=snap, entries=tuple(entries))


def fold(hard: HardState, snap: Snapshot | None, entries: list[Entry], records: list[Record]
         ) -> tuple[HardState, Snapshot | None, list[Entry]]:
    """Apply `records` to a state; mutates `entries` in place, but only once `check` passed
    (a DiskCorruption leaves it untouched)."""
    check(snap, entries, records)
    for rec in records:
        if isinstance(rec, HardState):
            hard = rec
        elif isinstance(rec, Snapshot):
            snap, entries = rec, []
        else:
            first = snap.meta.index + 1 if snap is not None else 1
            del entries[rec.index - first:]
            entries.append(rec)
    assert not entries or entries[-1].index - entries[0].index == len(entries) - 1
    return hard, snap, entries


def check(snap: Snapshot | None, entries: list[Entry], records: list[Record]) -> None:
    """Raises DiskCorruption if an entry of `records` would leave a gap (or fall inside a
    snapshot) when applied after `snap` and `entries`."""
    first = snap.meta.index + 1 if snap is not None else 1
    last = entries[-1].index if entries else first - 1
    for i, rec in enumerate(records):
        if isinstance(rec, Snapshot):
            first = rec.meta.index + 1
            last = first - 1
        elif isinstance(rec, Entry):
            if not first <= rec.index <= last + 1:
                raise DiskCorruption(f"record {i}: entry index {rec.index} outside "
                                     f"[{first}, {last + 1}]")
            last = rec.index


# ---- the log -----------------------------------------------------------------------------------

class RaftLog:
    """The meta group's stable storage: `<directory>/raft.log` on `fs` (directory "" = root)."""

    def __init__(self, fs: FileSystem, directory: str) -> None:
        self.fs = fs
        self.dir = directory
        self.path = f"{directory}/{LOG_NAME}" if directory else LOG_NAME
        self.recovery = self._recover()
        d = self.recovery.durable
        self._hard, self._snap, self._entries = d.hard_state, d.snapshot, list(d.entries)
        self.bytes = fs.size(self.path)
        self._open = True
        assert self.bytes >= len(MAGIC), (self.path, self.bytes)

    def _recover(self) -> Recovery:
        fs = self.fs
        buf = fs.read(self.path, 0, fs.size(self.path)) if fs.exists(self.path) else b""
        if not buf.startswith(MAGIC):
            if not MAGIC.startswith(buf):  # a short file is a torn creation: start over
                raise DiskError(f"{self.path}: not a TwinMQ raft log (bad magic)")
            self._create()
            return Recovery(DurableState(), 0, len(buf))
        records, valid = scan(buf)
        later = next_valid_record(buf, valid + 1) if valid < len(buf) else None
        if later is not None:
            raise DiskCorruption(
                f"{self.path}: bad record at byte {valid} but a valid record follows at byte "
                f"{later}: mid-log corruption, not a torn tail; refusing to truncate (restore "
                f"the data directory from a replica or backup)")
        try:
            durable = replay(records)
        except DiskCorruption as exc:
            raise DiskCorruption(f"{self.path}: {exc}") from None
        if valid < len(buf):
            fs.truncate(self.path, valid)
            fs.sync(self.path)
        return Recovery(durable, len(records), len(buf) - valid)

    def _create(self) -> None:
        """A new log holding MAGIC only, durable with its directory (and that directory's entry
        in its parent: a fresh data dir survives power loss)."""
        if self.dir:
            self.fs.make_dirs(self.dir)
            self.fs.sync_dir(parent_dir(self.dir))
        write_file_atomic(self.fs, self.path, MAGIC)

    def durable(self) -> DurableState:
        return DurableState(self._hard, self._snap, tuple(self._entries))

    @property
    def entry_count(self) -> int:
        return len(self._entries)

    def save(self, *, snapshot: Snapshot | None = None, entries: tuple[Entry, ...] = (),
             hard_state: HardState | None = None, sync: bool) -> None:
        """Append snapshot, entries, hard state (in that order) in one write; fsync if `sync`."""
        assert self._open, self.path
        parts: list[bytes] = []
        records: list[Record] = []
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
        check(self._snap, self._entries, records)  # a bad Ready never reaches the file
        data = b"".join(parts)
        size = self.fs.append(self.path, data)
        assert size == self.bytes + len(data), (self.path, size, self.bytes, len(data))
        if sync:
            self.fs.sync(self.path)
        self._hard, self._snap, self._entries = fold(self._hard, self._snap, self._entries,
                                                     records)
        self.bytes = size

    def rewrite(self, snapshot: Snapshot) -> None:
        """Compact: keep `snapshot`, the hard state and the entries after the snapshot."""
        assert self._open, self.path
        keep = [e for e in self._entries if e.index > snapshot.meta.index]
        assert not keep or keep[0].index == snapshot.meta.index + 1, (snapshot.meta, keep[0])
        assert self._hard.commit >= snapshot.meta.index, (self._hard, snapshot.meta)
        body = [MAGIC, encode_snapshot(snapshot)] + [encode_entry(e) for e in keep]
        body.append(encode_hard_state(self._hard))
        data = b"".join(body)
        self.fs.close(self.path)
        write_file_atomic(self.fs, self.path, data)
        self._snap, self._entries = snapshot, keep
        self.bytes = self.fs.size(self.path)
        assert self.bytes == len(data), (self.path, self.bytes, len(data))

    def sync(self) -> None:
        assert self._open, self.path
        self.fs.sync(self.path)

    def close(self) -> None:
        """Sync and release the file handle; idempotent."""
        if self._open:
            self.fs.sync(self.path)
            self.fs.close(self.path)
            self._open = False
