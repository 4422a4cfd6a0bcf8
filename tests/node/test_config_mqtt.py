"""The MQTT-related node config: listener ports, [tls], [mqtt]; their flags; the checks that span
keys (distinct ports, TLS files, password and ACL files that must exist and parse)."""

from __future__ import annotations

from pathlib import Path

import pytest

from real.__main__ import SERVE_FLAGS, main
from real.mqtt.auth import Acl, PasswordFile, hash_password
from real.node.config import ConfigError, NodeConfig, load_acl, load_config, load_passwords

FLAG_NAMES = {field: flag for flag, (field, _) in SERVE_FLAGS.items()}
GOOD_ACL = 'default = "deny"\n[[rule]]\npermission = "allow"\naction = "all"\ntopic = "a/#"\n'


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    cfg = load_config()
    assert (cfg.ws_port, cfg.mqtts_port, cfg.wss_port) == (8083, 0, 0)
    assert (cfg.tls_cert_file, cfg.tls_key_file) == ("", "")
    assert cfg.mqtt_allow_anonymous == "auto"
    assert (cfg.mqtt_password_file, cfg.mqtt_acl_file) == ("", "")
    assert (cfg.mqtt_max_packet_size, cfg.mqtt_max_connections) == (1048576, 100000)
    assert (cfg.mqtt_receive_maximum, cfg.mqtt_max_inflight, cfg.mqtt_max_queued) == (1024, 64,
                                                                                       1000)
    assert (cfg.mqtt_queue_policy, cfg.mqtt_queue_qos0) == ("drop-new", False)
    assert (cfg.mqtt_topic_alias_max, cfg.mqtt_keep_alive_max) == (16, 0)
    assert (cfg.mqtt_session_expiry_max, cfg.mqtt_sys_interval_s) == (4294967295, 10)
    assert (cfg.mqtt_retain_available, cfg.mqtt_max_topic_levels) == (True, 128)
    assert cfg.mqtt_ws_path == "/mqtt"
    assert load_passwords(cfg) is None and load_acl(cfg) == Acl.allow_all()


def test_every_mqtt_key_from_file(tmp_path: Path) -> None:
    cert = write(tmp_path, "CERT", "cert.pem")
    key = write(tmp_path, "KEY", "key.pem")
    pw = write(tmp_path, f"alice:{hash_password(b'pw', b'salt')}\n", "passwd")
    acl = write(tmp_path, GOOD_ACL, "acl.toml")
    path = write(tmp_path, f"""
[listeners]
ws_port = 0
mqtts_port = 8883
wss_port = 8084
[tls]
cert_file = "{cert}"
key_file = "{key}"
[mqtt]
allow_anonymous = false
password_file = "{pw}"
acl_file = "{acl}"
max_packet_size = 64
max_connections = 1
receive_maximum = 65535
max_inflight = 1
max_queued = 0
queue_policy = "drop-oldest"
queue_qos0 = true
topic_alias_max = 0
keep_alive_max = 65535
session_expiry_max = 0
sys_interval_s = 0
retain_available = false
max_topic_levels = 1
ws_path = "/ws/mqtt"
""")
    cfg = load_config(path)
    assert (cfg.ws_port, cfg.mqtts_port, cfg.wss_port) == (0, 8883, 8084)
    assert (cfg.tls_cert_file, cfg.tls_key_file) == (str(cert), str(key))
    assert cfg.mqtt_allow_anonymous is False
    assert (cfg.mqtt_max_packet_size, cfg.mqtt_max_connections, cfg.mqtt_receive_maximum) == (
        64, 1, 65535)
    assert (cfg.mqtt_max_inflight, cfg.mqtt_max_queued, cfg.mqtt_queue_policy) == (
        1, 0, "drop-oldest")
    assert cfg.mqtt_queue_qos0 is True and cfg.mqtt_retain_available is False
    assert (cfg.mqtt_topic_alias_max, cfg.mqtt_keep_alive_max, cfg.mqtt_session_expiry_max) == (
        0, 65535, 0)
    assert (cfg.mqtt_sys_interval_s, cfg.mqtt_max_topic_levels, cfg.mqtt_ws_path) == (
        0, 1, "/ws/mqtt")
    passwords = load_passwords(cfg)
    assert isinstance(passwords, PasswordFile) and passwords.verify("alice", b"pw")
    assert load_acl(cfg).check_publish(None, "c", "a/b")
    assert not load_acl(cfg).check_publish(None, "c", "b")


@pytest.mark.parametrize("value", ['"auto"', "true", "false"])
def test_allow_anonymous_values(tmp_path: Path, value: str) -> None:
    cfg = load_config(write(tmp_path, f"[mqtt]\nallow_anonymous = {value}\n"))
    assert cfg.mqtt_allow_anonymous == {'"auto"': "auto", "true": True, "false": False}[value]
    assert type(cfg.mqtt_allow_anonymous) is (str if value == '"auto"' else bool)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[mqtt]\nallow_anonymous = 'yes'\n", "key 'mqtt.allow_anonymous' must be \"auto\", true"),
        ("[mqtt]\nallow_anonymous = 1\n", "key 'mqtt.allow_anonymous' must be a string or a boo"),
        ("[mqtt]\nmax_packet_size = 63\n", "key 'mqtt.max_packet_size' must be in [64, 268435455]"),
        ("[mqtt]\nmax_packet_size = 268435456\n", "key 'mqtt.max_packet_size' must be in"),
        ("[mqtt]\nmax_connections = 0\n", "key 'mqtt.max_connections' must be in [1,"),
        ("[mqtt]\nreceive_maximum = 0\n", "key 'mqtt.receive_maximum' must be in [1, 65535]"),
        ("[mqtt]\nreceive_maximum = 65536\n", "key 'mqtt.receive_maximum' must be in [1, 65535]"),
        ("[mqtt]\nmax_inflight = 0\n", "key 'mqtt.max_inflight' must be in [1, 65535]"),
        ("[mqtt]\nmax_queued = -1\n", "key 'mqtt.max_queued' must be in [0,"),
        ("[mqtt]\nqueue_policy = 'drop'\n", "key 'mqtt.queue_policy' must be one of drop-new, dr"),
        ("[mqtt]\nqueue_qos0 = 1\n", "key 'mqtt.queue_qos0' must be a boolean, got int 1"),
        ("[mqtt]\nretain_available = 'yes'\n", "key 'mqtt.retain_available' must be a boolean"),
        ("[mqtt]\ntopic_alias_max = 65536\n", "key 'mqtt.topic_alias_max' must be in [0, 65535]"),
        ("[mqtt]\nkeep_alive_max = -1\n", "key 'mqtt.keep_alive_max' must be in [0, 65535]"),
        ("[mqtt]\nsession_expiry_max = 4294967296\n", "key 'mqtt.session_expiry_max' must be in"),
        ("[mqtt]\nsys_interval_s = -1\n", "key 'mqtt.sys_interval_s' must be in [0,"),
        ("[mqtt]\nmax_topic_levels = 0\n", "key 'mqtt.max_topic_levels' must be in [1, 200]"),
        ("[mqtt]\nmax_topic_levels = 201\n", "key 'mqtt.max_topic_levels' must be in [1, 200]"),
        ("[mqtt]\nws_path = 'mqtt'\n", "key 'mqtt.ws_path' must be an HTTP path starting with"),
        ("[mqtt]\nws_path = '/a b'\n", "key 'mqtt.ws_path' must be an HTTP path"),
        ("[mqtt]\nmax_packet = 5\n", "unknown key 'mqtt.max_packet' (known:"),
        ("[listeners]\nws_port = 65536\n", "key 'listeners.ws_port' must be in [0, 65535]"),
        ("[tls]\ncert = 'x'\n", "unknown key 'tls.cert'"),
        ("tls = 'x'\n", "key 'tls' must be a table [tls]"),
        ("[listeners]\nws_port = 1883\n",
         "listeners.mqtt_port and listeners.ws_port are both 1883; listener ports must differ"),
        ("[listeners]\nmqtts_port = 8080\n", "listeners.admin_port and listeners.mqtts_port are"),
        ("[listeners]\nmqtts_port = 8883\n", "tls.cert_file is required when listeners.mqtts_port"),
        ("[listeners]\nwss_port = 8084\n[tls]\ncert_file = 'c'\n",
         "tls.key_file is required when listeners.wss_port is on (8084)"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_zero_ports_may_repeat() -> None:
    cfg = load_config(None, {"mqtt_port": 0, "kafka_port": 0, "ws_port": 0, "admin_port": 0})
    assert (cfg.mqtt_port, cfg.kafka_port, cfg.ws_port, cfg.admin_port) == (0, 0, 0, 0)
    with pytest.raises(ConfigError, match="listeners.kafka_port and listeners.wss_port are both"):
        load_config(None, {"kafka_port": 7000, "wss_port": 7000, "tls_cert_file": "x"})


def test_files_must_exist_and_parse(tmp_path: Path) -> None:
    cert = write(tmp_path, "CERT", "cert.pem")
    missing = tmp_path / "nope.pem"
    path = write(tmp_path, f'[listeners]\nmqtts_port = 8883\n[tls]\ncert_file = "{cert}"\n'
                           f'key_file = "{missing}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: key 'tls.key_file' '{missing}': no such file"
    bad_pw = write(tmp_path, "# ok\nalice:$7$nope\n", "passwd")
    path = write(tmp_path, f'[mqtt]\npassword_file = "{bad_pw}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: key 'mqtt.password_file': {bad_pw}: line 2: ")
    bad_acl = write(tmp_path, GOOD_ACL + "[[rule]]\npermission = 'allow'\n", "acl.toml")
    path = write(tmp_path, f'[mqtt]\nacl_file = "{bad_acl}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: key 'mqtt.acl_file': {bad_acl}: rule 2: ")
    assert "key 'action' is required" in str(info.value)
    path = write(tmp_path, f'[mqtt]\nacl_file = "{missing}"\n')
    with pytest.raises(ConfigError, match="key 'mqtt.acl_file' .*nope.pem': cannot read: No such"):
        load_config(path)


def test_flags_reach_the_config(tmp_path: Path) -> None:
    acl = write(tmp_path, GOOD_ACL, "acl.toml")
    overrides = {"ws_port": 0, "mqtt_allow_anonymous": True, "mqtt_acl_file": str(acl)}
    cfg = load_config(None, overrides, flag_names=FLAG_NAMES)
    assert cfg == NodeConfig(ws_port=0, mqtt_allow_anonymous=True, mqtt_acl_file=str(acl))
    with pytest.raises(ConfigError, match="command line: --password-file '/nonexistent/pw': "
                                          "cannot read"):
        load_config(None, {"mqtt_password_file": "/nonexistent/pw"}, flag_names=FLAG_NAMES)
    with pytest.raises(ConfigError, match=r"command line: --ws-port must be in \[0, 65535\]"):
        load_config(None, {"ws_port": -1}, flag_names=FLAG_NAMES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--password-file", "/nonexistent/pw"], "command line: --password-file '/nonexistent/pw"),
        (["--acl-file", "/nonexistent/acl"], "command line: --acl-file '/nonexistent/acl'"),
        (["--allow-anonymous", "maybe"], "argument --allow-anonymous: must be auto, true or fal"),
        (["--mqtts-port", "8883"], "tls.cert_file is required when listeners.mqtts_port is on"),
        (["--wss-port", "8084", "--tls-cert", "/nonexistent/c", "--tls-key", "/nonexistent/k"],
         "command line: --tls-cert '/nonexistent/c': no such file"),
        (["--ws-port", "9092"], "listeners.kafka_port and listeners.ws_port are both 9092"),
        (["--ws-port", "x"], "argument --ws-port: invalid int value: 'x'"),
    ],
)
def test_serve_flags_fail_fast(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                               argv: list[str], message: str) -> None:
    status = main(["serve", "--data-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.count("\n") == 1
