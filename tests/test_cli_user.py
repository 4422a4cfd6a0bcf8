"""`twinmq user` (password files, interchangeable with mosquitto_passwd) and `twinmq ctl` (the
admin HTTP client, run against a small canned-JSON http.server standing in for the admin server).
The integration test runs a real mosquitto broker on a file written by `twinmq user add`."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from real.__main__ import main
from real.kafka.sasl import ScramCredential, ScramFile
from real.mqtt.auth import PasswordFile

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_PUB = shutil.which("mosquitto_pub")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def parse(path: Path) -> PasswordFile:
    return PasswordFile.parse(path.read_text(), str(path))


# --- twinmq user -----------------------------------------------------------------------------


def test_add_list_delete(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    status, out, _ = run(capsys, "user", "add", "--file", str(path), "alice", "--password", "s1")
    assert status == 0 and "added user 'alice'" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run(capsys, "user", "add", "--file", str(path), "bob", "--password", "s2")[0] == 0
    status, out, _ = run(capsys, "user", "add", "--file", str(path), "alice", "--password", "s3")
    assert status == 0 and "updated user 'alice'" in out
    pw = parse(path)
    assert pw.users() == ["alice", "bob"]
    assert pw.verify("alice", b"s3") and not pw.verify("alice", b"s1") and pw.verify("bob", b"s2")
    assert path.read_text().startswith("alice:$7$101$")
    status, out, _ = run(capsys, "user", "list", "--file", str(path))
    assert (status, out) == (0, "alice\nbob\n")
    status, out, _ = run(capsys, "user", "delete", "--file", str(path), "alice")
    assert status == 0 and parse(path).users() == ["bob"]
    # no temporary file left; the SCRAM sidecar follows the password file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd", "passwd.scram"]
    assert ScramFile.parse((tmp_path / "passwd.scram").read_text()).users() == ["bob"]


def test_add_and_delete_keep_the_scram_sidecar_in_sync(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    path, side = tmp_path / "passwd", tmp_path / "passwd.scram"
    assert run(capsys, "user", "add", "--file", str(path), "alice", "--password", "s1")[0] == 0
    assert run(capsys, "user", "add", "--file", str(path), "bob", "--password", "s2")[0] == 0
    assert stat.S_IMODE(side.stat().st_mode) == 0o600
    first = ScramFile.parse(side.read_text(), str(side))
    assert first.users() == ["alice", "bob"]
    assert side.read_text().startswith("alice:SCRAM-SHA-256:4096:")
    cred = first.get("alice")
    assert cred is not None and len(cred.salt) == 16 and cred.binding
    # a password change replaces the SCRAM line: new salt and keys, new binding
    assert run(capsys, "user", "add", "--file", str(path), "alice", "--password", "s3")[0] == 0
    second = ScramFile.parse(side.read_text(), str(side))
    new = second.get("alice")
    assert second.users() == ["alice", "bob"] and new is not None
    assert new.salt != cred.salt and new.stored_key != cred.stored_key
    assert new == ScramCredential.derive(b"s3", new.salt, 4096, new.binding)
    # delete removes both lines
    assert run(capsys, "user", "delete", "--file", str(path), "alice")[0] == 0
    assert parse(path).users() == ["bob"]
    assert ScramFile.parse(side.read_text()).users() == ["bob"]
    # a user only left in the sidecar (its password-file line removed by hand) can be deleted
    path.write_text("")
    assert run(capsys, "user", "delete", "--file", str(path), "bob")[0] == 0
    assert ScramFile.parse(side.read_text()).users() == []
    status, _, err = run(capsys, "user", "delete", "--file", str(path), "bob")
    assert status == 1 and "no user 'bob'" in err


def test_a_bad_sidecar_is_reported_and_left_alone(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    path, side = tmp_path / "passwd", tmp_path / "passwd.scram"
    side.write_text("alice:SCRAM-SHA-1:4096:AAAA:AAAA:AAAA\n")
    status, _, err = run(capsys, "user", "add", "--file", str(path), "alice", "--password", "x")
    assert status == 1 and f"{side}: line 1: user 'alice': mechanism 'SCRAM-SHA-1'" in err
    assert not path.exists()  # nothing written when the sidecar cannot be parsed
    assert side.read_text() == "alice:SCRAM-SHA-1:4096:AAAA:AAAA:AAAA\n"


def test_password_from_stdin_is_not_echoed(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "passwd"
    monkeypatch.setattr("sys.stdin", io.StringIO("pipe d secret\nsecond line\n"))
    status, out, err = run(capsys, "user", "add", "--file", str(path), "carol",
                           "--iterations", "1000")
    assert status == 0
    assert "secret" not in out + err
    assert parse(path).verify("carol", b"pipe d secret")
    assert path.read_text().startswith("carol:$7$1000$")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    status, _, err = run(capsys, "user", "add", "--file", str(path), "dave")
    assert status == 2 and "no password on stdin" in err


def test_keeps_comments_and_fixes_mode(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("# managed by hand\n\n")
    path.chmod(0o644)
    assert run(capsys, "user", "add", "--file", str(path), "eve", "--password", "x")[0] == 0
    assert path.read_text().startswith("# managed by hand\n\neve:$7$")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["user", "delete", "--file", "{p}", "zed"], 1, "{p}: no user 'zed'"),
        (["user", "list", "--file", "{d}/absent"], 1, "{d}/absent: no such password file"),
        (["user", "add", "--file", "{p}", "a:b", "--password", "x"], 2, "contains ':'"),
        (["user", "add", "--file", "{p}", "#x", "--password", "x"], 2, "starts with '#'"),
        (["user", "add", "--file", "{p}", "x", "--password", ""], 2, "the password is empty"),
        (["user", "add", "--file", "{p}", "x", "--password", "y", "--iterations", "0"], 2,
         "iterations must be in [1, 1000000]"),
        (["user", "add", "--file", "{d}/no/dir/pw", "x", "--password", "y"], 1, "No such file"),
        (["user", "list", "--file", "{d}/bad"], 1, "{d}/bad: line 1: expected username:hash"),
        (["user", "list"], 2, "the following arguments are required: --file"),
        (["user"], 2, "an action is required (add, delete, list)"),
        (["user", "list", "--file", "{p}", "--verbose"], 2, "unknown argument '--verbose'"),
    ],
)
def test_user_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                     status: int, message: str) -> None:
    (tmp_path / "pw").write_text("bob:$6$AAAA$" + "A" * 86 + "==\n")
    (tmp_path / "bad").write_text("junk\n")
    fill = {"p": str(tmp_path / "pw"), "d": str(tmp_path)}
    got, _, err = run(capsys, *[a.format(**fill) for a in argv])
    assert got == status
    assert message.format(**fill) in err and err.count("\n") == 1


@pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is not installed")
@pytest.mark.parametrize("algorithm", ["sha512-pbkdf2", "sha512"])
def test_mosquitto_passwd_files_verify_and_edit(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path, algorithm: str) -> None:
    assert MOSQUITTO_PASSWD is not None
    path = tmp_path / "passwd"
    for name, password in (("alice", "secret"), ("bob", "p:w d")):
        subprocess.run([MOSQUITTO_PASSWD, "-H", algorithm, *(["-c"] if name == "alice" else []),
                        "-b", str(path), name, password], check=True, capture_output=True)
    pw = parse(path)
    assert pw.users() == ["alice", "bob"]
    assert pw.verify("alice", b"secret") and pw.verify("bob", b"p:w d")
    assert not pw.verify("alice", b"p:w d")
    # twinmq edits the mosquitto file, and mosquitto_passwd can edit the result
    assert run(capsys, "user", "add", "--file", str(path), "carol", "--password", "c")[0] == 0
    subprocess.run([MOSQUITTO_PASSWD, "-D", str(path), "alice"], check=True, capture_output=True)
    pw = parse(path)
    assert pw.users() == ["bob", "carol"] and pw.verify("carol", b"c") and pw.verify("bob",
                                                                                     b"p:w d")


def free_port() -> int:
    from real.node.ports import free_port as pick

    return pick()


@pytest.mark.integration
@pytest.mark.skipif(MOSQUITTO is None or MOSQUITTO_PUB is None, reason="mosquitto not installed")
def test_mosquitto_broker_accepts_a_twinmq_password_file(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    assert MOSQUITTO is not None and MOSQUITTO_PUB is not None
    path = tmp_path / "passwd"
    assert run(capsys, "user", "add", "--file", str(path), "alice", "--password", "s3cret")[0] == 0
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # As root, mosquitto drops to user "mosquitto", which cannot read our 0600 file.
    stay = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{stay}listener {port} 127.0.0.1\nallow_anonymous false\n"
                    f"password_file {path}\n")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until the broker listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert broker.poll() is None, broker.stderr.read() if broker.stderr else ""
                assert time.monotonic() < deadline, "mosquitto did not start listening"
                time.sleep(0.05)  # polling a port that is not open yet, not a synchronisation

        def publish(password: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-V",
                                   "mqttv5", "-u", "alice", "-P", password, "-t", "t", "-m", "x"],
                                  capture_output=True, text=True, timeout=10)

        good, bad = publish("s3cret"), publish("wrong")
        assert good.returncode == 0, good.stderr
        assert bad.returncode != 0 and "ot authori" in bad.stderr + bad.stdout
    finally:
        broker.terminate()
        broker.wait(timeout=10)


# --- twinmq ctl ------------------------------------------------------------------------------

CANNED = {
    "/health": {"status": "ok", "node_id": 1},
    "/node": {"node_id": 1, "listeners": {"mqtt": 1883}},
    "/mqtt/clients": [{"client_id": "c1", "user": "alice"}, {"client_id": "ü/2", "user": None}],
    "/mqtt/sessions": [{"client_id": "c1", "queued": 3}],
    "/mqtt/subscriptions": [{"client_id": "c1", "filter": "a/#", "qos": 1}],
    "/mqtt/topics": [{"topic": "a/b", "messages": 10}],
    "/mqtt/retained": [{"topic": "a/b", "bytes": 5}],
    "/storage": {"engine": "file", "shards": 0},
}
METRICS = "# HELP twinmq_up 1 when up\n# TYPE twinmq_up gauge\ntwinmq_up 1\n"


class AdminStub(BaseHTTPRequestHandler):
    """Serves CANNED as JSON, /metrics as text, the disconnect POST, and 404 {"error"}."""

    seen: list[tuple[str, str]] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.seen.append(("GET", self.path))
        if self.path == "/metrics":
            self._send(200, METRICS.encode(), "text/plain; version=0.0.4")
        elif self.path in CANNED:
            self._send(200, json.dumps(CANNED[self.path]).encode())
        else:
            self._send(404, json.dumps({"error": f"no route {self.path}"}).encode())

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self.seen.append(("POST", self.path))
        if self.path == "/mqtt/clients/c1/disconnect":
            self._send(200, b'{"disconnected": "c1"}')
        else:
            self._send(404, b'{"error": "no client with that id"}')


@pytest.fixture(scope="module")
def admin_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AdminStub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def admin(admin_server: str) -> str:
    """The stub's URL, with its request log cleared."""
    AdminStub.seen = []
    return admin_server


@pytest.mark.parametrize(("command", "path"), [
    ("health", "/health"), ("node", "/node"), ("clients", "/mqtt/clients"),
    ("sessions", "/mqtt/sessions"), ("subscriptions", "/mqtt/subscriptions"),
    ("topics", "/mqtt/topics"), ("retained", "/mqtt/retained"), ("storage", "/storage"),
])
def test_ctl_get_commands_print_json(capsys: pytest.CaptureFixture[str], admin: str,
                                     command: str, path: str) -> None:
    status, out, err = run(capsys, "ctl", "--admin", admin + "/", command)
    assert (status, err) == (0, "")
    assert AdminStub.seen == [("GET", path)]
    assert json.loads(out) == CANNED[path]
    assert out.count("\n") > 1  # pretty: indented over several lines
    status, out, _ = run(capsys, "ctl", "--admin", admin, "--json", command)
    assert status == 0 and out.count("\n") == 1 and json.loads(out) == CANNED[path]


def test_ctl_metrics_printed_as_is(capsys: pytest.CaptureFixture[str], admin: str) -> None:
    status, out, _ = run(capsys, "ctl", "--admin", admin, "metrics")
    assert status == 0 and out == METRICS
    assert AdminStub.seen == [("GET", "/metrics")]


def test_ctl_disconnect_quotes_the_client_id(capsys: pytest.CaptureFixture[str],
                                             admin: str) -> None:
    status, out, _ = run(capsys, "ctl", "--admin", admin, "disconnect", "c1")
    assert status == 0 and json.loads(out) == {"disconnected": "c1"}
    status, _, err = run(capsys, "ctl", "--admin", admin, "disconnect", "dev/7 ü?")
    assert status == 1
    assert AdminStub.seen[-1] == ("POST", "/mqtt/clients/dev%2F7%20%C3%BC%3F/disconnect")
    assert "HTTP 404: no client with that id" in err and err.count("\n") == 1


def test_ctl_404_prints_the_server_error(capsys: pytest.CaptureFixture[str], admin: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("real.node.ctl").node.ctl.CTL_PATHS, "node", "/gone")
    status, out, err = run(capsys, "ctl", "--admin", admin, "node")
    assert (status, out) == (1, "")
    assert err == f"twinmq: error: GET {admin}/gone: HTTP 404: no route /gone\n"


def test_ctl_unreachable_names_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    status, out, err = run(capsys, "ctl", "--admin", url, "health")
    assert (status, out) == (1, "")
    assert err.startswith(f"twinmq: error: cannot reach the admin server at {url}/health: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ctl", "disconnect"], "ctl disconnect needs a CLIENT_ID"),
        (["ctl", "health", "extra"], "ctl health takes no argument, got 'extra'"),
        (["ctl", "helth"], "invalid choice: 'helth'"),
        (["ctl", "--admin", "127.0.0.1:8080", "health"], "--admin must be an http(s)://host:port"),
    ],
)
def test_ctl_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                          message: str) -> None:
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert message in err

