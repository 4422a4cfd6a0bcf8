"""The in-memory Raft log: the entries after the latest snapshot, as a list with an index offset.

Entry `i` lives at `_ents[i - _offset - 1]`; `_offset` is the snapshot index (0 for none). Every
lookup is O(1); only truncation and compaction move list memory. `unstable_from` is the first index
not yet handed out in a `Ready` (everything before it is persisted, or about to be, by the shell).
"""

from __future__ import annotations

from real.raft.types import Entry


class RaftLog:
    __slots__ = ("_ents", "_offset", "snap_term", "unstable_from")

    def __init__(self, snap_index: int, snap_term: int, ents: tuple[Entry, ...]) -> None:
        assert snap_index >= 0
        assert not ents or ents[0].index == snap_index + 1, (snap_index, ents[0])
        self._offset = snap_index
        self.snap_term = snap_term
        self._ents: list[Entry] = list(ents)
        self.unstable_from = self.last_index() + 1

    @property
    def snap_index(self) -> int:
        return self._offset

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._offset + len(self._ents)

    def last_term(self) -> int:
        return self._ents[-1].term if self._ents else self.snap_term

    def term_at(self, index: int) -> int | None:
        """Term of entry `index`, the snapshot term at the snapshot index, None when unknown."""
        pos = index - self._offset
        if pos == 0:
            return self.snap_term
        if 0 < pos <= len(self._ents):
            return self._ents[pos - 1].term
        return None

    def entry(self, index: int) -> Entry:
        pos = index - self._offset - 1
        assert 0 <= pos < len(self._ents), (index, self._offset, len(self._ents))
        return self._ents[pos]

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with lo <= index < hi, clamped to what the log holds."""
        lo = max(lo, self._offset + 1)
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return ()
        return tuple(self._ents[lo - self._offset - 1 : hi - self._offset - 1])

    def slice_limited(self, lo: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from `lo` totalling at most `max_bytes` (always at least one if any exist)."""
        assert lo > self._offset, (lo, self._offset)
        start = lo - self._offset - 1
        end = start
        total = 0
        n = len(self._ents)
        while end < n:
            total += self._ents[end].size()
            if total > max_bytes and end > start:
                break
            end += 1
        return tuple(self._ents[start:end])

    def append(self, ents: tuple[Entry, ...]) -> None:
        if not ents:
            return
        assert ents[0].index == self.last_index() + 1, (ents[0].index, self.last_index())
        assert ents[-1].index == ents[0].index + len(ents) - 1
        self._ents.extend(ents)
        assert self._ents[-1].index == self._offset + len(self._ents)

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry of `ents` absent from or conflicting with the log, else 0."""
        for e in ents:
            if self.term_at(e.index) != e.term:
                return e.index
        return 0

    def truncate_and_append(self, ents: tuple[Entry, ...]) -> None:
        """Drop every entry with index >= ents[0].index, then append `ents`."""
        assert ents
        start = ents[0].index
        assert self._offset < start <= self.last_index() + 1, (start, self._offset)
        del self._ents[start - self._offset - 1 :]
        self._ents.extend(ents)
        self.unstable_from = min(self.unstable_from, start)
        self.check()

    def overwrite_in_place(self, ents: tuple[Entry, ...]) -> None:
        """Bug.NO_TRUNCATE_ON_CONFLICT: replace entries at the same indexes, keep the suffix."""
        assert ents
        for e in ents:
            pos = e.index - self._offset - 1
            assert 0 <= pos <= len(self._ents)
            if pos == len(self._ents):
                self._ents.append(e)
            else:
                self._ents[pos] = e
        self.unstable_from = min(self.unstable_from, ents[0].index)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest i <= index whose term is <= `term` (stops at the snapshot). Returns (i, term_i).

        Used on both sides of a rejected APPEND to skip a whole run of conflicting terms per round
        trip (etcd's fast backtracking). O(skipped entries), only on rejections.
        """
        assert index <= self.last_index()
        while index > self._offset:
            t = self._ents[index - self._offset - 1].term
            if t <= term:
                return index, t
            index -= 1
        return index, (self.snap_term if index == self._offset else 0)

    def stable_to(self, index: int, term: int) -> None:
        """The shell persisted entries up to `index` (whose term was `term`)."""
        if self.term_at(index) == term and index >= self.unstable_from:
            self.unstable_from = index + 1

    def unstable(self) -> tuple[Entry, ...]:
        return self.slice(self.unstable_from, self.last_index() + 1)

    def has_unstable(self) -> bool:
        return self.unstable_from <= self.last_index()

    def compact(self, index: int) -> None:
        """Drop entries <= index (a snapshot now covers them)."""
        assert self._offset < index <= self.last_index(), (index, self._offset)
        assert index < self.unstable_from, "compacting unpersisted entries"
        term = self.term_at(index)
        assert term is not None
        del self._ents[: index - self._offset]
        self._offset = index
        self.snap_term = term
        self.check()

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot at (index, term)."""
        assert index > self._offset
        self._ents = []
        self._offset = index
        self.snap_term = term
        self.unstable_from = index + 1

    def check(self) -> None:
        """O(1) structural checks (after truncation, compaction and restore)."""
        assert self.first_index() <= self.unstable_from <= self.last_index() + 1
        if self._ents:
            assert self._ents[0].index == self._offset + 1, (self._ents[0].index, self._offset)
            assert self._ents[-1].index == self.last_index()
            assert self._ents[0].term >= self.snap_term
