"""Node configuration: defaults < TOML file < command-line flags.

Every key is declared once in `KEYS` (its dotted TOML path, the NodeConfig field, type and check).
An unknown key or a bad value raises ConfigError naming the file (or flag) and the key. Checks
that span keys (distinct listener ports, TLS files when a TLS listener is on, the password and ACL
files existing and parsing) run after merging, and name the keys involved.

    node_id = 1
    data_dir = "./data"
    bind = "127.0.0.1"
    log_timestamps = false     # prefix each log line with the wall time (epoch seconds, ms)
    [listeners]
    mqtt_port = 1883
    kafka_port = 9092
    admin_port = 8080
    ws_port = 8083             # MQTT over WebSocket; 0 = off
    mqtts_port = 0             # MQTT over TLS; 0 = off (needs [tls])
    wss_port = 0               # MQTT over WebSocket over TLS; 0 = off (needs [tls])
    [tls]
    cert_file = ""             # PEM certificate chain; required when mqtts_port or wss_port is on
    key_file = ""              # PEM private key; same
    [mqtt]
    allow_anonymous = "auto"   # "auto" | true | false; auto: only on loopback-bound listeners
    password_file = ""         # mosquitto_passwd format (`twinmq user add`); "" = none
    acl_file = ""              # TOML ACL (see real/mqtt/auth.py); "" = allow everything
    max_packet_size = 1048576  # bytes, 64..268435455, both directions
    max_connections = 100000
    receive_maximum = 1024     # inbound QoS>0 PUBLISHes in flight per client, 1..65535
    max_inflight = 64          # outbound QoS>0 PUBLISHes in flight per session, 1..65535
    max_queued = 1000          # messages queued per offline or slow session
    queue_policy = "drop-new"  # drop-new | drop-oldest when a session queue is full
    queue_qos0 = false         # queue QoS 0 messages for offline sessions too
    topic_alias_max = 16       # 0..65535; 0 = no topic aliases from clients
    keep_alive_max = 0         # seconds, 0..65535; 0 = honour the client's value
    session_expiry_max = 4294967295   # seconds
    sys_interval_s = 10        # $SYS publish period; 0 = no $SYS topics
    retain_available = true
    max_topic_levels = 128     # 1..200 (the topic module's limit, mosquitto's too)
    ws_path = "/mqtt"          # the HTTP path of the WebSocket listeners
    cluster = false            # MQTT across the cluster: every message through the replicated
                               # `__mqtt` log, acknowledged once committed (docs/cluster.md)
    cluster_partitions = 3     # partitions of `__mqtt` (fixed when it is created)
    [storage]
    engine = "file"            # memory | file | rocksdb | s3 (the default; topics may choose)
    fsync = "group"            # always | group | never (file and rocksdb engines)
    group_commit_ms = 2        # group: fsync at most this long after the oldest unsynced append
    sync_thread = true         # group, file engine: fdatasync on worker threads, not the loop
    segment_bytes = 67108864   # file journal segment size
    s3_endpoint = ""           # empty: start an embedded SeaweedFS S3 server on loopback
    s3_bucket = "twinmq"
    s3_linger_ms = 0           # 0: one PUT per append (durable on return); > 0: batch into objects
    [raft]
    tick_ms = 10
    election_tick_min = 10
    election_tick_max = 19
    heartbeat_tick = 1
    snapshot_entries = 1000    # compact the meta log past this many entries
    seed = 0                   # 0: derive from node_id
    [admin]
    request_bytes_max = 8192
    connections_max = 64
    [cluster]
    peers = ""                 # "1=127.0.0.1:7001,2=127.0.0.1:7002,3=..." the meta voters and
                               # their inter-node addresses (this node's entry is its raft port);
                               # "" = a single node
    secret_file = ""           # the shared cluster secret (>= 16 bytes), required with peers
    join = false               # start blank and wait to be added to a running cluster
                               # (POST /cluster/members on its leader: `twinmq cluster join`)
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from real.kafka.sasl import SaslUsers, ScramFile, scram_path
from real.mqtt.auth import Acl, AuthConfigError, PasswordFile
from real.mqtt.topics import TOPIC_LEVELS_MAX

if TYPE_CHECKING:
    from real.kafka.bridge import BridgeRule
    from real.server.node import NodeSpec

STORAGE_ENGINES = ("memory", "file", "rocksdb", "s3")
FSYNC_POLICIES = ("always", "group", "never")
QUEUE_POLICIES = ("drop-new", "drop-oldest")
PORT_KEYS = (("mqtt_port", "listeners.mqtt_port"), ("kafka_port", "listeners.kafka_port"),
             ("admin_port", "listeners.admin_port"), ("ws_port", "listeners.ws_port"),
             ("mqtts_port", "listeners.mqtts_port"), ("wss_port", "listeners.wss_port"))


class ConfigError(Exception):
    """A configuration problem; the message names the file or flag and the key."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int = 1
    data_dir: Path = Path("./data")
    bind: str = "127.0.0.1"
    log_timestamps: bool = False
    mqtt_port: int = 1883
    kafka_port: int = 9092
    admin_port: int = 8080
    ws_port: int = 8083
    mqtts_port: int = 0
    wss_port: int = 0
    tls_cert_file: str = ""
    tls_key_file: str = ""
    mqtt_allow_anonymous: str | bool = "auto"
    mqtt_password_file: str = ""
    mqtt_acl_file: str = ""
    mqtt_max_packet_size: int = 1 << 20
    mqtt_max_connections: int = 100_000
    mqtt_receive_maximum: int = 1024
    mqtt_max_inflight: int = 64
    mqtt_max_queued: int = 1000
    mqtt_queue_policy: str = "drop-new"
    mqtt_queue_qos0: bool = False
    mqtt_topic_alias_max: int = 16
    mqtt_keep_alive_max: int = 0
    mqtt_session_expiry_max: int = 4_294_967_295
    mqtt_sys_interval_s: int = 10
    mqtt_retain_available: bool = True
    mqtt_max_topic_levels: int = 128
    mqtt_ws_path: str = "/mqtt"
    mqtt_cluster: bool = False
    mqtt_cluster_partitions: int = 3
    kafka_advertised_host: str = ""
    kafka_advertised_port: int = 0
    kafka_cluster_id: str = "twinmq"
    kafka_auto_create_topics: bool = True
    kafka_default_partitions: int = 1
    kafka_max_message_bytes: int = (1 << 20) + 12
    kafka_max_request_bytes: int = 100 << 20
    kafka_group_initial_rebalance_delay_ms: int = 0
    kafka_group_min_session_timeout_ms: int = 6000
    kafka_group_max_session_timeout_ms: int = 1_800_000
    kafka_retention_check_ms: int = 60_000
    kafka_sasl: bool = False
    kafka_default_replication_factor: int = 1
    kafka_min_insync_replicas: int = 1
    kafka_leader_barrier_ms: int = 500
    bridges: tuple[BridgeRule, ...] = ()
    """MQTT <-> Kafka bridge rules (`[[bridge]]` tables; real/kafka/bridge.py)."""
    storage_engine: str = "file"
    storage_fsync: str = "group"
    storage_group_commit_ms: int = 2
    storage_sync_thread: bool = True
    storage_segment_bytes: int = 64 << 20
    storage_s3_endpoint: str = ""
    storage_s3_bucket: str = "twinmq"
    storage_s3_linger_ms: int = 0
    storage_hold_unsynced: bool = False
    tick_ms: int = 10
    election_tick_min: int = 10
    election_tick_max: int = 19
    heartbeat_tick: int = 1
    snapshot_entries: int = 1000
    raft_seed: int = 0
    admin_request_bytes_max: int = 8192
    admin_connections_max: int = 64
    admin_token_file: str = ""
    """A file holding the admin API token (>= 16 bytes): every POST must carry
    `Authorization: Bearer <token>`. Required when `bind` is not a loopback address."""
    cluster_peers: str = ""
    """Meta voters and their inter-node addresses, "id=host:port,..." ("" = a single node)."""
    cluster_secret_file: str = ""
    cluster_join: bool = False
    """Start blank and wait to be added to a running cluster (`peers` then names the
    members to reach and this node's own address); ignored once the node has meta state."""
    cluster_tls_cert_file: str = ""
    cluster_tls_key_file: str = ""
    cluster_tls_ca_file: str = ""
    """Mutual TLS on the peer port: this node's certificate and key, and the cluster CA that
    signs every member's certificate (all three, or none)."""
    cluster_heartbeat_ms: int = 100
    cluster_session_timeout_ms: int = 600
    cluster_rebalance_delay_ms: int = 5_000
    cluster_replica_lag_ms: int = 10_000
    cluster_replica_fetch_wait_ms: int = 500
    cluster_replica_tail_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        assert self.node_id >= 1, self.node_id
        assert self.storage_engine in STORAGE_ENGINES, self.storage_engine
        assert 1 <= self.heartbeat_tick < self.election_tick_min <= self.election_tick_max
        assert self.mqtt_allow_anonymous in ("auto", True, False), self.mqtt_allow_anonymous
        assert self.mqtt_queue_policy in QUEUE_POLICIES, self.mqtt_queue_policy


@dataclass(frozen=True, slots=True)
class Key:
    path: str
    """Dotted TOML path, e.g. "listeners.admin_port"."""
    field: str
    type: type | tuple[type, ...]
    """The TOML value's type, or a tuple of the types allowed (checked exactly: a bool is not
    an int)."""
    check: Callable[[Any], str | None]


def _range(low: int, high: int) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be in [{low}, {high}], got {v}"


def _nonempty(v: Any) -> str | None:
    return None if v else "must not be empty"


def _engine(v: Any) -> str | None:
    ok = v in STORAGE_ENGINES
    return None if ok else f"must be one of {', '.join(STORAGE_ENGINES)}, got {v!r}"


def _fsync(v: Any) -> str | None:
    ok = v in FSYNC_POLICIES
    return None if ok else f"must be one of {', '.join(FSYNC_POLICIES)}, got {v!r}"


def _bucket(v: Any) -> str | None:
    ok = 3 <= len(v) <= 63 and all(c.islower() or c.isdigit() or c in "-." for c in v)
    return None if ok else f"must be an S3 bucket name (3-63 of a-z 0-9 - .), got {v!r}"


def _endpoint(v: Any) -> str | None:
    ok = v == "" or v.startswith(("http://", "https://"))
    return None if ok else f"must be empty or an http(s):// URL, got {v!r}"


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}, got {v!r}"


def _anonymous(v: Any) -> str | None:
    ok = isinstance(v, bool) or v == "auto"
    return None if ok else f'must be "auto", true or false, got {v!r}'


def _any(v: Any) -> str | None:
    return None


def _ws_path(v: Any) -> str | None:
    ok = v.startswith("/") and len(v) <= 1024 and all(33 <= ord(c) <= 126 for c in v)
    ok = ok and "?" not in v and "#" not in v
    return None if ok else f"must be an HTTP path starting with '/' (visible ASCII, no ? or #), " \
                           f"got {v!r}"


_PORT = _range(0, 65535)
KEYS: tuple[Key, ...] = (
    Key("node_id", "node_id", int, _range(1, 2**31 - 1)),
    Key("data_dir", "data_dir", str, _nonempty),
    Key("bind", "bind", str, _nonempty),
    Key("log_timestamps", "log_timestamps", bool, _any),
    Key("listeners.mqtt_port", "mqtt_port", int, _PORT),
    Key("listeners.kafka_port", "kafka_port", int, _PORT),
    Key("listeners.admin_port", "admin_port", int, _PORT),
    Key("listeners.ws_port", "ws_port", int, _PORT),
    Key("listeners.mqtts_port", "mqtts_port", int, _PORT),
    Key("listeners.wss_port", "wss_port", int, _PORT),
    Key("tls.cert_file", "tls_cert_file", str, _any),
    Key("tls.key_file", "tls_key_file", str, _any),
    Key("mqtt.allow_anonymous", "mqtt_allow_anonymous", (str, bool), _anonymous),
    Key("mqtt.password_file", "mqtt_password_file", str, _any),
    Key("mqtt.acl_file", "mqtt_acl_file", str, _any),
    Key("mqtt.max_packet_size", "mqtt_max_packet_size", int, _range(64, 268_435_455)),
    Key("mqtt.max_connections", "mqtt_max_connections", int, _range(1, 10_000_000)),
    Key("mqtt.receive_maximum", "mqtt_receive_maximum", int, _range(1, 65535)),
    Key("mqtt.max_inflight", "mqtt_max_inflight", int, _range(1, 65535)),
    Key("mqtt.max_queued", "mqtt_max_queued", int, _range(0, 2**31 - 1)),
    Key("mqtt.queue_policy", "mqtt_queue_policy", str, _choice(*QUEUE_POLICIES)),
    Key("mqtt.queue_qos0", "mqtt_queue_qos0", bool, _any),
    Key("mqtt.topic_alias_max", "mqtt_topic_alias_max", int, _range(0, 65535)),
    Key("mqtt.keep_alive_max", "mqtt_keep_alive_max", int, _range(0, 65535)),
    Key("mqtt.session_expiry_max", "mqtt_session_expiry_max", int, _range(0, 4_294_967_295)),
    Key("mqtt.sys_interval_s", "mqtt_sys_interval_s", int, _range(0, 86_400)),
    Key("mqtt.retain_available", "mqtt_retain_available", bool, _any),
    Key("mqtt.max_topic_levels", "mqtt_max_topic_levels", int, _range(1, TOPIC_LEVELS_MAX)),
    Key("mqtt.ws_path", "mqtt_ws_path", str, _ws_path),
    Key("mqtt.cluster", "mqtt_cluster", bool, _any),
    Key("mqtt.cluster_partitions", "mqtt_cluster_partitions", int, _range(1, 1024)),
    Key("kafka.advertised_host", "kafka_advertised_host", str, _any),
    Key("kafka.advertised_port", "kafka_advertised_port", int, _PORT),
    Key("kafka.cluster_id", "kafka_cluster_id", str, _nonempty),
    Key("kafka.auto_create_topics", "kafka_auto_create_topics", bool, _any),
    Key("kafka.default_partitions", "kafka_default_partitions", int, _range(1, 1024)),
    Key("kafka.max_message_bytes", "kafka_max_message_bytes", int, _range(1024, 1 << 30)),
    Key("kafka.max_request_bytes", "kafka_max_request_bytes", int, _range(1024, 1 << 30)),
    Key("kafka.group_initial_rebalance_delay_ms", "kafka_group_initial_rebalance_delay_ms", int,
        _range(0, 300_000)),
    Key("kafka.group_min_session_timeout_ms", "kafka_group_min_session_timeout_ms", int,
        _range(1, 86_400_000)),
    Key("kafka.group_max_session_timeout_ms", "kafka_group_max_session_timeout_ms", int,
        _range(1, 86_400_000)),
    Key("kafka.retention_check_ms", "kafka_retention_check_ms", int, _range(100, 86_400_000)),
    Key("kafka.sasl", "kafka_sasl", bool, _any),
    Key("kafka.default_replication_factor", "kafka_default_replication_factor", int,
        _range(1, 16)),
    Key("kafka.min_insync_replicas", "kafka_min_insync_replicas", int, _range(1, 16)),
    Key("kafka.leader_barrier_ms", "kafka_leader_barrier_ms", int, _range(0, 60_000)),
    Key("bridge", "bridges", tuple, _any),
    Key("storage.engine", "storage_engine", str, _engine),
    Key("storage.fsync", "storage_fsync", str, _fsync),
    Key("storage.group_commit_ms", "storage_group_commit_ms", int, _range(1, 60_000)),
    Key("storage.sync_thread", "storage_sync_thread", bool, _any),
    Key("storage.segment_bytes", "storage_segment_bytes", int, _range(4096, 1 << 40)),
    Key("storage.s3_endpoint", "storage_s3_endpoint", str, _endpoint),
    Key("storage.s3_bucket", "storage_s3_bucket", str, _bucket),
    Key("storage.s3_linger_ms", "storage_s3_linger_ms", int, _range(0, 60_000)),
    Key("storage.hold_unsynced", "storage_hold_unsynced", bool, _any),
    Key("raft.tick_ms", "tick_ms", int, _range(1, 60_000)),
    Key("raft.election_tick_min", "election_tick_min", int, _range(2, 10_000)),
    Key("raft.election_tick_max", "election_tick_max", int, _range(2, 10_000)),
    Key("raft.heartbeat_tick", "heartbeat_tick", int, _range(1, 10_000)),
    Key("raft.snapshot_entries", "snapshot_entries", int, _range(2, 10_000_000)),
    Key("raft.seed", "raft_seed", int, _range(0, 2**63 - 1)),
    Key("admin.request_bytes_max", "admin_request_bytes_max", int, _range(256, 1 << 20)),
    Key("admin.connections_max", "admin_connections_max", int, _range(1, 10_000)),
    Key("admin.token_file", "admin_token_file", str, _any),
    Key("cluster.peers", "cluster_peers", str, lambda v: _peers_error(v)),
    Key("cluster.secret_file", "cluster_secret_file", str, _any),
    Key("cluster.join", "cluster_join", bool, _any),
    Key("cluster.tls_cert_file", "cluster_tls_cert_file", str, _any),
    Key("cluster.tls_key_file", "cluster_tls_key_file", str, _any),
    Key("cluster.tls_ca_file", "cluster_tls_ca_file", str, _any),
    Key("cluster.heartbeat_ms", "cluster_heartbeat_ms", int, _range(10, 60_000)),
    Key("cluster.session_timeout_ms", "cluster_session_timeout_ms", int, _range(30, 600_000)),
    Key("cluster.rebalance_delay_ms", "cluster_rebalance_delay_ms", int,
        _range(1, 86_400_000)),
    Key("cluster.replica_lag_ms", "cluster_replica_lag_ms", int, _range(10, 600_000)),
    Key("cluster.replica_fetch_wait_ms", "cluster_replica_fetch_wait_ms", int,
        _range(1, 60_000)),
    Key("cluster.replica_tail_bytes", "cluster_replica_tail_bytes", int, _range(0, 1 << 30)),
)


def parse_peers(text: str) -> dict[int, tuple[str, int]]:
    """"1=127.0.0.1:7001,2=host:7002" -> {1: ("127.0.0.1", 7001), 2: ("host", 7002)}; raises
    ValueError naming the bad entry."""
    peers: dict[int, tuple[str, int]] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        node, sep, addr = item.partition("=")
        host, colon, port = addr.rpartition(":")
        if not sep or not colon or not node.strip().isdigit() or not port.isdigit() or not host:
            raise ValueError(f"entry {item!r} is not id=host:port")
        nid, number = int(node), int(port)
        if not 1 <= nid <= 2**31 - 1 or not 1 <= number <= 65535:
            raise ValueError(f"entry {item!r}: node id or port out of range")
        if nid in peers:
            raise ValueError(f"node {nid} listed twice")
        peers[nid] = (host.strip("[]"), number)
    return peers


def _peers_error(text: str) -> str | None:
    try:
        parse_peers(text)
    except ValueError as exc:
        return f"must be \"id=host:port,...\": {exc}"
    return None


def read_cluster_secret(cfg: NodeConfig, where: str = "") -> bytes:
    """The shared secret of a multi-node cluster (stripped of surrounding whitespace)."""
    where = where or "key 'cluster.secret_file'"
    try:
        secret = Path(cfg.cluster_secret_file).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{where} {cfg.cluster_secret_file!r}: cannot read: "
                          f"{exc.strerror}") from None
    if len(secret) < 16:
        raise ConfigError(f"{where} {cfg.cluster_secret_file!r}: the secret must have at least "
                          f"16 bytes, has {len(secret)}")
    return secret
_BY_PATH = {k.path: k for k in KEYS}
_BY_FIELD = {k.field: k for k in KEYS}
assert sorted(_BY_FIELD) == sorted(f.name for f in fields(NodeConfig))


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None,
                *, flag_names: Mapping[str, str] | None = None) -> NodeConfig:
    """Defaults, then the TOML file at `path` (if any), then `overrides` (NodeConfig field ->
    value, e.g. from CLI flags; `flag_names` maps a field to the flag for error messages)."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        values.update(_read_file(Path(path), origins))
    for field_name in sorted(overrides or {}):
        value = (overrides or {})[field_name]
        key = _BY_FIELD.get(field_name)
        assert key is not None, f"unknown override field {field_name!r}"
        where = (flag_names or {}).get(field_name, field_name)
        origins[field_name] = f"command line: {where}"
        values[field_name] = _check(key, value, origins[field_name])
    cfg = _build(values, str(path) if path is not None else "command line")
    _check_listeners(cfg, str(path) if path is not None else "command line")
    _check_files(cfg, origins)
    return cfg


def load_passwords(cfg: NodeConfig, where: str = "") -> PasswordFile | None:
    """Read and parse `cfg.mqtt_password_file`; None when it is "". ConfigError names `where`
    (default: the key) and the problem (the parse error names the file and line)."""
    where = where or "key 'mqtt.password_file'"
    text = _read_text(cfg.mqtt_password_file, where)
    if text is None:
        return None
    try:
        return PasswordFile.parse(text, cfg.mqtt_password_file)
    except AuthConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_sasl_users(cfg: NodeConfig, where: str = "") -> SaslUsers | None:
    """The Kafka SASL user store: the password file (PLAIN) and its SCRAM-SHA-256 sidecar
    `<password_file>.scram` (see `real.kafka.sasl`); None when no password file is set. A missing
    sidecar is empty (SCRAM then fails for everyone, PLAIN works). Errors as in `load_passwords`."""
    passwords = load_passwords(cfg, where)
    if passwords is None:
        return None
    side = scram_path(cfg.mqtt_password_file)
    where = where or "key 'mqtt.password_file'"
    text = _read_text(side, f"{where}: SCRAM file") if Path(side).exists() else ""
    try:
        return SaslUsers(passwords, ScramFile.parse(text or "", side))
    except AuthConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_acl(cfg: NodeConfig, where: str = "") -> Acl:
    """Read and parse `cfg.mqtt_acl_file`; `Acl.allow_all()` when it is "". Errors as in
    `load_passwords`."""
    where = where or "key 'mqtt.acl_file'"
    text = _read_text(cfg.mqtt_acl_file, where)
    if text is None:
        return Acl.allow_all()
    try:
        return Acl.parse(text, cfg.mqtt_acl_file)
    except AuthConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _read_text(path: str, where: str) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where} {path!r}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} {path!r}: not UTF-8 text (byte {exc.start})") from None


def _check_listeners(cfg: NodeConfig, source: str) -> None:
    """Non-zero listener ports are distinct; a TLS listener has its certificate and key."""
    seen: dict[int, str] = {}
    for field_name, key_path in PORT_KEYS:
        port = getattr(cfg, field_name)
        if port and port in seen:
            raise ConfigError(f"{source}: {seen[port]} and {key_path} are both {port}; "
                              f"listener ports must differ (0 = off)")
        seen.setdefault(port, key_path)
    tls_on = [(p, getattr(cfg, f)) for f, p in PORT_KEYS if f in ("mqtts_port", "wss_port")]
    for key_path, port in tls_on:
        if not port:
            continue
        for tls_key, value in (("tls.cert_file", cfg.tls_cert_file),
                               ("tls.key_file", cfg.tls_key_file)):
            if not value:
                raise ConfigError(f"{source}: {tls_key} is required when {key_path} is on "
                                  f"({port})")


def _check_cluster(cfg: NodeConfig, origins: Mapping[str, str]) -> None:
    """With peers: this node is one of them, its raft port differs from the listeners, and the
    cluster secret file is readable and long enough."""
    if cfg.cluster_session_timeout_ms <= 2 * cfg.cluster_heartbeat_ms:
        where = origins.get("cluster_session_timeout_ms", "key 'cluster.session_timeout_ms'")
        raise ConfigError(f"{where}: {cfg.cluster_session_timeout_ms} must be more than twice "
                          f"cluster.heartbeat_ms ({cfg.cluster_heartbeat_ms})")
    tls = [cfg.cluster_tls_cert_file, cfg.cluster_tls_key_file, cfg.cluster_tls_ca_file]
    if any(tls) and not all(tls):
        raise ConfigError("keys 'cluster.tls_cert_file', 'cluster.tls_key_file' and "
                          "'cluster.tls_ca_file': set all three (mutual TLS) or none")
    for field_name, value in zip(("cluster_tls_cert_file", "cluster_tls_key_file",
                                  "cluster_tls_ca_file"), tls, strict=True):
        if value and not Path(value).is_file():
            where = origins.get(field_name, f"key '{_BY_FIELD[field_name].path}'")
            raise ConfigError(f"{where} {value!r}: no such file")
    peers = parse_peers(cfg.cluster_peers)
    if cfg.mqtt_cluster and len(peers) < 2:
        where = origins.get("mqtt_cluster", "key 'mqtt.cluster'")
        raise ConfigError(f"{where}: MQTT across the cluster needs a cluster (cluster.peers "
                          "naming at least two nodes)")
    if cfg.cluster_join and len(peers) < 2:
        where = origins.get("cluster_join", "key 'cluster.join'")
        raise ConfigError(f"{where}: a joining node needs cluster.peers naming this node's own "
                          "address and at least one member of the cluster it joins")
    if not peers:
        return
    where = origins.get("cluster_peers", "key 'cluster.peers'")
    if cfg.node_id not in peers:
        raise ConfigError(f"{where}: node_id {cfg.node_id} is not among the peers "
                          f"{sorted(peers)}")
    raft_port = peers[cfg.node_id][1]
    for field_name, key_path in PORT_KEYS:
        if getattr(cfg, field_name) == raft_port:
            raise ConfigError(f"{where}: this node's raft port {raft_port} is also "
                              f"{key_path}")
    if len(peers) > 1:
        if not cfg.cluster_secret_file:
            raise ConfigError(f"{where}: a cluster of {len(peers)} nodes needs "
                              "cluster.secret_file (a shared secret of at least 16 bytes)")
        read_cluster_secret(cfg, origins.get("cluster_secret_file", ""))


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host in ("::1", "[::1]")


def read_admin_token(cfg: NodeConfig, where: str = "") -> bytes | None:
    """The admin token (stripped), or None when no token file is configured."""
    if not cfg.admin_token_file:
        return None
    where = where or "key 'admin.token_file'"
    try:
        token = Path(cfg.admin_token_file).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{where} {cfg.admin_token_file!r}: cannot read: "
                          f"{exc.strerror}") from None
    if len(token) < 16 or any(b <= 32 or b >= 127 for b in token):
        raise ConfigError(f"{where} {cfg.admin_token_file!r}: the token must be at least 16 "
                          f"printable bytes without spaces")
    return token


def _check_admin(cfg: NodeConfig, origins: Mapping[str, str]) -> None:
    """Off loopback, the admin API's state-changing requests need a token."""
    where = origins.get("admin_token_file", "")
    if not cfg.admin_token_file and not is_loopback(cfg.bind):
        bind = origins.get("bind", "key 'bind'")
        raise ConfigError(f"{bind}: the admin API would listen on {cfg.bind!r} (not loopback), "
                          f"so its state-changing requests need a token: set admin.token_file "
                          f"(a file with at least 16 printable bytes)")
    read_admin_token(cfg, where)


def _check_files(cfg: NodeConfig, origins: Mapping[str, str]) -> None:
    """Named files exist (TLS) or exist and parse (password file, ACL)."""
    for field_name in ("tls_cert_file", "tls_key_file"):
        value = getattr(cfg, field_name)
        where = origins.get(field_name, f"key '{_BY_FIELD[field_name].path}'")
        if value and not Path(value).is_file():
            raise ConfigError(f"{where} {value!r}: no such file")
    load_passwords(cfg, origins.get("mqtt_password_file", ""))
    load_acl(cfg, origins.get("mqtt_acl_file", ""))
    _check_cluster(cfg, origins)
    _check_admin(cfg, origins)


def _read_file(path: Path, origins: dict[str, str]) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    if "bridge" in doc:
        from real.kafka.bridge import BridgeConfigError, parse_rules

        try:
            values["bridges"] = parse_rules(doc.pop("bridge"), f"{path}: bridge")
        except BridgeConfigError as exc:
            raise ConfigError(str(exc)) from exc
        origins["bridges"] = f"{path}: [[bridge]]"
    for dotted, value in _flatten(doc, path):
        key = _BY_PATH.get(dotted)
        if key is None:
            known = ", ".join(k.path for k in KEYS)
            raise ConfigError(f"{path}: unknown key '{dotted}' (known: {known})")
        origins[key.field] = f"{path}: key '{dotted}'"
        values[key.field] = _check(key, value, origins[key.field])
    return values


def _flatten(doc: dict[str, Any], path: Path, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name in doc:
        dotted = prefix + name
        value = doc[name]
        is_section = any(k.path.startswith(dotted + ".") for k in KEYS)
        if isinstance(value, dict) and is_section and not prefix:
            out += _flatten(value, path, dotted + ".")
        elif is_section:
            raise ConfigError(f"{path}: key '{dotted}' must be a table [{dotted}], "
                              f"got {type(value).__name__}")
        else:
            out.append((dotted, value))
    return out


def _check(key: Key, value: Any, where: str) -> Any:
    kinds = key.type if isinstance(key.type, tuple) else (key.type,)
    if type(value) not in kinds:
        names = {int: "an integer", str: "a string", bool: "a boolean"}
        want = " or ".join(names[kind] for kind in kinds)
        raise ConfigError(f"{where} must be {want}, got {type(value).__name__} {value!r}")
    err = key.check(value)
    if err is not None:
        raise ConfigError(f"{where} {err}")
    return Path(value) if key.field == "data_dir" else value


def _build(values: dict[str, Any], source: str) -> NodeConfig:
    cfg = replace(NodeConfig(), **{k: v for k, v in values.items() if k not in _TICKS})
    ticks = {k: values.get(k, getattr(cfg, k)) for k in _TICKS}
    if not 1 <= ticks["heartbeat_tick"] < ticks["election_tick_min"]:
        raise ConfigError(f"{source}: raft.heartbeat_tick ({ticks['heartbeat_tick']}) must be "
                          f"below raft.election_tick_min ({ticks['election_tick_min']})")
    if ticks["election_tick_min"] > ticks["election_tick_max"]:
        raise ConfigError(f"{source}: raft.election_tick_min ({ticks['election_tick_min']}) "
                          f"must not exceed raft.election_tick_max ({ticks['election_tick_max']})")
    return replace(cfg, **ticks)


_TICKS = ("heartbeat_tick", "election_tick_min", "election_tick_max")


def node_spec(cfg: NodeConfig, *, kafka_port: int, register_addr: str) -> NodeSpec:
    """The frozen spec of the node `cfg` describes (NodeConfig holds every default; this only
    maps keys). `kafka_port` is the bound Kafka port (advertised unless configured)."""
    from real.kafka.broker import KafkaConfig
    from real.mqtt.broker import BrokerConfig
    from real.mqtt.cluster import ClusterConfig
    from real.raft.types import RaftConfig
    from real.server.controller import ControllerConfig
    from real.server.node import NodeSpec
    from real.server.replication import ReplicationConfig

    mqtt = BrokerConfig(
        node_id=cfg.node_id, max_packet_size=cfg.mqtt_max_packet_size,
        max_connections=cfg.mqtt_max_connections, receive_maximum=cfg.mqtt_receive_maximum,
        max_inflight=cfg.mqtt_max_inflight, max_queued=cfg.mqtt_max_queued,
        queue_policy=cfg.mqtt_queue_policy, queue_qos0=cfg.mqtt_queue_qos0,
        topic_alias_max=cfg.mqtt_topic_alias_max, keep_alive_max=cfg.mqtt_keep_alive_max,
        session_expiry_max=cfg.mqtt_session_expiry_max,
        sys_interval_ms=cfg.mqtt_sys_interval_s * 1000,
        retain_available=cfg.mqtt_retain_available, max_topic_levels=cfg.mqtt_max_topic_levels)
    wildcard = cfg.bind in ("0.0.0.0", "::")
    kafka = KafkaConfig(
        node_id=cfg.node_id,
        host=cfg.kafka_advertised_host or ("127.0.0.1" if wildcard else cfg.bind),
        port=cfg.kafka_advertised_port or kafka_port,
        cluster_id=cfg.kafka_cluster_id, auto_create_topics=cfg.kafka_auto_create_topics,
        default_partitions=cfg.kafka_default_partitions, default_engine=cfg.storage_engine,
        max_request_bytes=cfg.kafka_max_request_bytes,
        max_message_bytes=cfg.kafka_max_message_bytes,
        group_initial_rebalance_delay_ms=cfg.kafka_group_initial_rebalance_delay_ms,
        group_min_session_timeout_ms=cfg.kafka_group_min_session_timeout_ms,
        group_max_session_timeout_ms=cfg.kafka_group_max_session_timeout_ms,
        retention_check_ms=cfg.kafka_retention_check_ms, sasl=cfg.kafka_sasl,
        default_replication_factor=cfg.kafka_default_replication_factor,
        min_insync_replicas=cfg.kafka_min_insync_replicas,
        leader_barrier_ms=cfg.kafka_leader_barrier_ms)
    raft = RaftConfig(election_tick_min=cfg.election_tick_min,
                      election_tick_max=cfg.election_tick_max, heartbeat_tick=cfg.heartbeat_tick)
    voters = tuple(sorted(parse_peers(cfg.cluster_peers))) or (cfg.node_id,)
    return NodeSpec(node_id=cfg.node_id, voters=voters, raft=raft, tick_ms=cfg.tick_ms,
                    snapshot_entries=cfg.snapshot_entries, register_addr=register_addr,
                    mqtt=mqtt, kafka=kafka, bridges=tuple(cfg.bridges),
                    allow_anonymous=cfg.mqtt_allow_anonymous,
                    default_engine=cfg.storage_engine,
                    replication=ReplicationConfig(
                        fetch_wait_ms=cfg.cluster_replica_fetch_wait_ms,
                        fetch_timeout_ms=2 * cfg.cluster_replica_fetch_wait_ms,
                        replica_lag_ms=cfg.cluster_replica_lag_ms,
                        tail_bytes=cfg.cluster_replica_tail_bytes),
                    controller=ControllerConfig(
                        heartbeat_ms=cfg.cluster_heartbeat_ms,
                        session_timeout_ms=cfg.cluster_session_timeout_ms,
                        rebalance_delay_ms=cfg.cluster_rebalance_delay_ms),
                    mqtt_cluster=ClusterConfig(partitions=cfg.mqtt_cluster_partitions,
                                               replication=len(voters))
                    if cfg.mqtt_cluster else None,
                    join=cfg.cluster_join)
