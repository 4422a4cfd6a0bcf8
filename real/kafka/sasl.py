"""SASL authentication for the Kafka listener: PLAIN and SCRAM-SHA-256, sans-I/O.

Pure: nothing here opens a file, reads a clock or draws a random number. The SCRAM server nonce
comes from an injected `nonce()` callable, the credentials from parsed text (`PasswordFile` from
`real.mqtt.auth` and `ScramFile` below), and the caller does the framing on the socket.

The Kafka exchange, and what the broker does
============================================

A client on a SASL listener may send only ApiVersions (any number of times) and then
SaslHandshake (key 17) before it authenticates; `SaslServer.permits(api_key)` says which request
keys are acceptable in the current state (anything else: close the connection, as Kafka does).

1. SaslHandshake v0/v1 `{"mechanism": str}`: call `error = server.start(mechanism, version)` and
   answer `handshake_response(error)` (the mechanism list is always included, so a client that
   asked for the wrong one learns the right ones). `error` is 0, UNSUPPORTED_SASL_MECHANISM (33)
   or ILLEGAL_SASL_STATE (34); on any error send the answer, then close the connection.
2. **v1 handshake** (what librdkafka, aiokafka and kafka-python >= 1.0 brokers use): each SASL
   token arrives in a SaslAuthenticate v0/v1 request `{"auth_bytes": bytes}`. Call
   `r = server.step(auth_bytes)` and answer `authenticate_response(r)` (v1 adds
   `session_lifetime_ms` = 0: no re-authentication, KIP-368). If `r.error_code` is not 0, close the
   connection after sending the answer. If `r.done` and no error, the connection is authenticated
   as `r.username` (= `server.username`): every API is now allowed.
3. **v0 handshake** (legacy, Kafka 0.10.0 clients): after the SaslHandshake v0 response the next
   frames are *raw* SASL tokens, NOT Kafka requests: a 4-byte big-endian size followed by the token,
   with no request header. `server.raw_tokens` is True while this is so. For each such frame call
   `r = server.step(frame_payload)`; on success send `raw_token_frame(r.server_bytes)` (a size-
   prefixed token; for PLAIN that is the empty frame `00 00 00 00` the client waits for); on an
   error send nothing and close the connection (there is no error field in a raw frame). Once
   `r.done` without error, the following frames are ordinary Kafka requests again.

`step` and `start` never raise on client input: malformed, unexpected or wrong tokens give an
error code and a message (`r.error_message`, safe to send to the client: it never says whether a
user exists). `server.failure` keeps a more precise reason for the broker's log. Any error moves the
server to the FAILED state for good: the broker closes the connection.

PLAIN (RFC 4616)
================

One client token: `authzid NUL authcid NUL passwd` (UTF-8). `authzid` must be empty or equal to
`authcid` (no proxy authorization). `authcid` and `passwd` are checked with
`PasswordFile.verify` (constant time, an unknown user costs a hash like a wrong password). The
server answers an empty token and the exchange is done.

SCRAM-SHA-256 (RFC 5802, RFC 7677)
==================================

Two client tokens::

    client-first  n,,n=<user>,r=<client nonce>[,<ext>=<value>...]
    server-first  r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
    client-final  c=biws,r=<client nonce><server nonce>,p=<base64 ClientProof>
    server-final  v=<base64 ServerSignature>      (the exchange is done)

* GS2 header: `n` (no channel binding) or `y` (client could bind but thinks we cannot) are
  accepted; `p=...` (channel binding requested) is refused: this listener has none to offer. An
  authzid `a=` must equal the username. A mandatory extension (`m=`) is refused; Kafka's
  `tokenauth=true` extension (delegation tokens) is refused; other extensions are ignored.
* Usernames are SCRAM `saslname`s: `=2C` stands for `,` and `=3D` for `=`.
* Passwords are used as their UTF-8 bytes without SASLprep, exactly like Apache Kafka, so a
  password that SASLprep would change works the same with Kafka clients on both brokers.
* Verification: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof is good iff
  SHA-256(ClientKey) equals StoredKey (constant-time compare). AuthMessage is
  `client-first-bare + "," + server-first + "," + client-final-without-proof`.
* An unknown user (or one without SCRAM credentials) still gets a server-first message, with a
  salt derived from HMAC(`mock_secret`, username) and 4096 iterations, and fails at client-final
  with the same message as a wrong password, so the exchange does not reveal which users exist
  (give the server a per-node random `mock_secret` so the fake salts cannot be predicted).

SCRAM credentials: the sidecar file
===================================

Mosquitto's `$7$` hashes (PBKDF2-SHA512) cannot produce SCRAM-SHA-256 keys, so `twinmq user add`
also writes `<password_file>.scram` (see `scram_path`), one line per user::

    alice:SCRAM-SHA-256:4096:<salt b64>:<StoredKey b64>:<ServerKey b64>[:<binding b64>]
    # comments and blank lines are kept, as in the password file

* iterations in [`SCRAM_ITERATIONS_MIN`, `SCRAM_ITERATIONS_MAX`]; `twinmq user add` uses 4096
  and a random 16-byte salt. Salt 1..`SALT_BYTES_MAX` bytes; keys are 32 bytes (SHA-256).
  Base64 is standard with `=` padding. Usernames follow the password-file rules.
* `binding` (optional; written by `twinmq user add`) is SHA-256 of the user's hash text in the
  password file at the time the line was written. A SCRAM line counts only while the user is in
  the password file and, when a binding is present, that user's hash text still matches it. So a
  password changed or a user deleted with `mosquitto_passwd` alone (which does not know the
  sidecar) disables that user's SCRAM line instead of leaving the old password valid: SCRAM then
  fails for them while PLAIN works with the new password, until `twinmq user add` is run again.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from real.kafka import api, errors
from real.mqtt.auth import AuthConfigError, PasswordFile, username_problem

MECHANISMS = ("PLAIN", "SCRAM-SHA-256")
SCRAM_MECHANISM = "SCRAM-SHA-256"
SCRAM_ITERATIONS_DEFAULT = 4096  # RFC 7677's minimum and what Kafka's tools use
SCRAM_ITERATIONS_MIN = 4096
SCRAM_ITERATIONS_MAX = 1_000_000
SCRAM_SALT_BYTES = 16  # what `twinmq user add` draws
SALT_BYTES_MAX = 1024
KEY_BYTES = 32  # SHA-256 output: StoredKey, ServerKey, ClientProof
TOKEN_BYTES_MAX = 16 << 10  # a client SASL token; PLAIN and SCRAM tokens are a few hundred bytes
SERVER_NONCE_CHARS_MAX = 256
FAILED_MESSAGE = "Authentication failed: invalid username or password"


# ---------------------------------------------------------------------------------------------
# SCRAM credentials and the sidecar file


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} {text[:40]!r} is not valid base64") from None


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def hash_binding(hash_text: str) -> bytes:
    """The `binding` of a password-file hash text: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(hash_text.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What a SCRAM-SHA-256 server stores for one user (RFC 5802 section 3): never the password.

    `binding` is b"" (none) or the `hash_binding` of the password-file entry it belongs to."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes
    binding: bytes = b""

    def __post_init__(self) -> None:
        assert SCRAM_ITERATIONS_MIN <= self.iterations <= SCRAM_ITERATIONS_MAX, self.iterations
        assert 1 <= len(self.salt) <= SALT_BYTES_MAX, len(self.salt)
        assert len(self.stored_key) == KEY_BYTES and len(self.server_key) == KEY_BYTES
        assert len(self.binding) in (0, KEY_BYTES), len(self.binding)

    @classmethod
    def derive(cls, password: bytes, salt: bytes, iterations: int = SCRAM_ITERATIONS_DEFAULT,
               binding: bytes = b"") -> ScramCredential:
        """The credential for `password` (its UTF-8 bytes, no SASLprep). The caller draws the
        salt. Raises ValueError for an iteration count or salt outside the limits."""
        if not SCRAM_ITERATIONS_MIN <= iterations <= SCRAM_ITERATIONS_MAX:
            raise ValueError(f"SCRAM iterations must be in [{SCRAM_ITERATIONS_MIN}, "
                             f"{SCRAM_ITERATIONS_MAX}], got {iterations}")
        if not 1 <= len(salt) <= SALT_BYTES_MAX:
            raise ValueError(f"salt must be 1..{SALT_BYTES_MAX} bytes, got {len(salt)}")
        salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        server_key = _hmac(salted, b"Server Key")
        return cls(iterations, salt, stored_key, server_key, binding)

    def render(self) -> str:
        """The text after `username:` in the sidecar file."""
        fields = [SCRAM_MECHANISM, str(self.iterations), _b64(self.salt), _b64(self.stored_key),
                  _b64(self.server_key)]
        if self.binding:
            fields.append(_b64(self.binding))
        return ":".join(fields)

    @classmethod
    def parse(cls, text: str) -> ScramCredential:
        """Parse the text after `username:`; ValueError says which field is wrong."""
        fields = text.split(":")
        if len(fields) not in (5, 6):
            raise ValueError(f"expected SCRAM-SHA-256:<iterations>:<salt>:<StoredKey>:<ServerKey>"
                             f"[:<binding>], found {len(fields)} ':'-separated fields")
        if fields[0] != SCRAM_MECHANISM:
            raise ValueError(f"mechanism {fields[0][:30]!r} is not {SCRAM_MECHANISM}")
        if not fields[1].isdigit() or not (SCRAM_ITERATIONS_MIN <= int(fields[1])
                                            <= SCRAM_ITERATIONS_MAX):
            raise ValueError(f"iterations {fields[1][:20]!r} must be an integer in "
                             f"[{SCRAM_ITERATIONS_MIN}, {SCRAM_ITERATIONS_MAX}]")
        salt = _unb64(fields[2], "salt")
        if not 1 <= len(salt) <= SALT_BYTES_MAX:
            raise ValueError(f"salt is {len(salt)} bytes, must be 1..{SALT_BYTES_MAX}")
        keys = [_unb64(f, name) for f, name in zip(fields[3:], ("StoredKey", "ServerKey",
                                                                "binding"), strict=False)]
        for key, name in zip(keys, ("StoredKey", "ServerKey", "binding"), strict=False):
            if len(key) != KEY_BYTES:
                raise ValueError(f"{name} is {len(key)} bytes, a SHA-256 value is {KEY_BYTES}")
        return cls(int(fields[1]), salt, keys[0], keys[1], keys[2] if len(keys) == 3 else b"")


@dataclass(frozen=True, slots=True)
class ScramFile:
    """A parsed SCRAM sidecar file (format in the module docstring). `lines` keeps every line in
    order: a str for a comment or blank line, or a (username, credential) pair."""

    lines: tuple[str | tuple[str, ScramCredential], ...]
    _creds: dict[str, ScramCredential]

    @classmethod
    def parse(cls, text: str, source: str = "<scram>") -> ScramFile:
        """Parse sidecar text; raise `AuthConfigError` naming `source`, the line and the field."""
        lines: list[str | tuple[str, ScramCredential]] = []
        creds: dict[str, ScramCredential] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.rstrip("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                lines.append(line)
                continue
            username, colon, rest = line.partition(":")
            where = f"{source}: line {number}"
            if not colon:
                raise AuthConfigError(f"{where}: expected username:SCRAM-SHA-256:..., "
                                      f"found no ':'")
            problem = username_problem(username)
            if problem is not None:
                raise AuthConfigError(f"{where}: {problem}")
            if username in creds:
                raise AuthConfigError(f"{where}: user {username!r} appears a second time")
            try:
                creds[username] = ScramCredential.parse(rest.strip())
            except ValueError as exc:
                raise AuthConfigError(f"{where}: user {username!r}: {exc}") from None
            lines.append((username, creds[username]))
        result = cls(tuple(lines), creds)
        result.invariants()
        return result

    def invariants(self) -> None:
        entries = [line for line in self.lines if isinstance(line, tuple)]
        assert len(entries) == len(self._creds), (len(entries), len(self._creds))
        assert all(self._creds[user] is cred for user, cred in entries)

    def users(self) -> list[str]:
        """The usernames, in file order."""
        return [line[0] for line in self.lines if isinstance(line, tuple)]

    def __contains__(self, username: object) -> bool:
        return username in self._creds

    def get(self, username: str) -> ScramCredential | None:
        return self._creds.get(username)

    def with_user(self, username: str, credential: ScramCredential) -> ScramFile:
        """A copy with `username` set to `credential` (replaced in place, or appended)."""
        problem = username_problem(username)
        if problem is not None:
            raise ValueError(problem)
        replaced = False
        lines: list[str | tuple[str, ScramCredential]] = []
        for line in self.lines:
            if isinstance(line, tuple) and line[0] == username:
                line, replaced = (username, credential), True
            lines.append(line)
        if not replaced:
            lines.append((username, credential))
        result = ScramFile(tuple(lines), {**self._creds, username: credential})
        result.invariants()
        assert result.get(username) is credential
        return result

    def without_user(self, username: str) -> ScramFile:
        """A copy without `username`; KeyError if it is not there."""
        if username not in self._creds:
            raise KeyError(username)
        lines = tuple(line for line in self.lines
                      if not (isinstance(line, tuple) and line[0] == username))
        result = ScramFile(lines, {u: c for u, c in self._creds.items() if u != username})
        result.invariants()
        assert username not in result
        return result

    def render(self) -> str:
        """The file text: one line per entry, comment or blank line, each ending in a newline."""
        out = [line if isinstance(line, str) else f"{line[0]}:{line[1].render()}"
               for line in self.lines]
        return "".join(f"{line}\n" for line in out)


def scram_path(password_file: str) -> str:
    """Where the sidecar of `password_file` lives: the same path with `.scram` appended."""
    assert password_file, "a password file path is needed"
    return password_file + ".scram"


class SaslUsers:
    """The user store both mechanisms check: the password file (PLAIN) joined with the SCRAM
    sidecar (SCRAM-SHA-256). Build one per (re)load of the files and share it between
    connections; it is immutable. Either part may be None (no file): that mechanism then fails
    for everyone."""

    def __init__(self, passwords: PasswordFile | None, scram: ScramFile | None) -> None:
        self.passwords = passwords
        self.scram = scram
        hashes = {} if passwords is None else {
            line[0]: line[1] for line in passwords.lines if isinstance(line, tuple)}
        self._scram: dict[str, ScramCredential] = {}
        self._scram_problems: dict[str, str] = {}
        for user in (scram.users() if scram is not None else []):
            cred = scram.get(user) if scram is not None else None
            assert cred is not None
            if user not in hashes:
                self._scram_problems[user] = "is in the SCRAM file but not in the password file"
            elif cred.binding and not hmac.compare_digest(cred.binding,
                                                          hash_binding(hashes[user])):
                self._scram_problems[user] = ("has a SCRAM line written for another password "
                                              "(password changed with mosquitto_passwd?)")
            else:
                self._scram[user] = cred
        assert not set(self._scram) & set(self._scram_problems)

    def verify_plain(self, username: str, password: bytes) -> bool:
        if self.passwords is None:
            return False
        return self.passwords.verify(username, password)

    def scram_credential(self, username: str) -> ScramCredential | None:
        """The usable SCRAM credential of `username`, or None (see `scram_problem`)."""
        return self._scram.get(username)

    def scram_problem(self, username: str) -> str | None:
        """Why `username` has no usable SCRAM credential (for logs), or None if it has one."""
        if username in self._scram:
            return None
        if username in self._scram_problems:
            return f"user {username!r} {self._scram_problems[username]}"
        if self.passwords is not None and username in self.passwords:
            return (f"user {username!r} has no SCRAM-SHA-256 credentials (added with "
                    f"mosquitto_passwd? run `twinmq user add` to create them)")
        return f"no user {username!r}"


# ---------------------------------------------------------------------------------------------
# The exchange


class SaslState(enum.Enum):
    HANDSHAKE = "handshake"  # waiting for SaslHandshake (ApiVersions allowed)
    PLAIN = "plain"  # PLAIN chosen: waiting for the one client token
    SCRAM_FIRST = "scram-first"  # SCRAM chosen: waiting for client-first
    SCRAM_FINAL = "scram-final"  # server-first sent: waiting for client-final
    AUTHENTICATED = "authenticated"
    FAILED = "failed"  # terminal: the broker closes the connection


# The only state changes there are (h11 style); `_move` refuses anything else.
_TRANSITIONS: frozenset[tuple[SaslState, SaslState]] = frozenset({
    (SaslState.HANDSHAKE, SaslState.PLAIN),
    (SaslState.HANDSHAKE, SaslState.SCRAM_FIRST),
    (SaslState.PLAIN, SaslState.AUTHENTICATED),
    (SaslState.SCRAM_FIRST, SaslState.SCRAM_FINAL),
    (SaslState.SCRAM_FINAL, SaslState.AUTHENTICATED),
    *((state, SaslState.FAILED) for state in SaslState if state is not SaslState.FAILED),
})
_START_STATE = {"PLAIN": SaslState.PLAIN, "SCRAM-SHA-256": SaslState.SCRAM_FIRST}
assert tuple(_START_STATE) == MECHANISMS
_EXCHANGE_STATES = (SaslState.PLAIN, SaslState.SCRAM_FIRST, SaslState.SCRAM_FINAL)


class SaslStep(NamedTuple):
    """The outcome of one client token.

    error_code: 0, SASL_AUTHENTICATION_FAILED (58) or ILLEGAL_SASL_STATE (34).
    server_bytes: the server token to send (b"" when there is none or on error).
    done: the exchange is over: authenticated (error 0) or failed (error != 0).
    username: the authenticated user when done without error, else None.
    error_message: for the client when error_code != 0 (never names a reason that would reveal
        whether the user exists), else None."""

    error_code: int
    server_bytes: bytes
    done: bool
    username: str | None
    error_message: str | None


class _Fail(Exception):
    """Internal: a client token is refused. `client` goes to the client, `detail` to the log."""

    def __init__(self, detail: str, client: str = FAILED_MESSAGE) -> None:
        super().__init__(detail)
        self.detail = detail
        self.client = client


class SaslServer:
    """One connection's SASL exchange (see the module docstring for the broker's part).

    `users`: the credential store. `nonce()`: returns the server part of the SCRAM nonce, 1 to
    `SERVER_NONCE_CHARS_MAX` printable ASCII characters other than `,` (the node uses e.g. 24
    random bytes in base64; tests pass a constant). `mock_secret`: keys the fake salts given to
    unknown users (use per-node random bytes)."""

    def __init__(self, users: SaslUsers, nonce: Callable[[], str], *,
                 mock_secret: bytes = b"") -> None:
        self.users = users
        self._nonce = nonce
        self._mock_secret = mock_secret
        self.state = SaslState.HANDSHAKE
        self.mechanism: str | None = None
        self.handshake_version = -1
        self.username: str | None = None  # set once authenticated
        self.failure: str | None = None  # why the exchange failed, for the broker's log
        # SCRAM state between client-first and client-final
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._full_nonce = ""
        self._scram_user = ""
        self._credential: ScramCredential | None = None

    # --- queries ------------------------------------------------------------------------------

    @property
    def authenticated(self) -> bool:
        return self.state is SaslState.AUTHENTICATED

    @property
    def raw_tokens(self) -> bool:
        """True when the next frames are raw SASL tokens (after a SaslHandshake v0), not Kafka
        requests."""
        return self.handshake_version == 0 and self.state in _EXCHANGE_STATES

    def permits(self, api_key: int) -> bool:
        """May a Kafka request with this key be handled now? (Before authentication: ApiVersions
        and SaslHandshake, then SaslAuthenticate; all keys once authenticated; none after a
        failure.) A request that is not permitted closes the connection."""
        if self.state is SaslState.AUTHENTICATED:
            return True
        if self.state is SaslState.HANDSHAKE:
            return api_key in (api.API_VERSIONS, api.SASL_HANDSHAKE)
        if self.state in _EXCHANGE_STATES:
            return api_key == api.SASL_AUTHENTICATE and not self.raw_tokens
        return False

    def invariants(self) -> None:
        assert (self.username is not None) == (self.state is SaslState.AUTHENTICATED)
        assert (self.failure is not None) == (self.state is SaslState.FAILED)
        assert (self.mechanism is None) == (self.handshake_version < 0)
        if self.state is SaslState.SCRAM_FINAL:
            assert self._credential is not None and self._full_nonce and self._server_first

    # --- inputs -------------------------------------------------------------------------------

    def start(self, mechanism: str, version: int = 1) -> int:
        """Handle SaslHandshake `version` (0 or 1) naming `mechanism`; returns the error code:
        0, UNSUPPORTED_SASL_MECHANISM or ILLEGAL_SASL_STATE (a second handshake). Any error
        leaves the server FAILED."""
        assert version in (0, 1), version
        if self.state is not SaslState.HANDSHAKE:
            if self.state is not SaslState.FAILED:
                self._fail(f"SaslHandshake in state {self.state.value}")
            return errors.ILLEGAL_SASL_STATE
        if mechanism not in _START_STATE:
            self._fail(f"unsupported SASL mechanism {mechanism[:40]!r}")
            return errors.UNSUPPORTED_SASL_MECHANISM
        self.mechanism, self.handshake_version = mechanism, version
        self._move(_START_STATE[mechanism])
        return errors.NONE

    def step(self, auth_bytes: bytes | bytearray | memoryview) -> SaslStep:
        """Handle one client token (SaslAuthenticate `auth_bytes`, or a raw token frame's
        payload after a v0 handshake). Never raises on client input."""
        state = self.state
        if state not in _EXCHANGE_STATES:
            message = f"SASL token received in state {state.value}"
            if state is not SaslState.FAILED:
                self._fail(message)
            return SaslStep(errors.ILLEGAL_SASL_STATE, b"", True, None, message)
        token = bytes(auth_bytes)
        try:
            if len(token) > TOKEN_BYTES_MAX:
                raise _Fail(f"SASL token of {len(token)} bytes, more than {TOKEN_BYTES_MAX}",
                            "SASL token too large")
            if state is SaslState.PLAIN:
                result = self._plain(token)
            elif state is SaslState.SCRAM_FIRST:
                result = self._scram_first(token)
            else:
                result = self._scram_final(token)
        except _Fail as exc:
            self._fail(exc.detail)
            result = SaslStep(errors.SASL_AUTHENTICATION_FAILED, b"", True, None, exc.client)
        self.invariants()
        assert result.done == (self.state in (SaslState.AUTHENTICATED, SaslState.FAILED))
        return result

    # --- internals ----------------------------------------------------------------------------

    def _move(self, new: SaslState) -> None:
        assert (self.state, new) in _TRANSITIONS, (self.state, new)
        self.state = new

    def _fail(self, detail: str) -> None:
        self._move(SaslState.FAILED)
        self.failure = detail
        self.username = None  # a failure after success (a stray token) revokes the login
        self._credential = None
        self.invariants()

    def _succeed(self, username: str, server_bytes: bytes) -> SaslStep:
        self._move(SaslState.AUTHENTICATED)
        self.username = username
        return SaslStep(errors.NONE, server_bytes, True, username, None)

    def _plain(self, token: bytes) -> SaslStep:
        parts = token.split(b"\x00")
        if len(parts) != 3:
            raise _Fail(f"PLAIN token has {len(parts) - 1} NUL separators, expected 2",
                        "malformed PLAIN token: expected authzid NUL authcid NUL passwd")
        try:
            authzid, authcid = parts[0].decode("utf-8"), parts[1].decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail("PLAIN identity is not UTF-8", "malformed PLAIN token: "
                        "identity is not UTF-8") from None
        if not authcid or not parts[2]:
            raise _Fail("PLAIN token with an empty username or password",
                        "malformed PLAIN token: empty username or password")
        if authzid and authzid != authcid:
            raise _Fail(f"PLAIN authzid {authzid[:40]!r} differs from {authcid[:40]!r}",
                        "authorization identity must be empty or equal to the username")
        if not self.users.verify_plain(authcid, parts[2]):
            raise _Fail(f"PLAIN: bad password or no user {authcid[:40]!r}")
        return self._succeed(authcid, b"")

    def _scram_first(self, token: bytes) -> SaslStep:
        text = _utf8(token, "client-first")
        cbind, comma1, rest = text.partition(",")
        authz, comma2, bare = rest.partition(",")
        if not comma1 or not comma2:
            raise _Fail("client-first has no GS2 header", "malformed SCRAM client-first message")
        if cbind.startswith("p="):
            raise _Fail("client asked for channel binding",
                        "channel binding is not supported (use a client without it)")
        if cbind not in ("n", "y"):
            raise _Fail(f"GS2 flag {cbind[:20]!r}", "malformed SCRAM client-first message")
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            raise _Fail("mandatory SCRAM extension", "SCRAM extensions are not supported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise _Fail("client-first lacks n= and r=", "malformed SCRAM client-first message")
        username = _saslname(attrs[0][2:])
        client_nonce = attrs[1][2:]
        _check_nonce(client_nonce, "client nonce")
        for ext in attrs[2:]:
            key, eq, value = ext.partition("=")
            if not eq or not key:
                raise _Fail(f"extension {ext[:30]!r}", "malformed SCRAM client-first message")
            if key == "tokenauth" and value.lower() == "true":
                raise _Fail("delegation token login", "delegation tokens are not supported")
        if authz and (not authz.startswith("a=") or _saslname(authz[2:]) != username):
            raise _Fail(f"SCRAM authzid {authz[:40]!r} differs from {username[:40]!r}",
                        "authorization identity must be empty or equal to the username")
        server_nonce = self._nonce()
        assert 1 <= len(server_nonce) <= SERVER_NONCE_CHARS_MAX, len(server_nonce)
        assert all(0x21 <= ord(c) <= 0x7E and c != "," for c in server_nonce), server_nonce
        self._credential = self.users.scram_credential(username) or self._mock(username)
        self._scram_user = username
        self._gs2_header = f"{cbind},{authz},"
        self._client_first_bare = bare
        self._full_nonce = client_nonce + server_nonce
        cred = self._credential
        self._server_first = f"r={self._full_nonce},s={_b64(cred.salt)},i={cred.iterations}"
        self._move(SaslState.SCRAM_FINAL)
        return SaslStep(errors.NONE, self._server_first.encode("ascii"), False, None, None)

    def _mock(self, username: str) -> ScramCredential:
        """A credential no password matches, stable per user, for users without one."""
        seed = _hmac(self._mock_secret or b"twinmq-scram-mock", username.encode("utf-8"))
        return ScramCredential(SCRAM_ITERATIONS_DEFAULT, seed[:SCRAM_SALT_BYTES],
                               _hmac(seed, b"stored"), _hmac(seed, b"server"))

    def _scram_final(self, token: bytes) -> SaslStep:
        text = _utf8(token, "client-final")
        without_proof, sep, proof_text = text.rpartition(",p=")
        attrs = without_proof.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c=") \
                or not attrs[1].startswith("r="):
            raise _Fail("client-final is not c=...,r=...,p=...",
                        "malformed SCRAM client-final message")
        expected_binding = _b64(self._gs2_header.encode("utf-8")).encode("ascii")
        if not hmac.compare_digest(attrs[0][2:].encode("utf-8"), expected_binding):
            raise _Fail("channel binding data differs from the GS2 header",
                        "SCRAM channel binding mismatch")
        if not hmac.compare_digest(attrs[1][2:].encode("utf-8"),
                                   self._full_nonce.encode("ascii")):
            raise _Fail("client-final nonce differs from server-first", "SCRAM nonce mismatch")
        try:
            proof = _unb64(proof_text, "proof")
        except ValueError:
            raise _Fail("proof is not base64", "malformed SCRAM client-final message") from None
        if len(proof) != KEY_BYTES:
            raise _Fail(f"proof is {len(proof)} bytes", "malformed SCRAM client-final message")
        cred = self._credential
        assert cred is not None
        auth_message = ",".join((self._client_first_bare, self._server_first,
                                 without_proof)).encode("utf-8")
        signature = _hmac(cred.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        good = hmac.compare_digest(hashlib.sha256(client_key).digest(), cred.stored_key)
        problem = self.users.scram_problem(self._scram_user)
        if problem is not None:
            raise _Fail(f"SCRAM: {problem}")
        if not good:
            raise _Fail(f"SCRAM: wrong proof for user {self._scram_user[:40]!r}")
        server_signature = _hmac(cred.server_key, auth_message)
        return self._succeed(self._scram_user, b"v=" + _b64(server_signature).encode("ascii"))


def _utf8(token: bytes, what: str) -> str:
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail(f"{what} is not UTF-8", f"malformed SCRAM {what} message") from None


def _saslname(text: str) -> str:
    """Decode a SCRAM saslname (`=2C` -> `,`, `=3D` -> `=`; any other `=` is malformed)."""
    if not text:
        raise _Fail("empty SCRAM username", "malformed SCRAM client-first message")
    pieces = text.split("=")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece[:2] not in ("2C", "3D"):
            raise _Fail(f"bad '=' escape in username {text[:40]!r}",
                        "malformed SCRAM username")
        out.append(("," if piece[:2] == "2C" else "=") + piece[2:])
    return "".join(out)


def _check_nonce(nonce: str, what: str) -> None:
    if not nonce or not all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce):
        raise _Fail(f"{what} {nonce[:40]!r} is empty or not printable ASCII",
                    "malformed SCRAM nonce")


# ---------------------------------------------------------------------------------------------
# Response bodies and raw frames for the broker


def handshake_response(error_code: int) -> dict[str, object]:
    """The SaslHandshake v0/v1 response body for `start`'s result."""
    return {"error_code": error_code, "mechanisms": list(MECHANISMS)}


def authenticate_response(step: SaslStep) -> dict[str, object]:
    """The SaslAuthenticate v0/v1 response body for `step`'s result (session_lifetime_ms 0: the
    session does not expire, so clients do not re-authenticate)."""
    return {"error_code": step.error_code, "error_message": step.error_message,
            "auth_bytes": step.server_bytes, "session_lifetime_ms": 0}


def raw_token_frame(server_bytes: bytes) -> bytes:
    """A server token as sent after a SaslHandshake v0: int32 size, then the bytes."""
    return struct.pack(">i", len(server_bytes)) + server_bytes
