"""Declarative schemas of every Kafka request and response body TwinMQ speaks.

Each API is described once, as two small indented tables (request, response) transcribed from the
facts in Apache Kafka's message specs (`clients/src/main/resources/common/message/*.json`): one
line per field, children indented by two spaces under their array or struct.

    <name> <type> [v=RANGE] [null=RANGE] [def=VALUE] [tag=N]

- name: the JSON field name in snake_case (`ThrottleTimeMs` -> `throttle_time_ms`), the key used in
  the body dicts (see docs in `real/kafka/codec.py`).
- type: `int8 int16 int32 int64 uint16 float64 bool string bytes records uuid`; `[]` an array of
  structs (children follow, indented); `[]int32`, `[]string`, ... an array of scalars; `{}` a single
  nested struct (children follow).
- v=RANGE: the message versions that carry the field: `3+` (3 and up), `0-12`, `0` (only 0).
  Absent = `0+`. Kafka 4.x dropped some old versions from its specs but kept the field ranges, so
  the tables still describe e.g. CreateTopics v0-1 and DescribeConfigs v0, which TwinMQ serves.
- null=RANGE: the versions in which the value may be null (-1 length / count, or 0 in the compact
  encodings). Outside that range a None is a codec error.
- def=VALUE: the default (`-1`, `0x7fffffff`, `true`, `null`, an empty string when `def=` is
  empty). Without it: 0 / False for numbers and bools, None for strings nullable in some version
  else "", b"" for bytes and records, [] for arrays, the children's defaults for structs and
  16 zero bytes for uuids.
- tag=N: in flexible versions, the field travels in the struct's tagged-field section (written only
  when it differs from its default) instead of in line.

`MessageSpec.first_flexible` is the first version that uses the flexible encodings (compact
strings/arrays/bytes, tagged fields, request header v2 / response header v1), None if never.
`min_version`..`max_version` is the span the tables describe (wider than what the broker advertises,
which is `real.kafka.api.VERSIONS`), so tests and simulated clients can use newer versions too.
"""

from __future__ import annotations

from dataclasses import dataclass

from real.kafka import api

VERSION_MAX = 0x7FFF  # the "N+" upper bound: api_version is an int16

SCALAR_TYPES = ("int8", "int16", "int32", "int64", "uint16", "float64", "bool", "string", "bytes",
                "records", "uuid")
UUID_ZERO = bytes(16)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a request/response body (or of a nested struct).

    `type` is a scalar type name, "[]" (array of structs), "[]<scalar>" or "{}" (struct); `fields`
    holds the children of "[]" and "{}". `versions` and `nullable` are inclusive (lo, hi) version
    ranges (`nullable` None = never null). `default` is immutable: () for arrays, a tuple of
    (name, default) pairs for structs (see `default_value` for a fresh mutable copy).
    """

    name: str
    type: str
    versions: tuple[int, int]
    nullable: tuple[int, int] | None
    default: object
    tag: int | None
    fields: tuple[Field, ...] = ()

    def present(self, version: int) -> bool:
        return self.versions[0] <= version <= self.versions[1]

    def nullable_in(self, version: int) -> bool:
        return self.nullable is not None and self.nullable[0] <= version <= self.nullable[1]


@dataclass(frozen=True, slots=True)
class MessageSpec:
    api_key: int
    name: str
    min_version: int
    max_version: int
    first_flexible: int | None
    request: tuple[Field, ...]
    response: tuple[Field, ...]

    def flexible(self, version: int) -> bool:
        return self.first_flexible is not None and version >= self.first_flexible


def default_value(field: Field) -> object:
    """A fresh default for `field` (new list/dict each call, so callers may mutate it)."""
    if field.type == "{}":
        return {f.name: default_value(f) for f in field.fields}
    if field.type.startswith("[]"):
        return []
    return field.default


def parse_range(text: str) -> tuple[int, int]:
    """"3+" -> (3, VERSION_MAX); "0-12" -> (0, 12); "0" -> (0, 0)."""
    if text.endswith("+"):
        return int(text[:-1]), VERSION_MAX
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def _default(type_: str, raw: str | None, nullable: bool, children: tuple[Field, ...]) -> object:
    if type_ == "{}":
        return tuple((f.name, f.default) for f in children)
    if type_.startswith("[]"):
        return ()
    if raw == "null":
        return None
    if type_ == "bool":
        return raw == "true"
    if type_ == "string":
        return raw if raw is not None else (None if nullable else "")
    if type_ in ("bytes", "records"):
        return b""
    if type_ == "uuid":
        return UUID_ZERO
    if type_ == "float64":
        return float(raw) if raw is not None else 0.0
    return int(raw, 0) if raw is not None else 0


def parse_fields(text: str) -> tuple[Field, ...]:
    """Parse one indented table (see the module docstring) into a tree of `Field`s."""
    lines = [line for line in text.splitlines() if line.strip()]
    fields, rest = _parse_level(lines, 0)
    assert not rest, f"bad indentation at {rest[0]!r}"
    return fields


def _parse_level(lines: list[str], indent: int) -> tuple[tuple[Field, ...], list[str]]:
    out: list[Field] = []
    while lines:
        line = lines[0]
        depth = len(line) - len(line.lstrip(" "))
        if depth < indent:
            break
        assert depth == indent, f"bad indentation at {line!r}"
        name, type_, *opts = line.split()
        attrs = dict(opt.split("=", 1) for opt in opts)
        assert set(attrs) <= {"v", "null", "def", "tag"}, line
        assert type_ in SCALAR_TYPES or type_ in ("[]", "{}") or type_[2:] in SCALAR_TYPES, line
        children: tuple[Field, ...] = ()
        lines = lines[1:]
        if type_ in ("[]", "{}"):
            children, lines = _parse_level(lines, indent + 2)
            assert children, f"{name}: a struct needs fields"
        nullable = parse_range(attrs["null"]) if "null" in attrs else None
        out.append(Field(
            name=name, type=type_, versions=parse_range(attrs.get("v", "0+")), nullable=nullable,
            default=_default(type_, attrs.get("def"), nullable is not None, children),
            tag=int(attrs["tag"]) if "tag" in attrs else None, fields=children))
    return tuple(out), lines


MESSAGES: dict[int, MessageSpec] = {}


def _spec(api_key: int, min_version: int, max_version: int, first_flexible: int | None,
          request: str, response: str) -> None:
    assert api_key not in MESSAGES
    MESSAGES[api_key] = MessageSpec(
        api_key=api_key, name=api.NAMES[api_key], min_version=min_version,
        max_version=max_version, first_flexible=first_flexible,
        request=parse_fields(request), response=parse_fields(response))


# --- the tables: (api key, min version, max version, first flexible version, request, response)

_spec(api.PRODUCE, 0, 13, 9, """
transactional_id string v=3+ null=3+ def=null
acks             int16
timeout_ms       int32
topic_data       []
  name           string v=0-12
  topic_id       uuid v=13+
  partition_data []
    index   int32
    records records null=0+
""", """
responses        []
  name                string v=0-12
  topic_id            uuid v=13+
  partition_responses []
    index              int32
    error_code         int16
    base_offset        int64
    log_append_time_ms int64 v=2+ def=-1
    log_start_offset   int64 v=5+ def=-1
    record_errors      [] v=8+
      batch_index               int32 v=8+
      batch_index_error_message string v=8+ null=8+ def=null
    error_message      string v=8+ null=8+ def=null
    current_leader     {} v=10+ tag=0
      leader_id    int32 v=10+ def=-1
      leader_epoch int32 v=10+ def=-1
throttle_time_ms int32 v=1+ def=0
node_endpoints   [] v=10+ tag=0
  node_id int32 v=10+
  host    string v=10+
  port    int32 v=10+
  rack    string v=10+ null=10+ def=null
""")

_spec(api.FETCH, 4, 18, 12, """
cluster_id            string v=12+ null=12+ def=null tag=0
replica_id            int32 v=0-14 def=-1
replica_state         {} v=15+ tag=1
  replica_id    int32 v=15+ def=-1
  replica_epoch int64 v=15+ def=-1
max_wait_ms           int32
min_bytes             int32
max_bytes             int32 v=3+ def=0x7fffffff
isolation_level       int8 v=4+ def=0
session_id            int32 v=7+ def=0
session_epoch         int32 v=7+ def=-1
topics                []
  topic      string v=0-12
  topic_id   uuid v=13+
  partitions []
    partition            int32
    current_leader_epoch int32 v=9+ def=-1
    fetch_offset         int64
    last_fetched_epoch   int32 v=12+ def=-1
    log_start_offset     int64 v=5+ def=-1
    partition_max_bytes  int32
    replica_directory_id uuid v=17+ tag=0
    high_watermark       int64 v=18+ def=9223372036854775807 tag=1
forgotten_topics_data [] v=7+
  topic      string v=7-12
  topic_id   uuid v=13+
  partitions []int32 v=7+
rack_id               string v=11+ def=
""", """
throttle_time_ms int32 v=1+
error_code       int16 v=7+
session_id       int32 v=7+ def=0
responses        []
  topic      string v=0-12
  topic_id   uuid v=13+
  partitions []
    partition_index        int32
    error_code             int16
    high_watermark         int64
    last_stable_offset     int64 v=4+ def=-1
    log_start_offset       int64 v=5+ def=-1
    diverging_epoch        {} v=12+ tag=0
      epoch      int32 v=12+ def=-1
      end_offset int64 v=12+ def=-1
    current_leader         {} v=12+ tag=1
      leader_id    int32 v=12+ def=-1
      leader_epoch int32 v=12+ def=-1
    snapshot_id            {} v=12+ tag=2
      end_offset int64 def=-1
      epoch      int32 def=-1
    aborted_transactions   [] v=4+ null=4+
      producer_id  int64 v=4+
      first_offset int64 v=4+
    preferred_read_replica int32 v=11+ def=-1
    records                records null=0+
node_endpoints   [] v=16+ tag=0
  node_id int32 v=16+
  host    string v=16+
  port    int32 v=16+
  rack    string v=16+ null=16+ def=null
""")

_spec(api.LIST_OFFSETS, 1, 11, 6, """
replica_id      int32
isolation_level int8 v=2+
topics          []
  name       string
  partitions []
    partition_index      int32
    current_leader_epoch int32 v=4+ def=-1
    timestamp            int64
    max_num_offsets      int32 v=0 def=1
timeout_ms      int32 v=10+
""", """
throttle_time_ms int32 v=2+
topics           []
  name       string
  partitions []
    partition_index   int32
    error_code        int16
    old_style_offsets []int64 v=0
    timestamp         int64 v=1+ def=-1
    offset            int64 v=1+ def=-1
    leader_epoch      int32 v=4+ def=-1
""")

_spec(api.METADATA, 0, 13, 9, """
topics                                [] null=1+
  topic_id uuid v=10+
  name     string null=10+
allow_auto_topic_creation             bool v=4+ def=true
include_cluster_authorized_operations bool v=8-10
include_topic_authorized_operations   bool v=8+
""", """
throttle_time_ms              int32 v=3+
brokers                       []
  node_id int32
  host    string
  port    int32
  rack    string v=1+ null=1+ def=null
cluster_id                    string v=2+ null=2+ def=null
controller_id                 int32 v=1+ def=-1
topics                        []
  error_code                  int16
  name                        string null=12+
  topic_id                    uuid v=10+
  is_internal                 bool v=1+ def=false
  partitions                  []
    error_code       int16
    partition_index  int32
    leader_id        int32
    leader_epoch     int32 v=7+ def=-1
    replica_nodes    []int32
    isr_nodes        []int32
    offline_replicas []int32 v=5+
  topic_authorized_operations int32 v=8+ def=-2147483648
cluster_authorized_operations int32 v=8-10 def=-2147483648
error_code                    int16 v=13+
""")

_spec(api.OFFSET_COMMIT, 2, 10, 8, """
group_id                      string
generation_id_or_member_epoch int32 v=1+ def=-1
member_id                     string v=1+
group_instance_id             string v=7+ null=7+ def=null
retention_time_ms             int64 v=2-4 def=-1
topics                        []
  name       string v=0-9
  topic_id   uuid v=10+
  partitions []
    partition_index        int32
    committed_offset       int64
    committed_leader_epoch int32 v=6+ def=-1
    commit_timestamp       int64 v=1 def=-1
    committed_metadata     string null=0+
""", """
throttle_time_ms int32 v=3+
topics           []
  name       string v=0-9
  topic_id   uuid v=10+
  partitions []
    partition_index int32
    error_code      int16
""")

_spec(api.OFFSET_FETCH, 1, 10, 6, """
group_id       string v=0-7
topics         [] v=0-7 null=2-7
  name              string v=0-7
  partition_indexes []int32 v=0-7
groups         [] v=8+
  group_id     string v=8+
  member_id    string v=9+ null=9+ def=null
  member_epoch int32 v=9+ def=-1
  topics       [] v=8+ null=8+
    name              string v=8-9
    topic_id          uuid v=10+
    partition_indexes []int32 v=8+
require_stable bool v=7+ def=false
""", """
throttle_time_ms int32 v=3+
topics           [] v=0-7
  name       string v=0-7
  partitions [] v=0-7
    partition_index        int32 v=0-7
    committed_offset       int64 v=0-7
    committed_leader_epoch int32 v=5-7 def=-1
    metadata               string v=0-7 null=0-7
    error_code             int16 v=0-7
error_code       int16 v=2-7 def=0
groups           [] v=8+
  group_id   string v=8+
  topics     [] v=8+
    name       string v=8-9
    topic_id   uuid v=10+
    partitions [] v=8+
      partition_index        int32 v=8+
      committed_offset       int64 v=8+
      committed_leader_epoch int32 v=8+ def=-1
      metadata               string v=8+ null=8+
      error_code             int16 v=8+
  error_code int16 v=8+ def=0
""")

_spec(api.FIND_COORDINATOR, 0, 6, 3, """
key              string v=0-3
key_type         int8 v=1+ def=0
coordinator_keys []string v=4+
""", """
throttle_time_ms int32 v=1+
error_code       int16 v=0-3
error_message    string v=1-3 null=1-3
node_id          int32 v=0-3
host             string v=0-3
port             int32 v=0-3
coordinators     [] v=4+
  key           string v=4+
  node_id       int32 v=4+
  host          string v=4+
  port          int32 v=4+
  error_code    int16 v=4+
  error_message string v=4+ null=4+
""")

_spec(api.JOIN_GROUP, 0, 9, 6, """
group_id             string
session_timeout_ms   int32
rebalance_timeout_ms int32 v=1+ def=-1
member_id            string
group_instance_id    string v=5+ null=5+ def=null
protocol_type        string
protocols            []
  name     string
  metadata bytes
reason               string v=8+ null=8+ def=null
""", """
throttle_time_ms int32 v=2+
error_code       int16
generation_id    int32 def=-1
protocol_type    string v=7+ null=7+ def=null
protocol_name    string null=7+
leader           string
skip_assignment  bool v=9+ def=false
member_id        string
members          []
  member_id         string
  group_instance_id string v=5+ null=5+ def=null
  metadata          bytes
""")

_spec(api.HEARTBEAT, 0, 4, 4, """
group_id          string
generation_id     int32
member_id         string
group_instance_id string v=3+ null=3+ def=null
""", """
throttle_time_ms int32 v=1+
error_code       int16
""")

_spec(api.LEAVE_GROUP, 0, 5, 4, """
group_id  string
member_id string v=0-2
members   [] v=3+
  member_id         string v=3+
  group_instance_id string v=3+ null=3+ def=null
  reason            string v=5+ null=5+ def=null
""", """
throttle_time_ms int32 v=1+
error_code       int16
members          [] v=3+
  member_id         string v=3+
  group_instance_id string v=3+ null=3+
  error_code        int16 v=3+
""")

_spec(api.SYNC_GROUP, 0, 5, 4, """
group_id          string
generation_id     int32
member_id         string
group_instance_id string v=3+ null=3+ def=null
protocol_type     string v=5+ null=5+ def=null
protocol_name     string v=5+ null=5+ def=null
assignments       []
  member_id  string
  assignment bytes
""", """
throttle_time_ms int32 v=1+
error_code       int16
protocol_type    string v=5+ null=5+ def=null
protocol_name    string v=5+ null=5+ def=null
assignment       bytes
""")

_spec(api.DESCRIBE_GROUPS, 0, 6, 5, """
groups                        []string
include_authorized_operations bool v=3+
""", """
throttle_time_ms int32 v=1+
groups           []
  error_code            int16
  error_message         string v=6+ null=6+ def=null
  group_id              string
  group_state           string
  protocol_type         string
  protocol_data         string
  members               []
    member_id         string
    group_instance_id string v=4+ null=4+ def=null
    client_id         string
    client_host       string
    member_metadata   bytes
    member_assignment bytes
  authorized_operations int32 v=3+ def=-2147483648
""")

_spec(api.LIST_GROUPS, 0, 5, 3, """
states_filter []string v=4+
types_filter  []string v=5+
""", """
throttle_time_ms int32 v=1+
error_code       int16
groups           []
  group_id      string
  protocol_type string
  group_state   string v=4+
  group_type    string v=5+
""")

_spec(api.SASL_HANDSHAKE, 0, 1, None, """
mechanism string
""", """
error_code int16
mechanisms []string
""")

_spec(api.API_VERSIONS, 0, 4, 3, """
client_software_name    string v=3+
client_software_version string v=3+
""", """
error_code               int16
api_keys                 []
  api_key     int16
  min_version int16
  max_version int16
throttle_time_ms         int32 v=1+
supported_features       [] v=3+ tag=0
  name        string v=3+
  min_version int16 v=3+
  max_version int16 v=3+
finalized_features_epoch int64 v=3+ def=-1 tag=1
finalized_features       [] v=3+ tag=2
  name              string v=3+
  max_version_level int16 v=3+
  min_version_level int16 v=3+
zk_migration_ready       bool v=3+ def=false tag=3
""")

_spec(api.CREATE_TOPICS, 0, 7, 5, """
topics        []
  name               string
  num_partitions     int32
  replication_factor int16
  assignments        []
    partition_index int32
    broker_ids      []int32
  configs            []
    name  string
    value string null=0+
timeout_ms    int32 def=60000
validate_only bool v=1+ def=false
""", """
throttle_time_ms int32 v=2+
topics           []
  name                    string
  topic_id                uuid v=7+
  error_code              int16
  error_message           string v=1+ null=0+
  topic_config_error_code int16 v=5+ tag=0
  num_partitions          int32 v=5+ def=-1
  replication_factor      int16 v=5+ def=-1
  configs                 [] v=5+ null=5+
    name          string v=5+
    value         string v=5+ null=5+
    read_only     bool v=5+
    config_source int8 v=5+ def=-1
    is_sensitive  bool v=5+
""")

_spec(api.DELETE_TOPICS, 0, 6, 4, """
topics      [] v=6+
  name     string v=6+ null=6+ def=null
  topic_id uuid v=6+
topic_names []string v=0-5
timeout_ms  int32
""", """
throttle_time_ms int32 v=1+
responses        []
  name          string null=6+
  topic_id      uuid v=6+
  error_code    int16
  error_message string v=5+ null=5+ def=null
""")

_spec(api.INIT_PRODUCER_ID, 0, 6, 2, """
transactional_id       string null=0+
transaction_timeout_ms int32
producer_id            int64 v=3+ def=-1
producer_epoch         int16 v=3+ def=-1
enable2_pc             bool v=6+ def=false
keep_prepared_txn      bool v=6+ def=false
""", """
throttle_time_ms           int32
error_code                 int16
producer_id                int64 def=-1
producer_epoch             int16
ongoing_txn_producer_id    int64 v=6+ def=-1
ongoing_txn_producer_epoch int16 v=6+ def=-1
""")

_spec(api.DESCRIBE_CONFIGS, 0, 4, 4, """
resources             []
  resource_type      int8
  resource_name      string
  configuration_keys []string null=0+
include_synonyms      bool v=1+ def=false
include_documentation bool v=3+ def=false
""", """
throttle_time_ms int32
results          []
  error_code    int16
  error_message string null=0+
  resource_type int8
  resource_name string
  configs       []
    name          string
    value         string null=0+
    read_only     bool
    config_source int8 v=1+ def=-1
    is_default    bool v=0
    is_sensitive  bool
    synonyms      [] v=1+
      name   string v=1+
      value  string v=1+ null=0+
      source int8 v=1+
    config_type   int8 v=3+ def=0
    documentation string v=3+ null=0+
""")

_spec(api.SASL_AUTHENTICATE, 0, 2, 2, """
auth_bytes bytes
""", """
error_code          int16
error_message       string null=0+
auth_bytes          bytes
session_lifetime_ms int64 v=1+ def=0
""")

_spec(api.CREATE_PARTITIONS, 0, 3, 2, """
topics        []
  name        string
  count       int32
  assignments [] null=0+
    broker_ids []int32
timeout_ms    int32
validate_only bool
""", """
throttle_time_ms int32
results          []
  name          string
  error_code    int16
  error_message string null=0+ def=null
""")

_spec(api.DELETE_GROUPS, 0, 2, 2, """
groups_names []string
""", """
throttle_time_ms int32
results          []
  group_id   string
  error_code int16
""")

_spec(api.OFFSET_FOR_LEADER_EPOCH, 0, 4, 4, """
replica_id int32 v=3+ def=-2
topics     []
  topic      string
  partitions []
    partition            int32
    current_leader_epoch int32 v=2+ def=-1
    leader_epoch         int32
""", """
throttle_time_ms int32 v=2+
topics           []
  topic      string
  partitions []
    error_code   int16
    partition    int32
    leader_epoch int32 v=1+ def=-1
    end_offset   int64 def=-1
""")

_spec(api.DESCRIBE_CLUSTER, 0, 2, 0, """
include_cluster_authorized_operations bool
endpoint_type                         int8 v=1+ def=1
include_fenced_brokers                bool v=2+
""", """
throttle_time_ms              int32
error_code                    int16
error_message                 string null=0+ def=null
endpoint_type                 int8 v=1+ def=1
cluster_id                    string
controller_id                 int32 def=-1
brokers                       []
  broker_id int32
  host      string
  port      int32
  rack      string null=0+ def=null
  is_fenced bool v=2+
cluster_authorized_operations int32 def=-2147483648
""")

assert sorted(MESSAGES) == sorted(api.VERSIONS), "every advertised API needs a schema"
