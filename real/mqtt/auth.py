"""MQTT authentication (a Mosquitto-compatible password file) and authorization (a TOML ACL).

Pure: nothing here opens a file, reads a clock or draws a random number. Callers read the files
and pass the text in; `hash_password` takes its salt as an argument.

Password file
=============

The format `mosquitto_passwd` writes, so one file serves both brokers. One entry per line::

    username:$7$101$<base64 salt>$<base64 hash>
    # a comment line; blank lines are allowed too

* `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 of the password with that salt and that
  many iterations; the hash is the 64-byte derived key. Mosquitto 2.x writes this with a 12-byte
  salt and 101 iterations. Salt and hash are standard base64 with `=` padding.
* `$6$<salt>$<hash>`: the older form (Mosquitto 1.6 and earlier, `mosquitto_passwd -H sha512`):
  the hash is SHA-512 of the password bytes followed by the salt bytes.

A username is everything before the first `:` (so it cannot contain `:`), is non-empty, has no
line break or U+0000, and does not start with `#` (that line would be a comment). A line whose
first non-blank character is `#` is a comment; a line of only whitespace is blank. Comments and
blank lines survive `with_user` / `without_user` / `render`. A username may appear only once.
Limits: `ITERATIONS_MAX` PBKDF2 iterations (bounds the CPU one CONNECT can cost) and salts of
1..`SALT_BYTES_MAX` bytes.

ACL file (TOML)
===============

::

    default = "deny"             # "allow" | "deny": the decision when no rule applies.
                                 # Absent: "deny" (an ACL file grants; it does not only forbid).
    [[rule]]                     # rules are tried in file order; the first that applies wins
    permission = "allow"         # required: "allow" | "deny"
    action = "subscribe"         # required: "publish" | "subscribe" | "all" (both)
    topic = "users/%u/#"         # required: a topic filter (not "$share/..."); a whole level
                                 # "%u" is the client's username, "%c" its client id
    user = "alice"               # optional: only this username; absent or "*" = anyone, including
                                 # anonymous clients; "" = no one (a way to switch a rule off)
    client_id = "dev-*"          # optional: this client id exactly, or with a trailing "*" any
                                 # client id starting with the text before it ("*" = any)

A rule *is for* a client when its `user` and `client_id` both accept it; an anonymous client
(username None) is accepted only by a rule with no `user` or `user = "*"`. Checks:

* `check_publish(user, client_id, topic_name)`: the first rule for the client with action publish
  or all whose filter matches the topic name (as `real.mqtt.topics.matches`, so the `$` rule holds:
  a filter starting with `+` or `#` never matches `$SYS/...`; name `$` topics literally) decides;
  none: `default`.
* `check_subscribe(user, client_id, topic_filter)`: a `$share/{group}/` prefix is stripped first.
  Let F be the filter. A subscription is refused only when it is denied *as a whole*, as
  Mosquitto does: the rules for the client with action subscribe or all are tried in order,
  skipping those whose filter does not *overlap* F (no topic name is matched by both); the
  first `allow` rule that overlaps F grants it, a `deny` rule that *covers* F (matches every
  name F matches) before any such allow rule refuses it, a `deny` rule that covers only part of
  F is passed over (the rest of F is still to be decided), and with no deciding rule `default`
  decides. So with `default = "allow"` and one rule denying `test/nosubscribe`, a subscription
  to `#`, `+/+` or `test/#` is granted and `test/nosubscribe` itself refused.
* `check_receive(user, client_id, topic_name)`: the publish check, with subscribe rules: whether
  this client may receive a message on that topic. The broker runs it on every delivery (a
  granted wildcard subscription receives only the topics the ACL lets through: the denied ones
  are filtered out there, retained messages included) and picks a shared subscription's member
  among those that may receive the message. `needs_receive_check` is False when no rule for the
  client can deny a delivery (no applicable subscribe deny rule and default allow), so the
  broker can skip it. A subscription granted in full (an allow rule that covers F decides it)
  receives every message it matches; one granted in part may receive none, if the rules deny
  every name it matches through several partial deny rules together (no single one covers it).

Placeholders: `%u` and `%c` must each be a whole level (`users/%u/#`, not `users/x%u`). A value
is *usable* in a topic when it is non-empty, has no `/`, `+`, `#` or U+0000 and does not start
with `$`. An `allow` rule whose placeholder value is unusable (anonymous for `%u`, a client id
with a `/`) does not apply to that client; a `deny` rule in that case fails closed: it applies
to every topic, `$` topics included. Limit: `RULES_MAX` rules.

Authentication
==============

`Authenticator(passwords, allow_anonymous).login(username, password)` -> `Login(reason, user)`
(`authenticate` returns just the reason; calling the object as `auth(username, password,
anonymous_ok)` does the same with a per-listener anonymous setting):

* no username (a password alone counts as none): 0 if anonymous is allowed, else 0x87 Not
  authorized. The ACL sees user None.
* a username and a password file: 0 if `verify` passes, else 0x86 Bad User Name or Password, even
  when anonymous clients are allowed (credentials that are presented are checked).
* a username but no password file: the name cannot be verified, so it is treated as anonymous:
  0 with ACL user None if anonymous is allowed (so a client cannot claim another user's ACL
  rules by naming them), else 0x87.

`anonymous_allowed(setting, bind_host)` resolves the node's `allow_anonymous = "auto"` setting:
auto allows anonymous clients only on a listener bound to a loopback address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import tomllib
from dataclasses import dataclass, field
from typing import Any

from real.mqtt.reasons import ReasonCode
from real.mqtt.topics import (
    TopicError,
    parse_shared,
    validate_topic_filter,
    validate_topic_name,
)

ITERATIONS_DEFAULT = 101  # what mosquitto_passwd 2.x uses
ITERATIONS_MAX = 1_000_000
SALT_BYTES_MAX = 1024
HASH_BYTES = 64  # SHA-512 output
RULES_MAX = 10_000
CLIENT_CACHE_MAX = 4096  # (user, client id) -> ClientAcl entries an Acl keeps
ACTIONS = ("publish", "subscribe", "all")
PERMISSIONS = ("allow", "deny")
RULE_KEYS = ("permission", "action", "topic", "user", "client_id")
_WILD = ("+", "#")


class AuthConfigError(ValueError):
    """A password or ACL file is malformed; the message names the source and the line or the
    rule and key."""


# ---------------------------------------------------------------------------------------------
# Password file


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: bytes, salt: bytes, iterations: int = ITERATIONS_DEFAULT) -> str:
    """The `$7$` entry for `password`: `$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>`.

    The caller draws the salt (mosquitto uses 12 random bytes); the core has no randomness.
    """
    if not 1 <= len(salt) <= SALT_BYTES_MAX:
        raise ValueError(f"salt must be 1..{SALT_BYTES_MAX} bytes, got {len(salt)}")
    if not 1 <= iterations <= ITERATIONS_MAX:
        raise ValueError(f"iterations must be in [1, {ITERATIONS_MAX}], got {iterations}")
    key = hashlib.pbkdf2_hmac("sha512", password, salt, iterations)
    assert len(key) == HASH_BYTES
    text = f"$7${iterations}${_b64(salt)}${_b64(key)}"
    assert ":" not in text and "\n" not in text
    return text


@dataclass(frozen=True, slots=True)
class _Hash:
    """A parsed hash: `iterations` 0 means the `$6$` form (SHA-512 of password + salt)."""

    iterations: int
    salt: bytes
    digest: bytes

    def compute(self, password: bytes) -> bytes:
        if self.iterations == 0:
            return hashlib.sha512(password + self.salt).digest()
        return hashlib.pbkdf2_hmac("sha512", password, self.salt, self.iterations)


def _decode_b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} {text[:40]!r} is not valid base64") from None


def _parse_hash(text: str) -> _Hash:
    """Parse a `$7$...` or `$6$...` hash; raise ValueError saying what is wrong."""
    parts = text.split("$")
    if len(parts) == 5 and parts[:2] == ["", "7"]:
        if not parts[2].isdigit() or not 1 <= int(parts[2]) <= ITERATIONS_MAX:
            raise ValueError(f"iterations {parts[2][:20]!r} must be an integer in "
                             f"[1, {ITERATIONS_MAX}]")
        iterations, salt_text, hash_text = int(parts[2]), parts[3], parts[4]
    elif len(parts) == 4 and parts[:2] == ["", "6"]:
        iterations, salt_text, hash_text = 0, parts[2], parts[3]
    else:
        raise ValueError(f"hash {text[:20]!r} is neither $7$<iterations>$<salt>$<hash> "
                         f"(PBKDF2-SHA512) nor $6$<salt>$<hash> (SHA-512)")
    salt = _decode_b64(salt_text, "salt")
    digest = _decode_b64(hash_text, "hash")
    if not 1 <= len(salt) <= SALT_BYTES_MAX:
        raise ValueError(f"salt is {len(salt)} bytes, must be 1..{SALT_BYTES_MAX}")
    if len(digest) != HASH_BYTES:
        raise ValueError(f"hash is {len(digest)} bytes, a SHA-512 hash is {HASH_BYTES}")
    return _Hash(iterations, salt, digest)


def username_problem(username: str) -> str | None:
    """Why `username` cannot be stored in a password file, or None if it can."""
    if not username:
        return "username is empty"
    for bad, name in ((":", "':'"), ("\n", "a line break"), ("\r", "a line break"),
                      ("\x00", "U+0000")):
        if bad in username:
            return f"username {username[:40]!r} contains {name}"
    if username.lstrip().startswith("#"):
        return f"username {username[:40]!r} starts with '#' (it would be read as a comment)"
    return None


# A dummy hash verified for unknown users, so "no such user" costs what "wrong password" does.
_DUMMY = _Hash(ITERATIONS_DEFAULT, b"twinmq-dummy", bytes(HASH_BYTES))


@dataclass(frozen=True, slots=True)
class PasswordFile:
    """A parsed password file. `lines` keeps every line in order: a str for a comment or blank
    line (kept verbatim), or a (username, hash text) pair. Build one with `parse`."""

    lines: tuple[str | tuple[str, str], ...]
    _hashes: dict[str, _Hash]

    @classmethod
    def parse(cls, text: str, source: str = "<passwords>") -> PasswordFile:
        """Parse password-file text; raise `AuthConfigError` naming `source` and the line."""
        lines: list[str | tuple[str, str]] = []
        hashes: dict[str, _Hash] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.rstrip("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                lines.append(line)
                continue
            username, colon, hash_text = line.partition(":")
            where = f"{source}: line {number}"
            if not colon:
                raise AuthConfigError(f"{where}: expected username:hash, found no ':'")
            problem = username_problem(username)
            if problem is not None:
                raise AuthConfigError(f"{where}: {problem}")
            if username in hashes:
                raise AuthConfigError(f"{where}: user {username!r} appears a second time")
            try:
                hashes[username] = _parse_hash(hash_text.strip())
            except ValueError as exc:
                raise AuthConfigError(f"{where}: user {username!r}: {exc}") from None
            lines.append((username, hash_text.strip()))
        result = cls(tuple(lines), hashes)
        result.invariants()
        return result

    def invariants(self) -> None:
        entries = [line for line in self.lines if isinstance(line, tuple)]
        assert len(entries) == len(self._hashes), (len(entries), len(self._hashes))
        assert all(user in self._hashes for user, _ in entries)

    def users(self) -> list[str]:
        """The usernames, in file order."""
        return [line[0] for line in self.lines if isinstance(line, tuple)]

    def __contains__(self, username: object) -> bool:
        return username in self._hashes

    def verify(self, username: str, password: bytes | None) -> bool:
        """True iff `username` is in the file and `password` hashes to its stored hash. The
        digests are compared in constant time, and an unknown user or a missing password costs
        one hash computation like a wrong password does."""
        stored = self._hashes.get(username)
        candidate = password if password is not None else b""
        computed = (stored or _DUMMY).compute(candidate)
        same = hmac.compare_digest(computed, (stored or _DUMMY).digest)
        return same and stored is not None and password is not None

    def with_user(self, username: str, hash_text: str) -> PasswordFile:
        """A copy with `username` set to `hash_text` (replaced in place, or appended)."""
        problem = username_problem(username)
        if problem is not None:
            raise ValueError(problem)
        parsed = _parse_hash(hash_text)
        replaced = False
        lines: list[str | tuple[str, str]] = []
        for line in self.lines:
            if isinstance(line, tuple) and line[0] == username:
                line, replaced = (username, hash_text), True
            lines.append(line)
        if not replaced:
            lines.append((username, hash_text))
        result = PasswordFile(tuple(lines), {**self._hashes, username: parsed})
        result.invariants()
        assert username in result
        return result

    def without_user(self, username: str) -> PasswordFile:
        """A copy without `username`; KeyError if it is not there."""
        if username not in self._hashes:
            raise KeyError(username)
        lines = tuple(line for line in self.lines
                      if not (isinstance(line, tuple) and line[0] == username))
        hashes = {user: h for user, h in self._hashes.items() if user != username}
        result = PasswordFile(lines, hashes)
        result.invariants()
        assert username not in result
        return result

    def render(self) -> str:
        """The file text: one line per entry, comment or blank line, each ending in a newline."""
        out = [line if isinstance(line, str) else f"{line[0]}:{line[1]}" for line in self.lines]
        return "".join(f"{line}\n" for line in out)


# ---------------------------------------------------------------------------------------------
# Topic filter algebra


def _dollar_only(levels: tuple[str, ...] | list[str]) -> bool:
    """Does the filter match only `$` names (its first level is a literal starting with `$`)?"""
    return levels[0] not in _WILD and levels[0].startswith("$")


def _matches(levels: tuple[str, ...], name: list[str]) -> bool:
    """`real.mqtt.topics.matches` on already validated, split filter and name (the per-PUBLISH
    path: no re-validation; the tests check it against `matches`)."""
    if name[0].startswith("$") and levels[0] in _WILD:
        return False  # MQTT-4.7.2-1
    for index, level in enumerate(levels):
        if level == "#":
            return True
        if index >= len(name) or (level != "+" and level != name[index]):
            return False
    return len(levels) == len(name)


def _overlaps(a: tuple[str, ...] | list[str], b: tuple[str, ...] | list[str]) -> bool:
    if (a[0] in _WILD and _dollar_only(b)) or (b[0] in _WILD and _dollar_only(a)):
        return False  # one matches only `$` names, the other none (MQTT-4.7.2-1)
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == "#" or y == "#":
            # The other has at least `index` levels and '#' matches its parent level, except
            # that a one-level witness whose level must be empty is "", not a topic name.
            return not (index == 1 and (x is None or y is None) and "" in (a[0], b[0]))
        if x is None or y is None:
            return False  # different lengths, no '#'
        if x != "+" and y != "+" and x != y:
            return False
    return True


def _covers(a: tuple[str, ...] | list[str], b: tuple[str, ...] | list[str]) -> bool:
    if a[0] in _WILD and _dollar_only(b):
        return False  # b matches only `$` names, a none of them
    for index, x in enumerate(a):
        if x == "#":
            return True  # b agreed so far and has at least `index` levels
        if index >= len(b):
            return False  # b's names are shorter than a's
        y = b[index]
        if y == "#":
            return _covers_rest(a[index:], index, b[0])
        if x != "+" and x != y:
            return False
    return len(a) == len(b)


def _covers_rest(rest: tuple[str, ...] | list[str], index: int, first: str) -> bool:
    """Does the filter tail `rest` match every continuation a '#' at level `index` allows?
    '#' matches zero or more further levels, but at least one at level 0 (a name has a level)
    and at level 1 after an empty first level (the one-level name "" is not a topic name).
    Zero or more: only "#" does; one or more: "#" and "+/#"."""
    at_least_one = index == 0 or (index == 1 and first == "")
    return list(rest) == ["#"] or (at_least_one and list(rest) == ["+", "#"])


def overlaps(a: str, b: str) -> bool:
    """Is some topic name matched by both filters `a` and `b`? (`$share/` prefixes are not
    stripped; pass plain filters.) Length limits aside, exact: see tests/mqtt/test_auth.py."""
    return _overlaps(validate_topic_filter(a), validate_topic_filter(b))


def covers(rule_filter: str, sub_filter: str) -> bool:
    """Does `rule_filter` match every topic name that `sub_filter` matches? Examples:
    `covers("a/#", "a")`, `covers("+/#", "#")`, not `covers("a/+", "a/#")` (`"a/#"` matches
    `"a"`), not `covers("#", "$SYS/x")` (the `$` rule)."""
    return _covers(validate_topic_filter(rule_filter), validate_topic_filter(sub_filter))


# ---------------------------------------------------------------------------------------------
# ACL


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed `[[rule]]`. `user` None = anyone; `client_id` None = any client."""

    index: int
    """1-based position in the file."""
    allow: bool
    publish: bool
    subscribe: bool
    topic: str
    user: str | None
    client_id: str | None

    def is_for(self, user: str | None, client_id: str) -> bool:
        if self.user is not None and (user is None or self.user != user or not self.user):
            return False  # user "" matches no one
        pattern = self.client_id
        if pattern is None:
            return True
        if pattern.endswith("*"):
            return client_id.startswith(pattern[:-1])
        return client_id == pattern


def _usable(value: str | None) -> bool:
    """May `value` stand in a topic level? (non-empty, no separator/wildcard/NUL, no `$`)"""
    if not value or value.startswith("$"):
        return False
    return not any(bad in value for bad in ("/", "+", "#", "\x00"))


@dataclass(frozen=True, slots=True)
class _Bound:
    """A rule with its placeholders filled in for one client. `levels` None: matches every
    topic name and overlaps every filter (a deny rule whose placeholder value was unusable)."""

    allow: bool
    publish: bool
    subscribe: bool
    topic: str | None
    levels: tuple[str, ...] | None


def _bind(rule: Rule, user: str | None, client_id: str) -> _Bound | None:
    """`rule` for this client, or None if it does not apply to it."""
    levels = rule.topic.split("/")
    if "%u" in levels or "%c" in levels:
        values = {"%u": user, "%c": client_id}
        usable = all(_usable(values[level]) for level in levels if level in values)
        if usable:
            levels = [str(values[level]) if level in values else level for level in levels]
            try:
                validate_topic_filter("/".join(levels))  # a long value can pass the byte limit
            except TopicError:
                usable = False
        if not usable:
            if rule.allow:
                return None
            return _Bound(False, rule.publish, rule.subscribe, None, None)  # fail closed
    topic = "/".join(levels)
    assert "%u" not in levels and "%c" not in levels
    return _Bound(rule.allow, rule.publish, rule.subscribe, topic, tuple(levels))


@dataclass(frozen=True, slots=True)
class ClientAcl:
    """The ACL as it applies to one client (user, client id): the rules that are for it, in
    order, placeholders filled in. Build it once per connection with `Acl.for_client` and call
    its checks per packet."""

    default_allow: bool
    publish_rules: tuple[_Bound, ...]
    subscribe_rules: tuple[_Bound, ...]

    @property
    def needs_receive_check(self) -> bool:
        """False when `check_receive` is True for every topic, so a broker may skip it."""
        return not self.default_allow or any(not r.allow for r in self.subscribe_rules)

    def check_publish(self, topic_name: str) -> bool:
        """May this client publish to `topic_name` (a valid name; TopicError otherwise)?"""
        return self._first_match(self.publish_rules, topic_name)

    def check_receive(self, topic_name: str) -> bool:
        """May this client receive a message published to `topic_name`?"""
        return self._first_match(self.subscribe_rules, topic_name)

    def _first_match(self, rules: tuple[_Bound, ...], topic_name: str) -> bool:
        name = validate_topic_name(topic_name)  # once; the rule filters were checked at bind
        first = name[0]
        for rule in rules:
            levels = rule.levels
            if levels is None:
                return rule.allow  # a fail-closed deny: every topic
            if levels[0] != first and levels[0] not in _WILD:
                continue  # the common miss, decided by the first level alone
            if _matches(levels, name):
                return rule.allow
        return self.default_allow

    def check_subscribe(self, topic_filter: str) -> bool:
        """May this client subscribe to `topic_filter` (a `$share/{group}/` prefix is stripped)?
        Refused only if denied as a whole: the first overlapping allow rule grants it, a deny rule
        that covers it before that refuses it, partial deny rules are passed over, and the
        default decides the rest. Deliveries are filtered by `check_receive`."""
        _group, plain = parse_shared(topic_filter)
        levels = validate_topic_filter(plain)
        for rule in self.subscribe_rules:
            if rule.levels is None:
                return rule.allow  # a fail-closed deny: every topic
            if not _overlaps(rule.levels, levels):
                continue
            if rule.allow:
                return True
            if _covers(rule.levels, levels):
                return False
        return self.default_allow


@dataclass(frozen=True, slots=True)
class Acl:
    """A parsed ACL: `default_allow` and the rules in file order. See the module docstring.

    `check_*` look up the client's `ClientAcl` in a cache keyed by (user, client id) that holds
    at most `CLIENT_CACHE_MAX` entries (the oldest is dropped first), so calling them per
    packet costs about what calling the `ClientAcl` directly does."""

    default_allow: bool
    rules: tuple[Rule, ...]
    _clients: dict[tuple[str | None, str], ClientAcl] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def allow_all(cls) -> Acl:
        """No rules, default allow: what a node without an ACL file uses."""
        return cls(True, ())

    @classmethod
    def parse(cls, text: str, source: str = "<acl>") -> Acl:
        """Parse ACL TOML text; raise `AuthConfigError` naming `source`, the rule and the key."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AuthConfigError(f"{source}: invalid TOML: {exc}") from None
        for key in doc:
            if key not in ("default", "rule"):
                raise AuthConfigError(f"{source}: unknown key {key!r} (known: default, rule)")
        default = doc.get("default", "deny")
        if default not in PERMISSIONS:
            raise AuthConfigError(f"{source}: key 'default' must be \"allow\" or \"deny\", "
                                  f"got {default!r}")
        raw_rules = doc.get("rule", [])
        if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
            raise AuthConfigError(f"{source}: key 'rule' must be an array of tables [[rule]]")
        if len(raw_rules) > RULES_MAX:
            raise AuthConfigError(f"{source}: {len(raw_rules)} rules, more than {RULES_MAX}")
        rules = tuple(_parse_rule(raw, index, source)
                      for index, raw in enumerate(raw_rules, start=1))
        assert [rule.index for rule in rules] == list(range(1, len(rules) + 1))
        return cls(default == "allow", rules)

    @property
    def needs_receive_check(self) -> bool:
        """False when no rule, for any client, can deny a delivery (default allow and no
        subscribe/all deny rule): then `check_receive` is always True."""
        return not self.default_allow or any(r.subscribe and not r.allow for r in self.rules)

    def for_client(self, user: str | None, client_id: str) -> ClientAcl:
        """The rules that are for this client, placeholders filled in, split by action."""
        cached = self._clients.get((user, client_id))
        if cached is not None:
            return cached
        if len(self._clients) >= CLIENT_CACHE_MAX:
            del self._clients[next(iter(self._clients))]  # the oldest entry
        bound = [b for rule in self.rules if rule.is_for(user, client_id)
                 if (b := _bind(rule, user, client_id)) is not None]
        result = ClientAcl(self.default_allow, tuple(b for b in bound if b.publish),
                           tuple(b for b in bound if b.subscribe))
        assert len(result.publish_rules) <= len(self.rules)
        assert len(result.subscribe_rules) <= len(self.rules)
        self._clients[(user, client_id)] = result
        assert len(self._clients) <= CLIENT_CACHE_MAX
        return result

    def check_publish(self, user: str | None, client_id: str, topic_name: str) -> bool:
        return self.for_client(user, client_id).check_publish(topic_name)

    def check_subscribe(self, user: str | None, client_id: str, topic_filter: str) -> bool:
        return self.for_client(user, client_id).check_subscribe(topic_filter)

    def check_receive(self, user: str | None, client_id: str, topic_name: str) -> bool:
        return self.for_client(user, client_id).check_receive(topic_name)


def _parse_rule(raw: dict[str, Any], index: int, source: str) -> Rule:
    where = f"{source}: rule {index}"
    for key in raw:
        if key not in RULE_KEYS:
            raise AuthConfigError(f"{where}: unknown key {key!r} (known: {', '.join(RULE_KEYS)})")
    for key in ("permission", "action", "topic"):
        if key not in raw:
            raise AuthConfigError(f"{where}: key {key!r} is required")
    for key in RULE_KEYS:
        if key in raw and not isinstance(raw[key], str):
            raise AuthConfigError(f"{where}: key {key!r} must be a string, "
                                  f"got {type(raw[key]).__name__} {raw[key]!r}")
    if raw["permission"] not in PERMISSIONS:
        raise AuthConfigError(f"{where}: key 'permission' must be one of allow, deny, "
                              f"got {raw['permission']!r}")
    if raw["action"] not in ACTIONS:
        raise AuthConfigError(f"{where}: key 'action' must be one of {', '.join(ACTIONS)}, "
                              f"got {raw['action']!r}")
    topic = _check_rule_topic(raw["topic"], where)
    client_id = raw.get("client_id")
    if client_id is not None and "*" in client_id[:-1]:
        raise AuthConfigError(f"{where}: key 'client_id' {client_id!r} may have '*' only as its "
                              f"last character")
    user = raw.get("user")
    action = raw["action"]
    return Rule(index=index, allow=raw["permission"] == "allow",
                publish=action in ("publish", "all"), subscribe=action in ("subscribe", "all"),
                topic=topic, user=None if user == "*" else user, client_id=client_id)


def _check_rule_topic(topic: str, where: str) -> str:
    try:
        levels = validate_topic_filter(topic)
    except TopicError as exc:
        raise AuthConfigError(f"{where}: key 'topic': {exc.detail}") from None
    if topic.startswith("$share/"):
        raise AuthConfigError(f"{where}: key 'topic' {topic!r} is a shared subscription; "
                              f"name the plain filter (subscriptions are checked without it)")
    for level in levels:
        if ("%u" in level or "%c" in level) and level not in ("%u", "%c"):
            raise AuthConfigError(f"{where}: key 'topic' {topic!r}: level {level!r} has %u or %c "
                                  f"but a placeholder must be a whole level")
    return topic


# ---------------------------------------------------------------------------------------------
# Authenticator


@dataclass(frozen=True, slots=True)
class Login:
    """The outcome of a CONNECT's credentials: `reason` 0 (accepted), 0x86 or 0x87, and the
    username the ACL should see (None: anonymous)."""

    reason: int
    user: str | None


class Authenticator:
    """Decides CONNECT credentials; see "Authentication" in the module docstring."""

    def __init__(self, passwords: PasswordFile | None, allow_anonymous: bool) -> None:
        self.passwords = passwords
        self.allow_anonymous = allow_anonymous

    def login(self, username: str | None, password: bytes | None,
              anonymous_ok: bool | None = None) -> Login:
        """Decide; `anonymous_ok` overrides `allow_anonymous` (a per-listener setting)."""
        anonymous = self.allow_anonymous if anonymous_ok is None else anonymous_ok
        if username is None or self.passwords is None:
            reason = 0 if anonymous else int(ReasonCode.NOT_AUTHORIZED)
            return Login(reason, None)
        if self.passwords.verify(username, password):
            return Login(0, username)
        return Login(int(ReasonCode.BAD_USER_NAME_OR_PASSWORD), None)

    def authenticate(self, username: str | None, password: bytes | None) -> int:
        """0 (ok), 0x86 Bad User Name or Password or 0x87 Not authorized."""
        return self.login(username, password).reason

    def __call__(self, username: str | None, password: bytes | None,
                 anonymous_ok: bool | None = None) -> int:
        """`authenticate` with a per-listener anonymous setting: the broker's hook signature."""
        return self.login(username, password, anonymous_ok).reason


def anonymous_allowed(setting: str | bool, bind_host: str) -> bool:
    """Resolve `allow_anonymous` ("auto", True or False) for a listener bound to `bind_host`:
    "auto" is True only for a loopback address (127.0.0.0/8, ::1) or "localhost"."""
    if isinstance(setting, bool):
        return setting
    assert setting == "auto", setting
    if bind_host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind_host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or wildcard: not known to be loopback
