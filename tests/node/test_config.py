"""NodeConfig: defaults < file < flags, and rejection messages that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from real.node.config import ConfigError, NodeConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    cfg = load_config()
    assert cfg == NodeConfig()
    assert (cfg.node_id, cfg.data_dir, cfg.bind) == (1, Path("./data"), "127.0.0.1")
    assert (cfg.mqtt_port, cfg.kafka_port, cfg.admin_port) == (1883, 9092, 8080)
    assert cfg.storage_engine == "file" and cfg.tick_ms == 10


def test_file_values(tmp_path: Path) -> None:
    path = write(tmp_path, """
node_id = 3
data_dir = "/var/lib/twinmq"
[listeners]
admin_port = 9000
mqtt_port = 0
[storage]
engine = "rocksdb"
[raft]
tick_ms = 5
election_tick_min = 20
election_tick_max = 40
snapshot_entries = 50
""")
    cfg = load_config(path)
    assert cfg.node_id == 3 and cfg.data_dir == Path("/var/lib/twinmq")
    assert cfg.admin_port == 9000 and cfg.mqtt_port == 0 and cfg.kafka_port == 9092
    assert cfg.storage_engine == "rocksdb" and cfg.tick_ms == 5
    assert (cfg.election_tick_min, cfg.election_tick_max, cfg.snapshot_entries) == (20, 40, 50)


def test_flags_override_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[listeners]\nadmin_port = 9000\nkafka_port = 9093\n")
    cfg = load_config(path, {"admin_port": 9001, "data_dir": "d", "storage_engine": "s3"})
    assert cfg.admin_port == 9001 and cfg.kafka_port == 9093
    assert cfg.data_dir == Path("d") and cfg.storage_engine == "s3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[listeners]\nadmin_prot = 1\n", "unknown key 'listeners.admin_prot' (known: node_id,"),
        ("nodeid = 1\n", "unknown key 'nodeid'"),
        ("[extra]\nx = 1\n", "unknown key 'extra'"),
        ("node_id = '1'\n", "key 'node_id' must be an integer, got str '1'"),
        ("node_id = true\n", "key 'node_id' must be an integer, got bool True"),
        ("node_id = 0\n", "key 'node_id' must be in [1,"),
        ("data_dir = 5\n", "key 'data_dir' must be a string, got int 5"),
        ("[listeners]\nadmin_port = 70000\n", "key 'listeners.admin_port' must be in [0, 65535]"),
        ("[storage]\nengine = 'tape'\n", "key 'storage.engine' must be one of memory, file,"),
        ("listeners = 5\n", "key 'listeners' must be a table [listeners], got int"),
        ("[raft]\nheartbeat_tick = 10\n", "raft.heartbeat_tick (10) must be below"),
        ("[raft]\nelection_tick_max = 5\n", "must not exceed raft.election_tick_max (5)"),
        ("node_id = \n", "invalid TOML"),
    ],
)
def test_bad_file_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: "), info.value
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_bad_override_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"command line: --admin-port must be in \[0, 65535\]"):
        load_config(None, {"admin_port": 70000}, flag_names={"admin_port": "--admin-port"})
    with pytest.raises(ConfigError, match="command line: --storage must be one of"):
        load_config(None, {"storage_engine": "tape"}, flag_names={"storage_engine": "--storage"})


# ---- [cluster]: peers and the shared secret ----------------------------------------------------


def test_peers_make_the_meta_voters_and_need_a_secret(tmp_path: Path) -> None:
    from real.node.config import node_spec, parse_peers

    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef\n")
    peers = "1=127.0.0.1:7001, 2=127.0.0.1:7002,3=[::1]:7003"
    assert parse_peers(peers) == {1: ("127.0.0.1", 7001), 2: ("127.0.0.1", 7002),
                                  3: ("::1", 7003)}
    cfg = load_config(None, {"node_id": 2, "cluster_peers": peers,
                             "cluster_secret_file": str(secret)})
    spec = node_spec(cfg, kafka_port=9092, register_addr="x")
    assert spec.voters == (1, 2, 3) and spec.node_id == 2
    single = node_spec(load_config(None, {}), kafka_port=9092, register_addr="x")
    assert single.voters == (1,)
    joiner = node_spec(load_config(None, {"node_id": 4, "cluster_join": True,
                                           "cluster_peers": peers + ",4=h:7004",
                                           "cluster_secret_file": str(secret)}),
                       kafka_port=9092, register_addr="x")
    assert joiner.join and joiner.node_id == 4
    assert spec.mqtt_cluster is None
    on = node_spec(load_config(None, {"node_id": 2, "cluster_peers": peers, "mqtt_cluster": True,
                                      "mqtt_cluster_partitions": 6,
                                      "cluster_secret_file": str(secret)}),
                   kafka_port=9092, register_addr="x")
    assert on.mqtt_cluster is not None
    assert (on.mqtt_cluster.partitions, on.mqtt_cluster.replication) == (6, 3)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"cluster_peers": "1=h:7001,2"}, "entry '2' is not id=host:port"),
    ({"cluster_peers": "1=h:7001,1=h:7002"}, "node 1 listed twice"),
    ({"cluster_peers": "1=h:70001"}, "out of range"),
    ({"cluster_peers": "2=h:7002,3=h:7003"}, "node_id 1 is not among the peers [2, 3]"),
    ({"cluster_peers": "1=h:7001,2=h:7002"}, "needs cluster.secret_file"),
    ({"cluster_peers": "1=h:1883,2=h:7002", "cluster_secret_file": "S"},
     "raft port 1883 is also listeners.mqtt_port"),
    ({"cluster_join": True}, "cluster_join: a joining node needs cluster.peers"),
    ({"cluster_join": True, "cluster_peers": "1=h:7001"}, "a joining node needs"),
    ({"mqtt_cluster": True}, "mqtt_cluster: MQTT across the cluster needs a cluster"),
    ({"mqtt_cluster": True, "cluster_peers": "1=h:7001"}, "needs a cluster"),
])
def test_bad_cluster_settings_name_the_key(tmp_path: Path, overrides: dict,
                                           message: str) -> None:
    if overrides.get("cluster_secret_file") == "S":
        secret = tmp_path / "s"
        secret.write_text("0123456789abcdef")
        overrides = {**overrides, "cluster_secret_file": str(secret)}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, overrides, flag_names={"cluster_peers": "--peers"})


def test_a_short_or_missing_secret_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("too-short\n")
    peers = "1=h:7001,2=h:7002"
    with pytest.raises(ConfigError, match="at least 16 bytes, has 9"):
        load_config(None, {"cluster_peers": peers, "cluster_secret_file": str(short)})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(None, {"cluster_peers": peers,
                           "cluster_secret_file": str(tmp_path / "absent")})
