"""Topic names, filters, shared subscriptions and the subscription trie: validation tables with
reason codes, the limits at and one past their edge, the spec's matching examples, the `$` rule,
pruning under churn, and a stateful Hypothesis test of the trie against brute force `matches`."""

from __future__ import annotations

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from real.mqtt.errors import MqttError
from real.mqtt.topics import (
    TOPIC_BYTES_MAX,
    SubscriptionTrie,
    TopicError,
    matches,
    parse_shared,
    validate_topic_filter,
    validate_topic_name,
)

NAME_INVALID = 0x90
FILTER_INVALID = 0x8F

VALID_NAMES = [
    "a", "/", "a/b", "/a", "a/", "a//b", "$SYS/broker/load", "sport/tennis/player1", " ",
    "ünïcödé/😀", "$share/g/a",
]

INVALID_NAMES = [
    ("", "empty"),
    ("a\x00b", "U+0000"),
    ("a/+", "wildcard"),
    ("a/#", "wildcard"),
    ("a+b", "wildcard"),
    ("#", "wildcard"),
    ("a\ud800", "surrogate"),
]

VALID_FILTERS = [
    "#", "+", "/", "+/+", "/+", "a/#", "a/+/b", "+/tennis/#", "a//b", "$SYS/#", "a/", "+/",
    "$share/g/a",
]

INVALID_FILTERS = [
    ("", "empty"),
    ("a\x00", "U+0000"),
    ("a#", "'#'"),
    ("a/#/b", "'#'"),
    ("#/", "'#'"),
    ("##", "'#'"),
    ("sport/tennis#", "'#'"),
    ("a+", "'+'"),
    ("+a/b", "'+'"),
    ("a/++", "'+'"),
    ("sport+", "'+'"),
    ("\udfff/a", "surrogate"),
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(name: str) -> None:
    assert validate_topic_name(name) == name.split("/")


@pytest.mark.parametrize(("name", "fragment"), INVALID_NAMES)
def test_invalid_names(name: str, fragment: str) -> None:
    with pytest.raises(TopicError) as caught:
        validate_topic_name(name)
    assert caught.value.reason_code == NAME_INVALID
    assert fragment in caught.value.detail
    assert isinstance(caught.value, MqttError)


@pytest.mark.parametrize("topic_filter", VALID_FILTERS + VALID_NAMES)
def test_valid_filters(topic_filter: str) -> None:
    assert validate_topic_filter(topic_filter) == topic_filter.split("/")


@pytest.mark.parametrize(("topic_filter", "fragment"), INVALID_FILTERS)
def test_invalid_filters(topic_filter: str, fragment: str) -> None:
    with pytest.raises(TopicError) as caught:
        validate_topic_filter(topic_filter)
    assert caught.value.reason_code == FILTER_INVALID
    assert fragment in caught.value.detail


def test_error_names_the_level() -> None:
    with pytest.raises(TopicError, match=r"level 2 'c#'.*MQTT-4\.7\.1-1"):
        validate_topic_filter("a/b/c#")
    with pytest.raises(TopicError, match=r"level 1 '\+x'.*MQTT-4\.7\.1-2"):
        validate_topic_filter("a/+x")
    with pytest.raises(TopicError, match=r"level 0 'a\+'.*MQTT-3\.3\.2-2"):
        validate_topic_name("a+/b")


def test_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="topic name must be a str, not bytes"):
        validate_topic_name(b"a")  # type: ignore[arg-type]


@pytest.mark.parametrize("check", [validate_topic_name, validate_topic_filter])
def test_byte_limit_counts_utf8_bytes(check) -> None:
    check("é" * 5, max_bytes=10)  # 10 bytes, at the limit
    with pytest.raises(TopicError, match="11 bytes in UTF-8, more than the limit of 10"):
        check("é" * 5 + "a", max_bytes=10)
    check("a" * TOPIC_BYTES_MAX)
    with pytest.raises(TopicError, match="MQTT-4.7.3-3"):
        check("a" * (TOPIC_BYTES_MAX + 1))


@pytest.mark.parametrize("check", [validate_topic_name, validate_topic_filter])
def test_level_limit(check) -> None:
    check("a/b/c", max_levels=3)
    check("//", max_levels=3)
    with pytest.raises(TopicError, match="4 levels, more than the limit of 3"):
        check("a/b/c/", max_levels=3)


def test_long_culprit_is_shortened_in_the_message() -> None:
    with pytest.raises(TopicError) as caught:
        validate_topic_name("x" * 1000 + "+")
    assert "1001 characters" in caught.value.detail
    assert len(caught.value.detail) < 300


@pytest.mark.parametrize(("topic_filter", "expected"), [
    ("a/b", (None, "a/b")),
    ("$share", (None, "$share")),
    ("$SHARE/g/a", (None, "$SHARE/g/a")),
    ("$shared/g/a", (None, "$shared/g/a")),
    ("$share/g/a", ("g", "a")),
    ("$share/group one/+/x/#", ("group one", "+/x/#")),
    ("$share/g/#", ("g", "#")),
    ("$share/g//", ("g", "/")),
    ("$share/g/$share/h/a", ("g", "$share/h/a")),
])
def test_parse_shared(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert parse_shared(topic_filter) == expected


@pytest.mark.parametrize(("topic_filter", "fragment"), [
    ("$share//a", "empty ShareName"),
    ("$share/+/a", "wildcard"),
    ("$share/#", "ShareName '#' has a wildcard"),
    ("$share/g", "no topic filter"),
    ("$share/g/", "no topic filter"),
    ("$share/g+/a", "'+'"),  # caught by the filter rules first
    ("$share/g/a#", "'#'"),
    ("", "empty"),
])
def test_parse_shared_invalid(topic_filter: str, fragment: str) -> None:
    with pytest.raises(TopicError) as caught:
        parse_shared(topic_filter)
    assert caught.value.reason_code == FILTER_INVALID
    assert fragment in caught.value.detail


def test_parse_shared_limits_count_the_prefix() -> None:
    assert parse_shared("$share/g/a", max_levels=3) == ("g", "a")
    with pytest.raises(TopicError, match="4 levels"):
        parse_shared("$share/g/a/b", max_levels=3)


MATCH_TABLE = [
    # Section 4.7.1.2 examples.
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/#", "sport/tennis", True),
    # Section 4.7.1.3 examples.
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    # Literals and empty levels.
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    ("a/b", "A/b", False),
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
    ("a/#", "a/", True),
    ("a/b/#", "a", False),
    ("+/#", "a", True),
    # Section 4.7.2: the `$` rule.
    ("#", "$SYS/broker", False),
    ("+/broker", "$SYS/broker", False),
    ("+", "$SYS", False),
    ("$SYS/#", "$SYS/broker", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/+", "$SYS/broker", True),
    ("a/#", "a/$x", True),
    ("a/+", "a/$x", True),
    ("$+", "$x", False),  # invalid filter anyway: guarded below
]


@pytest.mark.parametrize(("topic_filter", "name", "expected"), MATCH_TABLE[:-1])
def test_matches(topic_filter: str, name: str, expected: bool) -> None:
    assert matches(topic_filter, name) is expected
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    trie.add(topic_filter, "c", 1)
    assert trie.match(name) == ([(topic_filter, "c", 1)] if expected else [])


def test_matches_validates_both_sides() -> None:
    with pytest.raises(TopicError) as caught:
        matches("$+", "$x")
    assert caught.value.reason_code == FILTER_INVALID
    with pytest.raises(TopicError) as caught:
        matches("#", "a/+")
    assert caught.value.reason_code == NAME_INVALID


def test_trie_add_replace_remove() -> None:
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    assert trie.add("a/+", "c2", "x") is True
    assert trie.add("a/+", "c1", "y") is True
    assert trie.add("a/+", "c2", "z") is False  # replaced
    assert trie.add("#", "c3", "w") is True
    assert trie.add("a/b", "c0", "v") is True
    assert len(trie) == 4
    assert trie.filters() == ["#", "a/+", "a/b"]
    assert trie.match("a/b") == [("#", "c3", "w"), ("a/+", "c1", "y"), ("a/+", "c2", "z"),
                                 ("a/b", "c0", "v")]
    assert trie.remove("a/+", "c9") is False
    assert trie.remove("x/y", "c1") is False
    assert trie.remove("a/+", "c2") is True
    assert trie.remove("a/+", "c2") is False
    assert len(trie) == 3
    assert trie.match("a/c") == [("#", "c3", "w"), ("a/+", "c1", "y")]
    trie.invariants()


def test_trie_rejects_bad_input() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie(max_levels=3)
    with pytest.raises(TopicError, match="shared subscription") as caught:
        trie.add("$share/g/a", "c", 1)
    assert caught.value.reason_code == FILTER_INVALID
    with pytest.raises(TopicError, match="4 levels"):
        trie.add("a/b/c/d", "c", 1)
    with pytest.raises(TopicError) as caught:
        trie.match("a/#")
    assert caught.value.reason_code == NAME_INVALID
    with pytest.raises(TopicError):
        trie.remove("a#", "c")
    assert len(trie) == 0
    assert trie.node_count() == 1


def test_trie_prunes_under_churn() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    trie.add("keep/+", "k", 0)
    baseline = trie.node_count()
    assert baseline == 3
    for cycle in range(50):
        for index in range(20):
            trie.add(f"churn/{cycle}/{index}/#", f"c{index}", index)
            trie.add(f"keep/+/{cycle}", f"c{index}", index)
        assert trie.node_count() > baseline
        for index in range(20):
            assert trie.remove(f"churn/{cycle}/{index}/#", f"c{index}")
            assert trie.remove(f"keep/+/{cycle}", f"c{index}")
        trie.invariants()
        assert trie.node_count() == baseline
    assert len(trie) == 1
    assert trie.remove("keep/+", "k")
    assert trie.node_count() == 1


def test_trie_prunes_only_the_unused_tail() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    trie.add("a", "c", 1)
    trie.add("a/b/c", "c", 2)
    assert trie.node_count() == 4
    trie.remove("a/b/c", "c")
    assert trie.node_count() == 2  # root and "a", which still has a subscriber
    assert trie.match("a") == [("a", "c", 1)]
    trie.invariants()


def test_trie_match_visits_only_matching_branches() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for index in range(2000):
        trie.add(f"unrelated{index}/x/+", "c", index)
    trie.add("x/+", "c", -1)
    trie.add("x/#", "c", -2)
    nodes = trie._matching_nodes(["x", "y"], dollar=False)
    assert len(nodes) == 2
    assert [entry[2] for entry in trie.match("x/y")] == [-2, -1]


LEVELS = ["", "+", "a", "b", "$sys"]
NAME_LEVELS = ["", "a", "b", "$sys"]
KEYS = ["c1", "c2", "c3"]


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(LEVELS), max_size=4))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    text = "/".join(levels)
    return text if text else "#"


names = st.lists(st.sampled_from(NAME_LEVELS), min_size=1, max_size=5).map("/".join).filter(bool)


@given(filters(), names)
def test_matches_agrees_with_a_regex(topic_filter: str, name: str) -> None:
    """An independent formulation of the rules, to check the reference matcher itself."""
    import re

    parts = []
    for index, level in enumerate(topic_filter.split("/")):
        sep = "" if index == 0 else "/"
        if level == "#":
            parts.append("(?:/.*)?" if index else ".*")
        elif level == "+":
            parts.append(sep + "[^/]*")
        else:
            parts.append(sep + re.escape(level))
    expected = re.fullmatch("".join(parts), name, flags=re.DOTALL) is not None
    if name.startswith("$") and topic_filter[0] in "+#":
        expected = False
    assert matches(topic_filter, name) is expected


class TrieMachine(RuleBasedStateMachine):
    """Random add/remove against a dict of (filter, key) -> value; match against brute force."""

    def __init__(self) -> None:
        super().__init__()
        self.trie: SubscriptionTrie[int] = SubscriptionTrie()
        self.model: dict[tuple[str, str], int] = {}
        self.serial = 0

    @rule(topic_filter=filters(), key=st.sampled_from(KEYS))
    def add(self, topic_filter: str, key: str) -> None:
        self.serial += 1
        is_new = (topic_filter, key) not in self.model
        assert self.trie.add(topic_filter, key, self.serial) is is_new
        self.model[(topic_filter, key)] = self.serial

    @rule(topic_filter=filters(), key=st.sampled_from(KEYS))
    def remove(self, topic_filter: str, key: str) -> None:
        existed = self.model.pop((topic_filter, key), None) is not None
        assert self.trie.remove(topic_filter, key) is existed

    @rule(data=st.data())
    def remove_existing(self, data: st.DataObject) -> None:
        if not self.model:
            return
        topic_filter, key = data.draw(st.sampled_from(sorted(self.model)))
        del self.model[(topic_filter, key)]
        assert self.trie.remove(topic_filter, key) is True

    @rule(name=names)
    def match(self, name: str) -> None:
        expected = sorted((f, k, v) for (f, k), v in self.model.items() if matches(f, name))
        note(f"match {name!r} -> {expected}")
        assert self.trie.match(name) == expected

    @invariant()
    def consistent(self) -> None:
        self.trie.invariants()
        assert len(self.trie) == len(self.model)
        assert self.trie.filters() == sorted({f for f, _ in self.model})
        if not self.model:
            assert self.trie.node_count() == 1


TrieMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                         deadline=None)
test_trie_against_brute_force = TrieMachine.TestCase
