"""real.mqtt.auth: the Mosquitto password-file format (vectors written by mosquitto_passwd), the
filter algebra `overlaps`/`covers` proved against brute force over a small topic universe
(exhaustively and with Hypothesis), the ACL against a brute-force reference model, placeholders,
parse errors that name source/line/rule/key, and the Authenticator's decision table."""

from __future__ import annotations

import itertools
from functools import cache

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from real.mqtt.auth import (
    Acl,
    AuthConfigError,
    Authenticator,
    PasswordFile,
    anonymous_allowed,
    covers,
    hash_password,
    overlaps,
)
from real.mqtt.topics import TopicError, matches

# Written by `mosquitto_passwd -b` (2.0.x) here: alice/secret ($7$), carol/pw6 (-H sha512, $6$).
ALICE = ("alice:$7$101$qaIHEfmIh7Dq8ccx$Q8Nlt8nNWN28Q8KWpDx9QDrXGPlfAN0taiE9WMJtfLewe8BPMJsT2q"
         "Dh++i0Abc/83NhsIr0jQHstnPL4ZC0HA==")
CAROL = ("carol:$6$tNdDIzz3R5Maw+Xt$faIW24+tpo7j3Qh3si4w1g4IldIxmWOpe10cPrk1BVzeh5ey/HDaLxCJMfa"
         "tVO5DpHry7zYUSYZEOQapDc78uQ==")


# --- password file ---------------------------------------------------------------------------


def test_mosquitto_vectors_verify() -> None:
    pw = PasswordFile.parse(f"# users\n{ALICE}\n\n{CAROL}\r\n")
    assert pw.users() == ["alice", "carol"]
    assert pw.verify("alice", b"secret") and pw.verify("carol", b"pw6")
    assert not pw.verify("alice", b"Secret") and not pw.verify("carol", b"pw7")
    assert not pw.verify("alice", None) and not pw.verify("carol", b"")
    assert not pw.verify("mallory", b"secret") and not pw.verify("alice", b"pw6")


def test_hash_password_matches_mosquitto_layout() -> None:
    salt = bytes(range(12))
    text = hash_password(b"secret", salt)
    parts = text.split("$")
    assert parts[:3] == ["", "7", "101"] and len(parts) == 5
    assert parts[3] == "AAECAwQFBgcICQoL"  # standard base64 of the 12 salt bytes
    assert len(parts[4]) == 88 and parts[4].endswith("==")  # 64 bytes
    assert hash_password(b"secret", salt) == text  # deterministic given the salt
    assert hash_password(b"secret", salt, iterations=1000).startswith("$7$1000$")
    pw = PasswordFile.parse("").with_user("bob", text)
    assert pw.verify("bob", b"secret") and not pw.verify("bob", b"secreT")
    with pytest.raises(ValueError, match="salt must be"):
        hash_password(b"x", b"")
    with pytest.raises(ValueError, match="iterations must be"):
        hash_password(b"x", salt, iterations=0)


def test_edit_and_render_keep_comments_and_order() -> None:
    text = f"# header\n{ALICE}\n\n# carol below\n{CAROL}\n"
    pw = PasswordFile.parse(text, "pw")
    assert pw.render() == text
    new_hash = hash_password(b"new", b"saltsaltsalt")
    changed = pw.with_user("alice", new_hash)
    assert changed.users() == ["alice", "carol"]  # replaced in place
    assert changed.verify("alice", b"new") and not changed.verify("alice", b"secret")
    assert pw.verify("alice", b"secret")  # the original is unchanged
    added = changed.with_user("dave", new_hash)
    assert added.users() == ["alice", "carol", "dave"]
    removed = added.without_user("carol")
    assert removed.users() == ["alice", "dave"] and not removed.verify("carol", b"pw6")
    assert "# carol below" in removed.render() and "carol:" not in removed.render()
    assert PasswordFile.parse(removed.render()).users() == ["alice", "dave"]
    with pytest.raises(KeyError):
        removed.without_user("carol")


@pytest.mark.parametrize("name", ["", "a:b", "a\nb", "#root", " #x", "nul\x00"])
def test_bad_usernames_refused(name: str) -> None:
    with pytest.raises(ValueError, match="username"):
        PasswordFile.parse("").with_user(name, hash_password(b"p", b"s"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "pw: line 1: expected username:hash, found no ':'"),
        ("# c\n:$6$AAAA$x\n", "pw: line 2: username is empty"),
        (f"{ALICE}\n{ALICE}\n", "pw: line 2: user 'alice' appears a second time"),
        ("bob:plaintext\n", "pw: line 1: user 'bob': hash 'plaintext' is neither $7$"),
        ("bob:$7$x$AAAA$AAAA\n", "pw: line 1: user 'bob': iterations 'x' must be an integer"),
        ("bob:$7$0$AAAA$AAAA\n", "iterations '0' must be an integer in [1, 1000000]"),
        ("bob:$7$9999999$AAAA$AAAA\n", "iterations '9999999' must be an integer"),
        ("bob:$7$101$!!$AAAA\n", "user 'bob': salt '!!' is not valid base64"),
        ("bob:$7$101$AAAA$AAAA\n", "user 'bob': hash is 3 bytes, a SHA-512 hash is 64"),
        ("bob:$7$101$$" + "A" * 86 + "==\n", "salt is 0 bytes"),
        ("bob:$6$AAAA\n", "is neither"),
    ],
)
def test_password_parse_errors_name_source_and_line(text: str, message: str) -> None:
    with pytest.raises(AuthConfigError) as info:
        PasswordFile.parse(text, "pw")
    assert str(info.value).startswith("pw: line ")
    assert message in str(info.value)


# --- overlaps / covers against brute force ---------------------------------------------------

FILTER_LEVELS = ["a", "", "$x", "+"]
NAME_LEVELS = ["a", "", "z", "$x"]  # "z" appears in no filter: a witness for '+'
FILTER_LEVELS_MAX = 3  # '#' counted; names go one level deeper so '#' has room to extend


def all_filters() -> list[str]:
    out = []
    for size in range(1, FILTER_LEVELS_MAX + 1):
        for levels in itertools.product(FILTER_LEVELS, repeat=size):
            out.append("/".join(levels))
        for levels in itertools.product(FILTER_LEVELS, repeat=size - 1):
            out.append("/".join([*levels, "#"]))
    return sorted(f for f in out if f)  # the one-empty-level filter is "", not a filter


UNIVERSE = sorted(n for size in range(1, FILTER_LEVELS_MAX + 2)
                  for n in ("/".join(p) for p in itertools.product(NAME_LEVELS, repeat=size))
                  if n)
FILTERS = all_filters()


@cache
def matched(topic_filter: str) -> frozenset[str]:
    """Brute force: the names of UNIVERSE that `real.mqtt.topics.matches` says F matches."""
    return frozenset(name for name in UNIVERSE if matches(topic_filter, name))


def test_algebra_exhaustive_over_small_alphabet() -> None:
    assert len(FILTERS) > 100 and len(UNIVERSE) > 300
    wrong = []
    for a in FILTERS:
        for b in FILTERS:
            ma, mb = matched(a), matched(b)
            assert mb, b  # every filter matches some name of the universe
            if overlaps(a, b) != bool(ma & mb):
                wrong.append(("overlaps", a, b))
            if covers(a, b) != (mb <= ma):
                wrong.append(("covers", a, b))
    assert wrong == []


def levels_strategy() -> st.SearchStrategy[str]:
    level = st.sampled_from(["a", "b", "c", "", "$x", "$", "+"])
    body = st.lists(level, min_size=0, max_size=5)
    return st.tuples(body, st.booleans()).map(
        lambda t: "/".join([*t[0], "#"] if t[1] else t[0])).filter(bool)


def witness_universe(*filters: str) -> list[str]:
    """Every name that can witness a difference between the filters: per level, the literals
    the filters use there plus "z" (used by none), up to one level past the longest filter."""
    split = [f.split("/") for f in filters]
    depth = max(len(levels) for levels in split) + 1
    per_level = []
    for index in range(depth):
        literals = {levels[index] for levels in split if index < len(levels)} - {"+", "#"}
        per_level.append(sorted(literals | {"z"}))
    names = []
    for size in range(1, depth + 1):
        names += ["/".join(p) for p in itertools.product(*per_level[:size])]
    return [n for n in names if n]


@settings(max_examples=80, deadline=None)
@given(levels_strategy(), levels_strategy())
def test_algebra_property_longer_filters(a: str, b: str) -> None:
    universe = witness_universe(a, b)
    ma = {n for n in universe if matches(a, n)}
    mb = {n for n in universe if matches(b, n)}
    note(f"{len(universe)} names; |M(a)|={len(ma)} |M(b)|={len(mb)}")
    assert overlaps(a, b) == bool(ma & mb)
    assert covers(a, b) == (mb <= ma)
    assert covers(a, a) and overlaps(a, b) == overlaps(b, a)
    # the ACL's own matcher (pre-split levels, no re-validation) agrees with `matches`
    client = Acl.parse(f'[[rule]]\npermission="allow"\naction="publish"\ntopic="{a}"\n',
                       "acl").for_client(None, "c")
    assert {n for n in universe if client.check_publish(n)} == ma


@pytest.mark.parametrize(
    ("a", "b", "cov", "ovl"),
    [
        ("a/#", "a", True, True), ("+/#", "#", True, True), ("#", "+/#", True, True),
        ("a/+", "a/#", False, True), ("#", "$SYS/x", False, False), ("$SYS/#", "#", False, False),
        ("+/+", "a/b", True, True), ("a/b", "+/+", False, True), ("a/+/#", "a", False, False),
        ("a//b", "a/+/b", False, True), ("a/b/#", "a/+", False, True),
        ("$SYS/+", "$SYS/a", True, True), ("/+/#", "/#", True, True), ("+", "/#", False, False),
    ],
)
def test_algebra_examples(a: str, b: str, cov: bool, ovl: bool) -> None:
    assert covers(a, b) is cov
    assert overlaps(a, b) is ovl
    assert overlaps(b, a) is ovl


# --- ACL -------------------------------------------------------------------------------------

SMALL_FILTERS = [f for f in FILTERS if f.count("/") <= 1]


@st.composite
def acl_texts(draw: st.DrawFn) -> str:
    lines = [f'default = "{draw(st.sampled_from(["allow", "deny"]))}"']
    for _ in range(draw(st.integers(0, 5))):
        lines += ["[[rule]]",
                  f'permission = "{draw(st.sampled_from(["allow", "deny"]))}"',
                  f'action = "{draw(st.sampled_from(["publish", "subscribe", "all"]))}"',
                  f'topic = "{draw(st.sampled_from(SMALL_FILTERS))}"']
        user = draw(st.sampled_from([None, "alice", "bob", "*", ""]))
        if user is not None:
            lines.append(f'user = "{user}"')
    return "\n".join(lines) + "\n"


def reference(acl: Acl, user: str | None, action: str) -> list[tuple[bool, str]]:
    """(allow, filter) of the rules for `user` and `action`, in order (brute-force model)."""
    out = []
    for rule in acl.rules:
        wants = rule.publish if action == "publish" else rule.subscribe
        for_user = rule.user is None or rule.user == user
        if wants and for_user:
            out.append((rule.allow, rule.topic))
    return out


@settings(max_examples=60, deadline=None)
@given(acl_texts(), st.sampled_from([None, "alice", "bob"]), st.data())
def test_acl_against_brute_force(text: str, user: str | None, data: st.DataObject) -> None:
    acl = Acl.parse(text, "acl")
    note(text)
    client = acl.for_client(user, "c1")
    names = data.draw(st.lists(st.sampled_from(UNIVERSE), min_size=1, max_size=20))
    for name in names:
        pub = next((allow for allow, f in reference(acl, user, "publish") if matches(f, name)),
                   acl.default_allow)
        assert acl.check_publish(user, "c1", name) is pub
        rec = next((allow for allow, f in reference(acl, user, "subscribe") if matches(f, name)),
                   acl.default_allow)
        assert client.check_receive(name) is rec
    for sub in data.draw(st.lists(st.sampled_from(FILTERS), min_size=1, max_size=10)):
        # the first overlapping allow rule grants, a deny rule that covers the filter before it
        # refuses, partial deny rules are passed over, the default decides the rest
        want = next((allow for allow, f in reference(acl, user, "subscribe")
                     if matched(f) & matched(sub) and (allow or matched(sub) <= matched(f))),
                    acl.default_allow)
        assert client.check_subscribe(sub) is want
        assert acl.check_subscribe(user, "c1", f"$share/g/{sub}") is want
        if not want:  # refused only if denied as a whole: no delivery would pass
            assert not any(client.check_receive(n) for n in matched(sub))
    if not client.needs_receive_check:
        assert all(client.check_receive(n) for n in UNIVERSE)


ACL_EXAMPLE = """
default = "deny"
[[rule]]
permission = "deny"
action = "all"
topic = "secret/#"
[[rule]]
permission = "allow"
action = "all"
topic = "users/%u/#"
[[rule]]
permission = "allow"
action = "subscribe"
topic = "devices/%c/cmd"
client_id = "dev-*"
[[rule]]
permission = "allow"
action = "publish"
topic = "telemetry/+"
user = "*"
[[rule]]
permission = "allow"
action = "all"
topic = "admin/#"
user = "root"
[[rule]]
permission = "allow"
action = "all"
topic = "never"
user = ""
"""


def test_acl_example_semantics() -> None:
    acl = Acl.parse(ACL_EXAMPLE, "acl.toml")
    assert [r.index for r in acl.rules] == [1, 2, 3, 4, 5, 6]
    assert acl.check_publish("alice", "c", "users/alice/x")
    assert not acl.check_publish("alice", "c", "users/bob/x")
    assert acl.check_subscribe("alice", "c", "users/alice/#")
    # granted in part: the deliveries are filtered (check_receive)
    assert acl.check_subscribe("alice", "c", "users/+/#")
    client = acl.for_client("alice", "c")
    assert client.check_receive("users/alice/x") and not client.check_receive("users/bob/x")
    assert acl.check_subscribe("root", "c", "#")  # deny secret/# covers only part of it
    assert not acl.for_client("root", "c").check_receive("secret/x")
    assert not acl.check_subscribe("root", "c", "secret/+")  # denied as a whole
    assert acl.check_subscribe("root", "c", "admin/+")
    assert not acl.check_publish("root", "c", "secret/admin")
    assert acl.check_subscribe(None, "dev-7", "devices/dev-7/cmd")
    assert not acl.check_subscribe(None, "phone-7", "devices/phone-7/cmd")
    assert not acl.check_subscribe(None, "dev-7", "devices/dev-8/cmd")
    assert acl.check_publish(None, "x", "telemetry/t1")  # user "*" includes anonymous
    assert not acl.check_publish(None, "x", "users/None/x")  # anonymous: %u never applies
    assert not acl.check_publish("", "x", "never") and not acl.check_publish(None, "x", "never")
    assert not acl.check_publish("root", "x", "$SYS/x")  # default deny
    assert acl.needs_receive_check


def test_one_denied_topic_does_not_refuse_the_wildcards_that_overlap_it() -> None:
    """Mosquitto's rule: hiding one topic must not break every `#` subscriber. A wildcard the
    rules do not deny as a whole is granted (its deliveries filtered); only a subscription denied
    as a whole is refused."""
    acl = Acl.parse('default = "allow"\n[[rule]]\npermission = "deny"\naction = "subscribe"\n'
                    'topic = "test/nosubscribe"\n', "acl")
    for granted in ("#", "+/+", "test/#", "test/+", "+/nosubscribe", "other"):
        assert acl.check_subscribe("u", "c", granted), granted
        assert acl.check_subscribe("u", "c", f"$share/g/{granted}"), granted
    assert not acl.check_subscribe("u", "c", "test/nosubscribe")
    client = acl.for_client("u", "c")
    assert client.needs_receive_check
    assert not client.check_receive("test/nosubscribe") and client.check_receive("test/other")
    strict = Acl.parse('default = "deny"\n[[rule]]\npermission = "deny"\naction = "subscribe"\n'
                       'topic = "test/nosubscribe"\n[[rule]]\npermission = "allow"\n'
                       'action = "subscribe"\ntopic = "test/#"\n', "acl")
    assert strict.check_subscribe("u", "c", "test/#") and strict.check_subscribe("u", "c", "#")
    assert not strict.check_subscribe("u", "c", "other/#")  # nothing there is allowed


def test_placeholder_values_that_cannot_be_a_level() -> None:
    text = """default = "allow"
[[rule]]
permission = "deny"
action = "publish"
topic = "home/%c/#"
[[rule]]
permission = "allow"
action = "subscribe"
topic = "inbox/%u"
"""
    acl = Acl.parse(text, "acl")
    assert not acl.check_publish("u", "c1", "home/c1/x") and acl.check_publish("u", "c1", "home/c2")
    for bad_client in ("a/b", "+", "#", "$sys"):  # the deny rule fails closed: every topic
        assert not acl.check_publish("u", bad_client, "anything")
        assert not acl.check_publish("u", bad_client, "$SYS/x")
    assert acl.for_client("u", "a/b").needs_receive_check is False  # deny is publish-only
    assert acl.check_subscribe("bob", "c", "inbox/bob")
    assert acl.check_subscribe("bob", "c", "inbox/+") is True  # default allow
    assert acl.check_subscribe(None, "c", "inbox/+") is True  # rule 2 is not for anonymous
    long_user = "u" * 65_530  # usable alone, too long once put in the filter
    assert acl.check_subscribe(long_user, "c", "x")
    assert Acl.allow_all().check_publish(None, "c", "$SYS/x")
    assert not Acl.allow_all().needs_receive_check and not Acl.parse("").default_allow


def test_invalid_names_and_filters_raise() -> None:
    acl = Acl.allow_all()
    with pytest.raises(TopicError):
        acl.check_publish(None, "c", "a/+")
    with pytest.raises(TopicError):
        acl.check_subscribe(None, "c", "a/#/b")
    with pytest.raises(TopicError):
        acl.check_receive(None, "c", "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default = 'maybe'\n", "acl.toml: key 'default' must be \"allow\" or \"deny\""),
        ("defualt = 'allow'\n", "acl.toml: unknown key 'defualt'"),
        ("rule = 5\n", "key 'rule' must be an array of tables"),
        ("[[rule]]\naction = 'all'\ntopic = 'a'\n", "rule 1: key 'permission' is required"),
        ("[[rule]]\npermission='allow'\naction='all'\ntopic='a'\n[[rule]]\npermission='allow'\n"
         "action='pub'\ntopic='a'\n", "rule 2: key 'action' must be one of publish, subscribe"),
        ("[[rule]]\npermission='allow'\naction='all'\ntopic='a/#/b'\n", "rule 1: key 'topic':"),
        ("[[rule]]\npermission='allow'\naction='all'\ntopic='$share/g/a'\n", "shared subscr"),
        ("[[rule]]\npermission='allow'\naction='all'\ntopic='u/x%u'\n", "must be a whole level"),
        ("[[rule]]\npermission='allow'\naction='all'\ntopic='a'\nuser=1\n",
         "rule 1: key 'user' must be a string, got int 1"),
        ("[[rule]]\npermission='allow'\naction='all'\ntopic='a'\nclient_id='a*b'\n",
         "rule 1: key 'client_id' 'a*b' may have '*' only as its last character"),
        ("[[rule]]\npermission='allow'\naction='all'\ntopic='a'\nusers='x'\n",
         "rule 1: unknown key 'users'"),
        ("[[rule]\n", "acl.toml: invalid TOML"),
    ],
)
def test_acl_parse_errors(text: str, message: str) -> None:
    with pytest.raises(AuthConfigError) as info:
        Acl.parse(text, "acl.toml")
    assert str(info.value).startswith("acl.toml: ")
    assert message in str(info.value)


# --- Authenticator ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("has_file", "anonymous", "username", "password", "reason", "acl_user"),
    [
        (True, False, "alice", b"secret", 0, "alice"),
        (True, True, "alice", b"secret", 0, "alice"),
        (True, True, "alice", b"wrong", 0x86, None),
        (True, True, "alice", None, 0x86, None),
        (True, True, "nobody", b"x", 0x86, None),
        (True, True, None, None, 0, None),
        (True, False, None, None, 0x87, None),
        (True, False, None, b"secret", 0x87, None),
        (False, True, "alice", b"anything", 0, None),  # unverifiable name: anonymous
        (False, False, "alice", b"secret", 0x87, None),
        (False, False, None, None, 0x87, None),
    ],
)
def test_authenticator(has_file: bool, anonymous: bool, username: str | None,
                       password: bytes | None, reason: int, acl_user: str | None) -> None:
    auth = Authenticator(PasswordFile.parse(ALICE) if has_file else None, anonymous)
    login = auth.login(username, password)
    assert (login.reason, login.user) == (reason, acl_user)
    assert auth.authenticate(username, password) == reason
    assert auth(username, password, anonymous) == reason  # the broker's hook signature
    flipped = auth.login(username, password, anonymous_ok=not anonymous)
    if username is None or not has_file:  # only anonymous logins depend on the setting
        assert flipped.reason == (0 if not anonymous else 0x87)
    else:
        assert flipped == login


def test_acl_client_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import real.mqtt.auth as auth_module

    monkeypatch.setattr(auth_module, "CLIENT_CACHE_MAX", 3)
    acl = Acl.parse(ACL_EXAMPLE, "acl")
    first = acl.for_client("alice", "c0")
    assert acl.for_client("alice", "c0") is first  # cached
    for n in range(1, 6):
        assert acl.check_publish("alice", f"c{n}", "users/alice/x")
        assert len(acl._clients) <= 3
    assert ("alice", "c0") not in acl._clients and ("alice", "c5") in acl._clients
    assert acl.for_client("alice", "c0") == first  # rebuilt equal


def test_anonymous_auto_means_loopback_only() -> None:
    assert anonymous_allowed("auto", "127.0.0.1") and anonymous_allowed("auto", "::1")
    assert anonymous_allowed("auto", "localhost") and anonymous_allowed("auto", "127.8.9.1")
    assert not anonymous_allowed("auto", "0.0.0.0") and not anonymous_allowed("auto", "::")
    assert not anonymous_allowed("auto", "10.0.0.1") and not anonymous_allowed("auto", "host")
    assert anonymous_allowed(True, "0.0.0.0") and not anonymous_allowed(False, "127.0.0.1")
