"""Typed errors of the storage layer. Every message names the culprit and what was expected."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage error."""


class InvalidArgument(StorageError, ValueError):
    """A caller passed a value outside the documented domain (names the argument)."""


class InvalidRecord(StorageError, ValueError):
    """A record field has the wrong type or range (names the field)."""


class CorruptBatch(StorageError):
    """An encoded batch failed to decode; `byte_offset` is where, `expected` says what."""

    def __init__(self, byte_offset: int, expected: str, detail: str = "") -> None:
        self.byte_offset = byte_offset
        self.expected = expected
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"corrupt batch at byte {byte_offset}: expected {expected}{suffix}")


class OffsetOutOfRange(StorageError):
    """An offset outside [start, end] (or [start, end) where noted)."""

    def __init__(self, offset: int, start: int, end: int, op: str) -> None:
        self.offset = offset
        self.start = start
        self.end = end
        super().__init__(f"{op}: offset {offset} is out of range; log start={start} end={end}")


class LimitExceeded(StorageError):
    """A bounded resource would be exceeded; the request is rejected, nothing is dropped."""

    def __init__(self, limit: str, requested: int, allowed: int) -> None:
        self.limit = limit
        self.requested = requested
        self.allowed = allowed
        super().__init__(f"{limit} exceeded: requested {requested}, allowed {allowed}")


class StorageFull(LimitExceeded):
    """Appending would exceed the byte budget (or the shard count) of a store."""


class BatchTooLarge(LimitExceeded):
    """One append carries more records than `records_max_per_append`."""


class EngineClosed(StorageError):
    """An operation on an engine after `close()`."""


class UnknownShard(StorageError, KeyError):
    """No shard by that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown shard {name!r}")

    def __str__(self) -> str:  # KeyError would repr() the whole message
        return str(self.args[0])


class ShardExists(StorageError):
    """A shard by that name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"shard {name!r} already exists")


class UnknownEngine(StorageError, KeyError):
    """No engine factory registered under that kind."""

    def __init__(self, kind: str, known: list[str]) -> None:
        self.kind = kind
        super().__init__(f"unknown engine kind {kind!r}; expected one of {known}")

    def __str__(self) -> str:
        return str(self.args[0])
