"""Storage adapter: shards over pluggable engines behind one narrow port (pure, no I/O)."""

from real.storage.crc32c import crc32c
from real.storage.errors import (
    BatchTooLarge,
    CorruptBatch,
    EngineClosed,
    InvalidArgument,
    InvalidRecord,
    LimitExceeded,
    OffsetOutOfRange,
    ShardExists,
    StorageError,
    StorageFull,
    UnknownEngine,
    UnknownShard,
)
from real.storage.memory import MemoryEngine
from real.storage.port import ReopenableEngine, ShardEngine
from real.storage.record import Record, decode_batch_at, decode_records, encode_records
from real.storage.shards import EngineFactory, ShardInfo, ShardStore

__all__ = [
    "BatchTooLarge",
    "CorruptBatch",
    "EngineClosed",
    "EngineFactory",
    "InvalidArgument",
    "InvalidRecord",
    "LimitExceeded",
    "MemoryEngine",
    "OffsetOutOfRange",
    "Record",
    "ReopenableEngine",
    "ShardEngine",
    "ShardExists",
    "ShardInfo",
    "ShardStore",
    "StorageError",
    "StorageFull",
    "UnknownEngine",
    "UnknownShard",
    "crc32c",
    "decode_batch_at",
    "decode_records",
    "encode_records",
]
