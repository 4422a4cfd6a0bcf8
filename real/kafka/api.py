"""The Kafka APIs TwinMQ implements and the version range it advertises for each.

Chosen so kafka-python 3.x, confluent-kafka 2.x / kcat (librdkafka) and aiokafka all work with
their defaults (see docs/kafka.md and ../shared/reference/kafka.md): every range stops below the
API's first *flexible* version except ApiVersions, whose v3 (flexible body, response header v0)
librdkafka and kafka-python send first. Floors: Produce 3 / Fetch 4 are the first versions with
RecordBatch v2 (magic 2), which is the only record format stored; Produce is nevertheless
advertised from v0 because librdkafka <= 2.11 (Debian's kcat) sends gzip/snappy/lz4 batches
uncompressed to a broker without Produce v0 (its compression feature check); a v0-2 request's
magic 0/1 message set is refused with UNSUPPORTED_FOR_MESSAGE_FORMAT.
"""

from __future__ import annotations

PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
SASL_HANDSHAKE = 17
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_TOPICS = 20
INIT_PRODUCER_ID = 22
OFFSET_FOR_LEADER_EPOCH = 23
DESCRIBE_CONFIGS = 32
SASL_AUTHENTICATE = 36
CREATE_PARTITIONS = 37
DELETE_GROUPS = 42
DESCRIBE_CLUSTER = 60

NAMES: dict[int, str] = {
    PRODUCE: "Produce", FETCH: "Fetch", LIST_OFFSETS: "ListOffsets", METADATA: "Metadata",
    OFFSET_COMMIT: "OffsetCommit", OFFSET_FETCH: "OffsetFetch",
    FIND_COORDINATOR: "FindCoordinator", JOIN_GROUP: "JoinGroup", HEARTBEAT: "Heartbeat",
    LEAVE_GROUP: "LeaveGroup", SYNC_GROUP: "SyncGroup", DESCRIBE_GROUPS: "DescribeGroups",
    LIST_GROUPS: "ListGroups", SASL_HANDSHAKE: "SaslHandshake", API_VERSIONS: "ApiVersions",
    CREATE_TOPICS: "CreateTopics", DELETE_TOPICS: "DeleteTopics",
    INIT_PRODUCER_ID: "InitProducerId", DESCRIBE_CONFIGS: "DescribeConfigs",
    SASL_AUTHENTICATE: "SaslAuthenticate", CREATE_PARTITIONS: "CreatePartitions",
    DELETE_GROUPS: "DeleteGroups", OFFSET_FOR_LEADER_EPOCH: "OffsetForLeaderEpoch",
    DESCRIBE_CLUSTER: "DescribeCluster",
}

# api_key -> (min_version, max_version) advertised in ApiVersions and accepted by the codec.
VERSIONS: dict[int, tuple[int, int]] = {
    PRODUCE: (0, 8),
    FETCH: (4, 11),
    LIST_OFFSETS: (1, 5),
    METADATA: (0, 12),
    OFFSET_COMMIT: (2, 7),
    OFFSET_FETCH: (1, 5),
    FIND_COORDINATOR: (0, 2),
    JOIN_GROUP: (0, 5),
    HEARTBEAT: (0, 3),
    LEAVE_GROUP: (0, 3),
    SYNC_GROUP: (0, 3),
    DESCRIBE_GROUPS: (0, 4),
    LIST_GROUPS: (0, 2),
    SASL_HANDSHAKE: (0, 1),
    API_VERSIONS: (0, 3),
    CREATE_TOPICS: (0, 4),
    DELETE_TOPICS: (0, 3),
    INIT_PRODUCER_ID: (0, 1),
    DESCRIBE_CONFIGS: (0, 3),
    SASL_AUTHENTICATE: (0, 1),
    CREATE_PARTITIONS: (0, 1),
    DELETE_GROUPS: (0, 1),
    OFFSET_FOR_LEADER_EPOCH: (0, 3),
    DESCRIBE_CLUSTER: (0, 1),
}

# The first flexible (compact encodings + tagged fields) version of each API; versions at or
# above it use request header v2 and response header v1 (ApiVersions responses: header v0 always).
FIRST_FLEXIBLE: dict[int, int] = {
    PRODUCE: 9, FETCH: 12, LIST_OFFSETS: 6, METADATA: 9, OFFSET_COMMIT: 8, OFFSET_FETCH: 6,
    FIND_COORDINATOR: 3, JOIN_GROUP: 6, HEARTBEAT: 4, LEAVE_GROUP: 4, SYNC_GROUP: 4,
    DESCRIBE_GROUPS: 5, LIST_GROUPS: 3, SASL_HANDSHAKE: 1 << 15, API_VERSIONS: 3,
    CREATE_TOPICS: 5, DELETE_TOPICS: 4, INIT_PRODUCER_ID: 2, DESCRIBE_CONFIGS: 4,
    SASL_AUTHENTICATE: 2, CREATE_PARTITIONS: 2, DELETE_GROUPS: 2, OFFSET_FOR_LEADER_EPOCH: 4,
    DESCRIBE_CLUSTER: 0,
}


def is_flexible(api_key: int, version: int) -> bool:
    return version >= FIRST_FLEXIBLE[api_key]
