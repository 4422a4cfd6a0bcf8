"""SASL PLAIN and SCRAM-SHA-256 for the Kafka listener (`real.kafka.sasl`).

The SCRAM client here is written from RFC 5802 section 3 (independently of the server code), and
checked against the RFC 7677 test vector before it is used against the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.__main__ import main
from real.kafka import api, errors
from real.kafka.sasl import (
    FAILED_MESSAGE,
    MECHANISMS,
    TOKEN_BYTES_MAX,
    SaslServer,
    SaslState,
    SaslStep,
    SaslUsers,
    ScramCredential,
    ScramFile,
    authenticate_response,
    handshake_response,
    hash_binding,
    raw_token_frame,
    scram_path,
)
from real.mqtt.auth import AuthConfigError, PasswordFile, hash_password

# RFC 7677 section 3 test vector
RFC_USER, RFC_PASSWORD = "user", b"pencil"
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
SALT = b"0123456789ab"  # fixed salts keep the tests deterministic


class ScramClient:
    """A SCRAM-SHA-256 client per RFC 5802 section 3."""

    def __init__(self, username: str, password: bytes, nonce: str, gs2: str = "n,,") -> None:
        self.username, self.password, self.nonce, self.gs2 = username, password, nonce, gs2
        self.bare = f"n={username.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes, nonce: str | None = None,
              channel: str | None = None) -> bytes:
        fields = dict(item.split("=", 1) for item in server_first.decode().split(","))
        assert fields["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(fields["s"]),
                                     int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        channel = channel if channel is not None else base64.b64encode(self.gs2.encode()).decode()
        without_proof = f"c={channel},r={nonce if nonce is not None else fields['r']}"
        auth = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored_key, auth, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def make_users(entries: dict[str, bytes], scram: bool = True, bound: bool = True) -> SaslUsers:
    """A password file and (optionally) a SCRAM sidecar with these users."""
    passwords = PasswordFile.parse("")
    scram_file = ScramFile.parse("")
    for user, password in entries.items():
        entry = hash_password(password, SALT)
        passwords = passwords.with_user(user, entry)
        binding = hash_binding(entry) if bound else b""
        scram_file = scram_file.with_user(user, ScramCredential.derive(password, SALT,
                                                                       binding=binding))
    return SaslUsers(passwords, scram_file if scram else None)


USERS = make_users({"alice": b"wonderland", "a,b=c": b"p\xc3\xa4ss"})


def server(users: SaslUsers = USERS, mechanism: str = "PLAIN", version: int = 1,
           nonce: str = "SERVERnonce") -> SaslServer:
    s = SaslServer(users, lambda: nonce, mock_secret=b"node-secret")
    assert s.start(mechanism, version) == errors.NONE
    assert s.state is not SaslState.HANDSHAKE and s.mechanism == mechanism
    return s


def assert_failed(step: SaslStep, s: SaslServer, message: str = FAILED_MESSAGE,
                  code: int = errors.SASL_AUTHENTICATION_FAILED) -> None:
    assert step == SaslStep(code, b"", True, None, step.error_message)
    assert step.error_message is not None and message in step.error_message
    assert s.state is SaslState.FAILED and s.failure and s.username is None
    assert not s.permits(api.METADATA) and not s.permits(api.SASL_AUTHENTICATE)


# --- PLAIN ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [b"\x00alice\x00wonderland", b"alice\x00alice\x00wonderland"])
def test_plain_ok(token: bytes) -> None:
    s = server()
    assert s.permits(api.SASL_AUTHENTICATE) and not s.permits(api.METADATA)
    step = s.step(token)
    assert step == SaslStep(errors.NONE, b"", True, "alice", None)
    assert s.authenticated and s.username == "alice" and s.failure is None
    assert s.permits(api.METADATA) and s.permits(api.PRODUCE)


def test_plain_non_ascii_user_and_password() -> None:
    s = server()
    assert s.step("\x00a,b=c\x00päss".encode()).username == "a,b=c"


@pytest.mark.parametrize(("token", "message"), [
    (b"\x00alice\x00wrong", FAILED_MESSAGE),
    (b"\x00alice\x00wonderlan", FAILED_MESSAGE),
    (b"\x00mallory\x00wonderland", FAILED_MESSAGE),  # unknown user: same answer
    (b"bob\x00alice\x00wonderland", "authorization identity must be empty or equal"),
    (b"alice\x00wonderland", "expected authzid NUL authcid NUL passwd"),
    (b"\x00alice\x00wonder\x00land", "expected authzid NUL authcid NUL passwd"),
    (b"", "expected authzid NUL authcid NUL passwd"),
    (b"\x00\x00wonderland", "empty username or password"),
    (b"\x00alice\x00", "empty username or password"),
    (b"\x00al\xffice\x00wonderland", "identity is not UTF-8"),
    (b"\x00alice\x00" + b"x" * TOKEN_BYTES_MAX, "SASL token too large"),
])
def test_plain_refused(token: bytes, message: str) -> None:
    s = server()
    assert_failed(s.step(token), s, message)


def test_plain_without_a_password_file_fails() -> None:
    s = server(SaslUsers(None, None))
    assert_failed(s.step(b"\x00alice\x00wonderland"), s)


# --- handshake and state errors ---------------------------------------------------------------


def test_unsupported_mechanism() -> None:
    s = SaslServer(USERS, lambda: "n")
    assert s.permits(api.API_VERSIONS) and s.permits(api.SASL_HANDSHAKE)
    assert not s.permits(api.SASL_AUTHENTICATE) and not s.permits(api.METADATA)
    assert s.start("GSSAPI") == errors.UNSUPPORTED_SASL_MECHANISM
    assert s.state is SaslState.FAILED and "GSSAPI" in (s.failure or "")
    assert not s.permits(api.API_VERSIONS)
    assert handshake_response(errors.UNSUPPORTED_SASL_MECHANISM) == {
        "error_code": 33, "mechanisms": ["PLAIN", "SCRAM-SHA-256"]}
    assert s.start("PLAIN") == errors.ILLEGAL_SASL_STATE  # no second chance


def test_step_before_start() -> None:
    s = SaslServer(USERS, lambda: "n")
    assert_failed(s.step(b"\x00alice\x00wonderland"), s, "state handshake",
                  errors.ILLEGAL_SASL_STATE)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_second_start(mechanism: str) -> None:
    s = server(mechanism=mechanism)
    assert s.start(mechanism) == errors.ILLEGAL_SASL_STATE
    assert s.state is SaslState.FAILED and "SaslHandshake in state" in (s.failure or "")
    assert s.step(b"\x00alice\x00wonderland").error_code == errors.ILLEGAL_SASL_STATE


def test_no_step_or_start_after_success() -> None:
    s = server()
    assert s.step(b"\x00alice\x00wonderland").done
    step = s.step(b"\x00alice\x00wonderland")
    assert step.error_code == errors.ILLEGAL_SASL_STATE and step.done and step.username is None
    assert s.state is SaslState.FAILED and not s.authenticated
    s = server()
    assert s.step(b"\x00alice\x00wonderland").done
    assert s.start("PLAIN") == errors.ILLEGAL_SASL_STATE and s.state is SaslState.FAILED


def test_step_after_failure_stays_failed() -> None:
    s = server()
    first = s.step(b"\x00alice\x00bad")
    assert first.error_code == errors.SASL_AUTHENTICATION_FAILED and s.failure
    failure = s.failure
    again = s.step(b"\x00alice\x00wonderland")
    assert again.error_code == errors.ILLEGAL_SASL_STATE and s.failure == failure


def test_v0_handshake_means_raw_tokens() -> None:
    s = server(version=0)
    assert s.raw_tokens and not s.permits(api.SASL_AUTHENTICATE)
    step = s.step(b"\x00alice\x00wonderland")
    assert step.username == "alice" and not s.raw_tokens
    assert raw_token_frame(step.server_bytes) == b"\x00\x00\x00\x00"  # what v0 PLAIN clients read
    s = server(mechanism="SCRAM-SHA-256", version=0)
    client = ScramClient("alice", b"wonderland", "cn")
    first = s.step(client.first())
    assert s.raw_tokens and raw_token_frame(first.server_bytes)[4:] == first.server_bytes
    assert raw_token_frame(first.server_bytes)[:4] == len(first.server_bytes).to_bytes(4, "big")
    assert s.step(client.final(first.server_bytes)).username == "alice" and not s.raw_tokens
    assert not server(version=1).raw_tokens


def test_response_bodies() -> None:
    ok = SaslStep(errors.NONE, b"v=abc", True, "alice", None)
    assert authenticate_response(ok) == {"error_code": 0, "error_message": None,
                                         "auth_bytes": b"v=abc", "session_lifetime_ms": 0}
    bad = SaslStep(58, b"", True, None, "nope")
    assert authenticate_response(bad)["error_message"] == "nope"
    assert handshake_response(0)["mechanisms"] == list(MECHANISMS)


# --- SCRAM-SHA-256 ----------------------------------------------------------------------------


def rfc_users() -> SaslUsers:
    passwords = PasswordFile.parse(f"{RFC_USER}:{hash_password(RFC_PASSWORD, SALT)}\n")
    cred = ScramCredential.derive(RFC_PASSWORD, RFC_SALT, 4096)
    return SaslUsers(passwords, ScramFile.parse(f"{RFC_USER}:{cred.render()}\n"))


def test_rfc7677_vector_client() -> None:
    """Our test client reproduces the RFC's client-final proof and server signature."""
    client = ScramClient(RFC_USER, RFC_PASSWORD, RFC_CLIENT_NONCE)
    assert client.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert client.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert b"v=" + base64.b64encode(client.server_signature) == RFC_SERVER_FINAL


def test_rfc7677_vector_server() -> None:
    s = server(rfc_users(), "SCRAM-SHA-256", nonce=RFC_SERVER_NONCE)
    first = s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == SaslStep(errors.NONE, RFC_SERVER_FIRST, False, None, None)
    assert s.state is SaslState.SCRAM_FINAL and s.permits(api.SASL_AUTHENTICATE)
    final = s.step(RFC_CLIENT_FINAL)
    assert final == SaslStep(errors.NONE, RFC_SERVER_FINAL, True, "user", None)
    assert s.authenticated and s.username == "user"


@pytest.mark.parametrize(("user", "password", "gs2"), [
    ("alice", b"wonderland", "n,,"),
    ("alice", b"wonderland", "y,,"),  # client could bind, thinks we cannot: fine
    ("alice", b"wonderland", "n,a=alice,"),
    ("a,b=c", "päss".encode(), "n,,"),  # saslname escapes, UTF-8 password
    ("a,b=c", "päss".encode(), "n,a=a=2Cb=3Dc,"),
])
def test_scram_full_exchange(user: str, password: bytes, gs2: str) -> None:
    s = server(mechanism="SCRAM-SHA-256", nonce="srv-NONCE_1")
    client = ScramClient(user, password, "cli+nonce/9", gs2)
    first = s.step(client.first())
    assert first.error_code == 0 and not first.done
    assert first.server_bytes.startswith(b"r=cli+nonce/9srv-NONCE_1,s=" +
                                         base64.b64encode(SALT) + b",i=4096")
    final = s.step(client.final(first.server_bytes))
    assert final == SaslStep(0, b"v=" + base64.b64encode(client.server_signature), True, user,
                             None)
    assert s.username == user and s.authenticated


def scram_fail(users: SaslUsers, user: str, password: bytes) -> tuple[SaslServer, SaslStep,
                                                                      bytes]:
    s = server(users, "SCRAM-SHA-256")
    client = ScramClient(user, password, "cn")
    first = s.step(client.first())
    assert first.error_code == 0 and first.server_bytes.startswith(b"r=cnSERVERnonce,s=")
    return s, s.step(client.final(first.server_bytes)), first.server_bytes


def test_scram_wrong_password_and_unknown_user_look_the_same() -> None:
    s, step, _ = scram_fail(USERS, "alice", b"wonderlanD")
    assert_failed(step, s)
    assert "wrong proof for user 'alice'" in (s.failure or "")
    s, step_unknown, server_first = scram_fail(USERS, "mallory", b"x")
    assert_failed(step_unknown, s)
    assert step_unknown == step and "no user 'mallory'" in (s.failure or "")
    # the fake salt is stable per user (asking twice reveals nothing) and 16 bytes like ours
    assert scram_fail(USERS, "mallory", b"y")[2] == server_first
    assert scram_fail(USERS, "mallet", b"y")[2] != server_first
    salt = dict(a.split("=", 1) for a in server_first.decode().split(","))["s"]
    assert len(base64.b64decode(salt)) == 16


def test_scram_user_without_sidecar_line_fails_but_plain_works() -> None:
    """A user added with mosquitto_passwd alone has no SCRAM credentials."""
    users = make_users({"alice": b"wonderland"}, scram=False)
    s, step, _ = scram_fail(users, "alice", b"wonderland")
    assert_failed(step, s)
    assert "no SCRAM-SHA-256 credentials" in (s.failure or "")
    assert server(users).step(b"\x00alice\x00wonderland").username == "alice"


def test_scram_line_for_another_password_is_ignored() -> None:
    """mosquitto_passwd changed the password: the bound SCRAM line no longer counts."""
    old = make_users({"alice": b"old-one"})
    assert old.scram is not None and old.passwords is not None
    changed = old.passwords.with_user("alice", hash_password(b"new-one", SALT))
    users = SaslUsers(changed, old.scram)
    s, step, _ = scram_fail(users, "alice", b"old-one")
    assert_failed(step, s)
    assert "written for another password" in (s.failure or "")
    assert server(users).step(b"\x00alice\x00new-one").username == "alice"
    # an unbound line (written by hand or an older tool) is trusted as long as the user exists
    unbound = make_users({"alice": b"old-one"}, bound=False)
    assert unbound.scram is not None
    users = SaslUsers(changed, unbound.scram)
    s = server(users, "SCRAM-SHA-256")
    client = ScramClient("alice", b"old-one", "cn")
    assert s.step(client.final(s.step(client.first()).server_bytes)).username == "alice"
    # deleted from the password file: the SCRAM line is dead too
    users = SaslUsers(PasswordFile.parse(""), unbound.scram)
    s, step, _ = scram_fail(users, "alice", b"old-one")
    assert_failed(step, s)
    assert "not in the password file" in (s.failure or "")


def test_scram_nonce_mismatch() -> None:
    s = server(mechanism="SCRAM-SHA-256")
    client = ScramClient("alice", b"wonderland", "cn")
    first = s.step(client.first())
    assert_failed(s.step(client.final(first.server_bytes, nonce="cnSERVERnoncX")), s,
                  "SCRAM nonce mismatch")


def test_scram_channel_binding_data_mismatch() -> None:
    s = server(mechanism="SCRAM-SHA-256")
    client = ScramClient("alice", b"wonderland", "cn")
    first = s.step(client.first())
    assert_failed(s.step(client.final(first.server_bytes, channel="eSws")), s,
                  "SCRAM channel binding mismatch")


@pytest.mark.parametrize(("token", "message"), [
    (b"p=tls-unique,,n=alice,r=cn", "channel binding is not supported"),
    (b"n,,m=ext,n=alice,r=cn", "SCRAM extensions are not supported"),
    (b"n,,n=alice,r=cn,tokenauth=true", "delegation tokens are not supported"),
    (b"n,,n=alice", "malformed SCRAM client-first"),
    (b"n,,r=cn,n=alice", "malformed SCRAM client-first"),
    (b"n,n=alice,r=cn", "malformed SCRAM client-first"),
    (b"x,,n=alice,r=cn", "malformed SCRAM client-first"),
    (b"n,,n=,r=cn", "malformed SCRAM client-first"),
    (b"n,,n=al=3ice,r=cn", "malformed SCRAM username"),
    (b"n,,n=alice,r=", "malformed SCRAM nonce"),
    (b"n,,n=alice,r=c\xc3\xa4", "malformed SCRAM nonce"),
    (b"n,,n=alice,r=cn,=x", "malformed SCRAM client-first"),
    (b"n,a=bob,n=alice,r=cn", "authorization identity must be empty or equal"),
    (b"n,bob,n=alice,r=cn", "authorization identity must be empty or equal"),
    (b"n,,n=\xffalice,r=cn", "malformed SCRAM client-first"),
])
def test_scram_client_first_refused(token: bytes, message: str) -> None:
    s = server(mechanism="SCRAM-SHA-256")
    assert_failed(s.step(token), s, message)


def test_scram_client_first_extensions_other_than_tokenauth_are_ignored() -> None:
    s = server(mechanism="SCRAM-SHA-256")
    step = s.step(b"n,,n=alice,r=cn,tokenauth=false,x=1")
    assert step.error_code == 0 and s.state is SaslState.SCRAM_FINAL


@pytest.mark.parametrize(("final", "message"), [
    (b"c=biws,r=cnSERVERnonce", "malformed SCRAM client-final"),
    (b"r=cnSERVERnonce,c=biws,p=" + base64.b64encode(bytes(32)), "malformed SCRAM client-final"),
    (b"c=biws,r=cnSERVERnonce,p=###", "malformed SCRAM client-final"),
    (b"c=biws,r=cnSERVERnonce,p=" + base64.b64encode(bytes(31)), "malformed SCRAM client-final"),
    (b"c=biws,r=cnSERVERnonce,p=" + base64.b64encode(bytes(32)), FAILED_MESSAGE),
    (b"c=biws,r=cnSERVERnonce\xff,p=AAAA", "malformed SCRAM client-final"),
])
def test_scram_client_final_refused(final: bytes, message: str) -> None:
    s = server(mechanism="SCRAM-SHA-256")
    assert s.step(b"n,,n=alice,r=cn").error_code == 0
    assert_failed(s.step(final), s, message)


@settings(max_examples=150, deadline=None)
@given(mechanism=st.sampled_from(MECHANISMS), tokens=st.lists(st.binary(max_size=80),
                                                              min_size=1, max_size=3))
def test_any_tokens_give_a_step_never_an_exception(mechanism: str, tokens: list[bytes]) -> None:
    s = server(mechanism=mechanism)
    for token in tokens:
        step = s.step(token)
        assert isinstance(step, SaslStep) and step.error_code in (0, 34, 58)
        assert step.done == (s.state in (SaslState.AUTHENTICATED, SaslState.FAILED))
        s.invariants()


# --- the SCRAM sidecar format -----------------------------------------------------------------


def test_sidecar_round_trip_keeps_comments() -> None:
    cred = ScramCredential.derive(b"pw", SALT, 4096, hash_binding("$7$x"))
    text = f"# scram\n\nalice:{cred.render()}\nbob:{ScramCredential.derive(b'q', SALT).render()}\n"
    parsed = ScramFile.parse(text, "s")
    assert parsed.users() == ["alice", "bob"] and parsed.get("alice") == cred
    assert parsed.render() == text
    assert parsed.without_user("alice").render() == text.replace(f"alice:{cred.render()}\n", "")
    fields = cred.render().split(":")
    assert fields[:2] == ["SCRAM-SHA-256", "4096"] and len(fields) == 6
    assert base64.b64decode(fields[1 + 1]) == SALT
    with pytest.raises(KeyError):
        parsed.without_user("carol")


@pytest.mark.parametrize(("line", "message"), [
    ("alice", "found no ':'"),
    ("a\x00b:SCRAM-SHA-256:4096:AA==:{k}:{k}", "contains U+0000"),
    ("alice:SCRAM-SHA-512:4096:AA==:{k}:{k}", "mechanism 'SCRAM-SHA-512'"),
    ("alice:SCRAM-SHA-256:4095:AA==:{k}:{k}", "iterations '4095' must be an integer"),
    ("alice:SCRAM-SHA-256:x:AA==:{k}:{k}", "iterations 'x'"),
    ("alice:SCRAM-SHA-256:4096:A:{k}:{k}", "salt 'A' is not valid base64"),
    ("alice:SCRAM-SHA-256:4096::{k}:{k}", "salt is 0 bytes"),
    ("alice:SCRAM-SHA-256:4096:AA==:AA==:{k}", "StoredKey is 1 bytes"),
    ("alice:SCRAM-SHA-256:4096:AA==:{k}:{k}:AA==", "binding is 1 bytes"),
    ("alice:SCRAM-SHA-256:4096:AA==:{k}", "found 4 ':'-separated fields"),
    ("alice:SCRAM-SHA-256:4096:AA==:{k}:{k}\nalice:SCRAM-SHA-256:4096:AA==:{k}:{k}",
     "line 2: user 'alice' appears a second time"),
])
def test_sidecar_errors_name_line_and_field(line: str, message: str) -> None:
    key = base64.b64encode(bytes(32)).decode()
    with pytest.raises(AuthConfigError) as info:
        ScramFile.parse(line.format(k=key) + "\n", "pw.scram")
    assert str(info.value).startswith("pw.scram: line ")
    assert message in str(info.value)


def test_derive_limits() -> None:
    with pytest.raises(ValueError, match="iterations must be in"):
        ScramCredential.derive(b"pw", SALT, 1000)
    with pytest.raises(ValueError, match="salt must be"):
        ScramCredential.derive(b"pw", b"")
    assert scram_path("/etc/twinmq/passwd") == "/etc/twinmq/passwd.scram"


# --- with the files `twinmq user add` writes --------------------------------------------------


def load(path: Path) -> SaslUsers:
    side = Path(scram_path(str(path)))
    return SaslUsers(PasswordFile.parse(path.read_text()), ScramFile.parse(side.read_text()))


def login(users: SaslUsers, mechanism: str, user: str, password: bytes) -> str | None:
    s = server(users, mechanism)
    if mechanism == "PLAIN":
        return s.step(b"\x00" + user.encode() + b"\x00" + password).username
    client = ScramClient(user, password, "cn")
    first = s.step(client.first())
    final = s.step(client.final(first.server_bytes))
    assert final.error_code or final.server_bytes == b"v=" + base64.b64encode(
        client.server_signature)
    return final.username


def test_cli_written_files_authenticate_both_mechanisms(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    path = tmp_path / "passwd"
    assert main(["user", "add", "--file", str(path), "alice", "--password", "s3cret"]) == 0
    assert main(["user", "add", "--file", str(path), "bob", "--password", "hunter2"]) == 0
    users = load(path)
    for mechanism in MECHANISMS:
        assert login(users, mechanism, "alice", b"s3cret") == "alice"
        assert login(users, mechanism, "alice", b"hunter2") is None
    assert main(["user", "add", "--file", str(path), "alice", "--password", "n3w"]) == 0
    users = load(path)
    for mechanism in MECHANISMS:
        assert login(users, mechanism, "alice", b"s3cret") is None
        assert login(users, mechanism, "alice", b"n3w") == "alice"
    assert main(["user", "delete", "--file", str(path), "alice"]) == 0
    users = load(path)
    for mechanism in MECHANISMS:
        assert login(users, mechanism, "alice", b"n3w") is None
        assert login(users, mechanism, "bob", b"hunter2") == "bob"
    capsys.readouterr()
