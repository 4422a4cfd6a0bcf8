"""Operator tools behind `twinmq user ...` and `twinmq ctl ...` (the I/O side; the formats live in
the pure `real.mqtt.auth`).

Password files (`twinmq user add|delete|list --file PATH`)
    The file is Mosquitto's `mosquitto_passwd` format (see `real.mqtt.auth`), so a file written
    here works with mosquitto and the other way round. `add` hashes with PBKDF2-SHA512 (`$7$`),
    a fresh 12-byte salt from `os.urandom` and 101 iterations unless told otherwise, and replaces
    the user's line if it exists. Every change is written atomically: a temporary file in the
    same directory, fsync, rename over the old file, fsync of the directory; the file's mode is
    0600. Comments and blank lines are kept. Two concurrent writers are not locked out: the last
    rename wins.

    Kafka SCRAM-SHA-256 sidecar (`<file>.scram`, format in `real.kafka.sasl`): `add` also writes
    the user's SCRAM credentials there (4096 iterations, a fresh 16-byte salt, bound to the new
    password-file entry) and `delete` removes them. Order of the atomic writes, so that a crash
    never leaves a SCRAM line that accepts a password the password file no longer does: `add`
    first drops the user's old SCRAM line (if any), then writes the password file, then the new
    SCRAM line; `delete` drops the SCRAM line before the password-file entry. A crash in between
    leaves the user without SCRAM (PLAIN still works); rerunning the command repairs it. A user
    added with `mosquitto_passwd` alone has no SCRAM line: SCRAM fails for them, PLAIN works.

Admin client (`twinmq ctl [--admin URL | --cluster DIR] COMMAND`)
    One HTTP request to a node's admin server with urllib: GET for the read commands (see
    `CTL_PATHS`), POST `/mqtt/clients/<url-quoted id>/disconnect` for `disconnect`. A JSON answer
    is printed indented (compact with `--json`); `/metrics` (Prometheus text) is printed as it
    arrives. Proxy settings in the environment are ignored. Exit status: 0 on a 2xx answer; 1
    when the node cannot be reached (one line naming the URL) or answers with an HTTP error (the
    line carries the server's `error` message); 2 for a usage error. With `--cluster DIR` (a
    cluster `twinmq cluster up` started there) the command goes to every node: see
    `run_ctl_cluster`.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from real.kafka.sasl import (
    SCRAM_ITERATIONS_DEFAULT,
    SCRAM_SALT_BYTES,
    ScramCredential,
    ScramFile,
    hash_binding,
    scram_path,
)
from real.mqtt.auth import (
    ITERATIONS_DEFAULT,
    AuthConfigError,
    PasswordFile,
    hash_password,
    username_problem,
)

SALT_BYTES = 12  # what mosquitto_passwd uses
PASSWORD_BYTES_MAX = 65_535  # an MQTT password is Binary Data with a two-byte length
RESPONSE_BYTES_MAX = 64 << 20
CTL_PATHS = {
    "health": "/health",
    "node": "/node",
    "clients": "/mqtt/clients",
    "sessions": "/mqtt/sessions",
    "subscriptions": "/mqtt/subscriptions",
    "topics": "/mqtt/topics",
    "retained": "/mqtt/retained",
    "metrics": "/metrics",
    "storage": "/storage",
}
CTL_COMMANDS = (*CTL_PATHS, "disconnect")
DEFAULT_ADMIN = "http://127.0.0.1:8080"
# The admin API is reached directly: an http_proxy from the environment would otherwise catch
# requests meant for a node on this host or network.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CtlError(Exception):
    """A failure to report as one line; `status` is the exit status (1: runtime, 2: usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# --- password files --------------------------------------------------------------------------


def read_password_file(path: Path, *, missing_ok: bool) -> PasswordFile:
    """Parse the file at `path`; an absent file is empty when `missing_ok`, else CtlError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return PasswordFile.parse("", str(path))
        raise CtlError(f"{path}: no such password file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CtlError(f"{path}: cannot read: {exc}") from None
    try:
        return PasswordFile.parse(text, str(path))
    except AuthConfigError as exc:
        raise CtlError(str(exc)) from None


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text` so that a crash leaves the old or the new file, never a mix."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_password_input(stdin: IO[str]) -> bytes:
    """The password for `user add` without --password: a prompt without echo on a terminal,
    else one line of stdin (for scripts; the line ending is dropped)."""
    if stdin.isatty():
        line = getpass.getpass("Password: ", stream=None)
    else:
        line = stdin.readline()
        if not line:
            raise CtlError("no password on stdin (give --password or pipe one line)", 2)
        line = line.removesuffix("\n").removesuffix("\r")
    return line.encode("utf-8")


def read_scram_file(path: Path) -> ScramFile:
    """Parse the SCRAM sidecar at `path`; an absent file is empty. CtlError on a bad file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ScramFile.parse("", str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise CtlError(f"{path}: cannot read: {exc}") from None
    try:
        return ScramFile.parse(text, str(path))
    except AuthConfigError as exc:
        raise CtlError(str(exc)) from None


def sidecar(path: Path) -> Path:
    """The SCRAM sidecar of password file `path` (`<path>.scram`)."""
    return Path(scram_path(str(path)))


def user_add(path: Path, username: str, password: bytes, iterations: int = ITERATIONS_DEFAULT,
             salt: bytes | None = None, scram_salt: bytes | None = None) -> bool:
    """Add `username` or replace its password, in the password file and its SCRAM sidecar;
    True if the user is new to the password file."""
    problem = username_problem(username)
    if problem is not None:
        raise CtlError(problem, 2)
    if not password:
        raise CtlError("the password is empty", 2)
    if len(password) > PASSWORD_BYTES_MAX:
        raise CtlError(f"the password is {len(password)} bytes, more than MQTT's "
                       f"{PASSWORD_BYTES_MAX}", 2)
    current = read_password_file(path, missing_ok=True)
    scram = read_scram_file(sidecar(path))
    try:
        entry = hash_password(password, salt or os.urandom(SALT_BYTES), iterations)
    except ValueError as exc:
        raise CtlError(str(exc), 2) from None
    credential = ScramCredential.derive(password, scram_salt or os.urandom(SCRAM_SALT_BYTES),
                                        SCRAM_ITERATIONS_DEFAULT, hash_binding(entry))
    updated = current.with_user(username, entry)
    if username in scram:  # never let the old SCRAM line outlive the old password
        write_atomic(sidecar(path), scram.without_user(username).render())
    write_atomic(path, updated.render())
    write_atomic(sidecar(path), scram.with_user(username, credential).render())  # line in place
    assert updated.verify(username, password)
    return username not in current


def user_delete(path: Path, username: str) -> None:
    """Remove `username` from the SCRAM sidecar, then from the password file."""
    current = read_password_file(path, missing_ok=False)
    scram = read_scram_file(sidecar(path))
    if username not in current and username not in scram:
        raise CtlError(f"{path}: no user {username!r}")
    if username in scram:
        write_atomic(sidecar(path), scram.without_user(username).render())
    if username in current:
        write_atomic(path, current.without_user(username).render())


def user_list(path: Path) -> list[str]:
    return read_password_file(path, missing_ok=False).users()


# --- admin client ----------------------------------------------------------------------------


def ctl_request(command: str, client_id: str | None) -> tuple[str, str]:
    """(HTTP method, path) for a ctl command."""
    if command == "disconnect":
        if not client_id:
            raise CtlError("ctl disconnect needs a CLIENT_ID", 2)
        return "POST", f"/mqtt/clients/{urllib.parse.quote(client_id, safe='')}/disconnect"
    if client_id is not None:
        raise CtlError(f"ctl {command} takes no argument, got {client_id!r}", 2)
    assert command in CTL_PATHS, command
    return "GET", CTL_PATHS[command]


def admin_base(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CtlError(f"--admin must be an http(s)://host:port URL, got {url!r}", 2)
    return url.rstrip("/")


def run_ctl(admin: str, command: str, client_id: str | None, *, compact: bool,
            timeout: float, out: Callable[[str], None]) -> None:
    """Do one ctl command and hand the text to print to `out`; raise CtlError on failure."""
    method, path = ctl_request(command, client_id)
    url = admin_base(admin) + path
    try:
        body = _fetch(method, url, timeout)
    except urllib.error.HTTPError as exc:
        raise CtlError(f"{method} {url}: HTTP {exc.code}: {_server_error(exc)}") from None
    out(_render(body, raw=command == "metrics", compact=compact))


def cluster_admins(work: Path) -> list[tuple[int, str]]:
    """(node id, admin URL) of every node `twinmq cluster` started in `work` (not those that
    left), from its cluster.json."""
    try:
        info = json.loads((work / "cluster.json").read_text())
    except OSError as exc:
        raise CtlError(f"--cluster {work}: no cluster.json there ({exc.strerror or exc})",
                       2) from None
    except ValueError as exc:
        raise CtlError(f"--cluster {work}: cluster.json is not JSON ({exc})", 2) from None
    return [(int(n["id"]), f"http://{n.get('host', '127.0.0.1')}:{n['admin']}")
            for n in info.get("nodes", [])]


def run_ctl_cluster(work: Path, command: str, client_id: str | None, *, compact: bool,
                    timeout: float, out: Callable[[str], None]) -> None:
    """The command on every node of the cluster in `work`, one answer per node.

    Read commands print one JSON object, `{"nodes": {"<id>": answer}, "unreachable": {"<id>":
    reason}}` (`metrics` prints each node's exposition after a `# node <id>` comment line);
    CtlError (status 1) after printing if a node did not answer. `disconnect` asks every node
    and succeeds if one had the client connected (the others answer 404)."""
    method, path = ctl_request(command, client_id)
    admins = cluster_admins(work)
    answers: dict[str, object] = {}
    texts: list[str] = []
    failed: dict[str, str] = {}
    missing = 0
    for node_id, admin in admins:
        url = admin_base(admin) + path
        try:
            body = _fetch(method, url, timeout)
        except urllib.error.HTTPError as exc:
            if command == "disconnect" and exc.code == 404:
                missing += 1
                exc.close()
                continue
            failed[str(node_id)] = f"HTTP {exc.code}: {_server_error(exc)}"
            continue
        except CtlError as exc:
            failed[str(node_id)] = str(exc)
            continue
        if command == "metrics":
            texts.append(f"# node {node_id} ({admin})\n" + _render(body, raw=True,
                                                                    compact=compact))
        else:
            text = body.decode("utf-8", errors="replace")
            try:
                answers[str(node_id)] = json.loads(text) if text.strip() else None
            except ValueError:
                answers[str(node_id)] = text
    if command == "disconnect":
        if answers:
            out(_dump({"disconnected_on": sorted(answers, key=int)}, compact))
        if failed:
            raise CtlError(f"disconnect {client_id!r}: " + "; ".join(
                f"node {n}: {why}" for n, why in sorted(failed.items())))
        if not answers:
            raise CtlError(f"disconnect {client_id!r}: not connected on any of the "
                           f"{missing} node(s)")
        return
    if command == "metrics":
        out("\n".join(texts))
    else:
        out(_dump({"nodes": answers, "unreachable": failed}, compact))
    if failed:
        raise CtlError(f"{len(failed)} of {len(admins)} node(s) did not answer: "
                       + ", ".join(sorted(failed, key=int)))


def _fetch(method: str, url: str, timeout: float) -> bytes:
    """One request; HTTPError passes through, the rest becomes CtlError."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                     headers={"Accept": "application/json, text/plain"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body = bytes(response.read(RESPONSE_BYTES_MAX + 1))
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise CtlError(f"cannot reach the admin server at {url}: {reason}") from None
    if len(body) > RESPONSE_BYTES_MAX:
        raise CtlError(f"{method} {url}: answer larger than {RESPONSE_BYTES_MAX} bytes")
    return body


def _dump(doc: object, compact: bool) -> str:
    if compact:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _server_error(exc: urllib.error.HTTPError) -> str:
    """The server's error message: the `error` field of a JSON body, else the body text."""
    try:
        body = exc.read(64 << 10).decode("utf-8", errors="replace")
    except OSError:
        body = ""
    finally:
        exc.close()
    try:
        doc = json.loads(body)
    except ValueError:
        return body.strip() or exc.reason
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])
    return body.strip()


def _render(body: bytes, *, raw: bool, compact: bool) -> str:
    text = body.decode("utf-8", errors="replace")
    if raw:
        return text.removesuffix("\n")
    try:
        doc = json.loads(text)
    except ValueError:
        return text.removesuffix("\n")  # not JSON: show what the server said
    return _dump(doc, compact)
