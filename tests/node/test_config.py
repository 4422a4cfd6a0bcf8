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
