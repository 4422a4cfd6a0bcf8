"""The metadata state machine (pure): apply committed Raft entries, snapshot, restore."""

from real.meta.commands import (
    ENGINES,
    OPS,
    Command,
    MetaError,
    check_command,
    decode_command,
    encode_command,
)
from real.meta.machine import (
    MetaResult,
    MetaStateMachine,
    NodeInfo,
    ShardInfo,
    TopicInfo,
    node_json,
    topic_json,
)

__all__ = [
    "ENGINES",
    "OPS",
    "Command",
    "MetaError",
    "MetaResult",
    "MetaStateMachine",
    "NodeInfo",
    "ShardInfo",
    "TopicInfo",
    "check_command",
    "decode_command",
    "encode_command",
    "node_json",
    "topic_json",
]
