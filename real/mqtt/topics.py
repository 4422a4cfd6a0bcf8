"""MQTT topic names, topic filters, shared subscriptions and the subscription trie (sans-I/O).

Rules, with the normative statement IDs of MQTT 5.0 (the 3.1.1 IDs in brackets where they differ):

* A topic name or filter is at least one character long (MQTT-4.7.3-1), has no U+0000
  (MQTT-4.7.3-2), is well-formed UTF-8, so no lone surrogates (MQTT-1.5.4-1), and encodes to at
  most `max_bytes` bytes, never more than 65,535 (MQTT-4.7.3-3).
* Levels are the pieces between `/` separators; `"a//b"` has three levels, the middle one empty,
  and `"/a"` has two. At most `max_levels` levels (an implementation limit, not the spec's).
* A topic name has no `+` and no `#` (MQTT-3.3.2-2 [MQTT-4.7.1-1]).
* In a filter, `#` is only ever the whole last level (MQTT-4.7.1-1 [MQTT-4.7.1-2]) and `+` is
  only ever a whole level (MQTT-4.7.1-2 [MQTT-4.7.1-3]).
* `$share/{ShareName}/{filter}` is a shared subscription: ShareName is at least one character
  and has no `/`, `+` or `#` (MQTT-4.8.2-1, MQTT-4.8.2-2), and `{filter}` is a non-empty filter.
* Matching: `+` matches exactly one level (empty levels included), `#` matches the parent level
  and any number of child levels, so `"a/#"` matches `"a"`, `"a/"` and `"a/b/c"` (4.7.1.2).
  A filter whose first level is `+` or `#` never matches a name that starts with `$`
  (MQTT-4.7.2-1); `"$SYS/#"` does.

Nothing here does I/O, reads a clock or iterates a set; `SubscriptionTrie.match` returns its
results sorted by (filter, key), so fan-out order never depends on insertion history.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from real.mqtt.errors import MqttError
from real.mqtt.reasons import ReasonCode

TOPIC_BYTES_MAX = 65_535  # MQTT-4.7.3-3: a UTF-8 Encoded String's two-byte length prefix
TOPIC_LEVELS_MAX = 200  # ours; mosquitto uses the same bound (TOPIC_HIERARCHY_LIMIT)
SHARE_PREFIX = "$share/"

_NAME_INVALID = ReasonCode.TOPIC_NAME_INVALID  # 0x90
_FILTER_INVALID = ReasonCode.TOPIC_FILTER_INVALID  # 0x8F

V = TypeVar("V")


class TopicError(MqttError):
    """A topic name (reason 0x90) or topic filter (reason 0x8F) breaks a rule; `detail` says
    which string, which level or character, and which rule."""


def _show(text: str) -> str:
    """`text` for an error message: its repr, cut to about 60 characters."""
    if len(text) <= 60:
        return repr(text)
    return f"{text[:57]!r}... ({len(text)} characters)"


def _check_common(text: str, what: str, reason: int, max_levels: int, max_bytes: int) -> list[str]:
    """The rules names and filters share; returns the levels of `text`."""
    assert 1 <= max_levels, max_levels
    assert 1 <= max_bytes <= TOPIC_BYTES_MAX, max_bytes
    if type(text) is not str:
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    if not text:
        raise TopicError(reason, f"{what} is empty (MQTT-4.7.3-1)")
    nul = text.find("\x00")
    if nul >= 0:
        raise TopicError(reason, f"{what} {_show(text)} has U+0000 at index {nul} (MQTT-4.7.3-2)")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise TopicError(reason, f"{what} {_show(text)} has a lone surrogate at index "
                                 f"{error.start}, not well-formed UTF-8 (MQTT-1.5.4-1)") from None
    if size > max_bytes:
        raise TopicError(reason, f"{what} {_show(text)} is {size} bytes in UTF-8, "
                                 f"more than the limit of {max_bytes} (MQTT-4.7.3-3)")
    levels = text.split("/")
    if len(levels) > max_levels:
        raise TopicError(reason, f"{what} {_show(text)} has {len(levels)} levels, "
                                 f"more than the limit of {max_levels}")
    assert levels, text
    assert "/".join(levels) == text
    return levels


def validate_topic_name(
    name: str, max_levels: int = TOPIC_LEVELS_MAX, max_bytes: int = TOPIC_BYTES_MAX
) -> list[str]:
    """Check `name` as a PUBLISH topic name and return its levels; raise `TopicError` (0x90).

    A name is non-empty, has no U+0000 and no wildcard, is well-formed UTF-8 of at most
    `max_bytes` bytes and has at most `max_levels` levels. A leading `$` is allowed.
    """
    levels = _check_common(name, "topic name", _NAME_INVALID, max_levels, max_bytes)
    for index, level in enumerate(levels):
        if "+" in level or "#" in level:
            raise TopicError(_NAME_INVALID, f"topic name {_show(name)}: level {index} "
                                            f"{_show(level)} has a wildcard (MQTT-3.3.2-2)")
    assert len(levels) <= max_levels
    assert "+" not in name and "#" not in name
    return levels


def validate_topic_filter(
    topic_filter: str, max_levels: int = TOPIC_LEVELS_MAX, max_bytes: int = TOPIC_BYTES_MAX
) -> list[str]:
    """Check `topic_filter` and return its levels; raise `TopicError` (0x8F).

    Besides the rules of `validate_topic_name` (wildcards aside): `+` is allowed only as a whole
    level and `#` only as the whole last level. A `$share/...` filter passes if it is a
    well-formed filter as a whole; `parse_shared` applies the shared-subscription rules.
    """
    levels = _check_common(topic_filter, "topic filter", _FILTER_INVALID, max_levels, max_bytes)
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise TopicError(_FILTER_INVALID, f"topic filter {_show(topic_filter)}: level "
                                              f"{index} {_show(level)} has '#' but '#' may only "
                                              f"be the whole last level (MQTT-4.7.1-1)")
        if "+" in level and level != "+":
            raise TopicError(_FILTER_INVALID, f"topic filter {_show(topic_filter)}: level "
                                              f"{index} {_show(level)} has '+' but '+' must be "
                                              f"a whole level (MQTT-4.7.1-2)")
    assert "#" not in levels[:-1]
    assert all(level in ("+", "#") or ("+" not in level and "#" not in level) for level in levels)
    return levels


def parse_shared(
    topic_filter: str, max_levels: int = TOPIC_LEVELS_MAX, max_bytes: int = TOPIC_BYTES_MAX
) -> tuple[str | None, str]:
    """Split a subscription's filter into (ShareName or None, the filter to match against).

    `"$share/g/a/+"` gives `("g", "a/+")`; a filter that does not start with `"$share/"` gives
    `(None, topic_filter)`. The whole string is first checked by `validate_topic_filter`, so the
    limits apply to it including the prefix. Raise `TopicError` (0x8F) if the ShareName is empty
    or has `+` or `#` (it cannot have `/`: the first `/` after the prefix ends it), or if no
    `/{filter}` or an empty filter follows it (MQTT-4.8.2-1, MQTT-4.8.2-2).
    """
    validate_topic_filter(topic_filter, max_levels, max_bytes)
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    group, separator, inner = topic_filter[len(SHARE_PREFIX):].partition("/")
    shown = _show(topic_filter)
    if not group:
        raise TopicError(_FILTER_INVALID, f"shared subscription {shown} has an empty ShareName "
                                          f"(MQTT-4.8.2-1)")
    if "+" in group or "#" in group:
        raise TopicError(_FILTER_INVALID, f"shared subscription {shown}: ShareName "
                                          f"{_show(group)} has a wildcard (MQTT-4.8.2-2)")
    if not separator or not inner:
        raise TopicError(_FILTER_INVALID, f"shared subscription {shown} has no topic filter "
                                          f"after ShareName {_show(group)} (MQTT-4.8.2-1)")
    assert "/" not in group
    assert topic_filter == f"{SHARE_PREFIX}{group}/{inner}"
    return group, inner


def matches(topic_filter: str, name: str) -> bool:
    """The reference matcher: does `topic_filter` (not a `$share/` one; strip it with
    `parse_shared`) match the topic name `name`? Both are validated first (default limits).

    Level by level: a literal level matches only an equal level, `+` any one level, and `#`
    everything from its level on, including nothing (`"a/#"` matches `"a"`). A filter starting
    with a wildcard does not match a name starting with `$` (MQTT-4.7.2-1).
    """
    filter_levels = validate_topic_filter(topic_filter)
    name_levels = validate_topic_name(name)
    if name.startswith("$") and filter_levels[0] in ("+", "#"):
        return False  # MQTT-4.7.2-1
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True  # the last level (validated); it also matches the parent level
        if index >= len(name_levels):
            return False
        if level != "+" and level != name_levels[index]:
            return False
    return len(filter_levels) == len(name_levels)


class _Node(Generic[V]):
    """One level of the trie. `subscribers` maps key -> value for the filter ending here."""

    __slots__ = ("children", "subscribers", "topic_filter")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.subscribers: dict[str, V] = {}
        self.topic_filter: str | None = None  # set while `subscribers` is non-empty


class SubscriptionTrie(Generic[V]):
    """Subscriptions (filter, key) -> value, matched against topic names by walking levels.

    `key` identifies the subscriber (a client id, or for shared subscriptions whatever the caller
    builds from group and client); one (filter, key) pair holds one value and adding it again
    replaces the value. Filters are plain: `$share/` ones are refused, so strip them with
    `parse_shared` first. `remove` prunes every node left with no subscribers and no children,
    so the node count depends only on the current subscriptions, never on past churn.

    `match(name)` visits only the trie branches that can match `name` (for each level at most
    the literal child, the `+` child and the `#` child), so its cost does not grow with
    subscriptions on unrelated branches.
    """

    def __init__(self, max_levels: int = TOPIC_LEVELS_MAX, max_bytes: int = TOPIC_BYTES_MAX):
        assert 1 <= max_levels, max_levels
        assert 1 <= max_bytes <= TOPIC_BYTES_MAX, max_bytes
        self.max_levels = max_levels
        self.max_bytes = max_bytes
        self._root: _Node[V] = _Node()
        self._count = 0

    def __len__(self) -> int:
        """The number of (filter, key) subscriptions."""
        return self._count

    def add(self, topic_filter: str, key: str, value: V) -> bool:
        """Subscribe `key` to `topic_filter` with `value`; True if new, False if it replaced a
        value. Raise `TopicError` (0x8F) for an invalid or a `$share/` filter."""
        levels = validate_topic_filter(topic_filter, self.max_levels, self.max_bytes)
        if topic_filter.startswith(SHARE_PREFIX):
            raise TopicError(_FILTER_INVALID, f"topic filter {_show(topic_filter)} is a shared "
                                              f"subscription; add the filter parse_shared returns")
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        is_new = key not in node.subscribers
        node.subscribers[key] = value
        node.topic_filter = topic_filter
        self._count += int(is_new)
        assert node.subscribers[key] is value
        assert self._count >= len(node.subscribers)
        return is_new

    def remove(self, topic_filter: str, key: str) -> bool:
        """Unsubscribe `key` from `topic_filter`; True if it was subscribed. Prunes empty nodes.
        Raise `TopicError` (0x8F) only for a filter that is not a valid filter at all."""
        levels = validate_topic_filter(topic_filter, self.max_levels, self.max_bytes)
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if key not in node.subscribers:
            return False
        del node.subscribers[key]
        self._count -= 1
        if not node.subscribers:
            node.topic_filter = None
        for parent, level in reversed(path):  # prune bottom-up, stop at the first node in use
            child = parent.children[level]
            if child.subscribers or child.children:
                break
            del parent.children[level]
        assert self._count >= 0
        assert key not in node.subscribers
        return True

    def match(self, name: str) -> list[tuple[str, str, V]]:
        """Every (filter, key, value) whose filter matches topic name `name`, sorted by filter
        then key. Raise `TopicError` (0x90) for an invalid name."""
        levels = validate_topic_name(name, self.max_levels, self.max_bytes)
        found: list[tuple[str, str, V]] = []
        for node in self._matching_nodes(levels, name.startswith("$")):
            assert node.topic_filter is not None
            for key, value in node.subscribers.items():
                found.append((node.topic_filter, key, value))
        found.sort(key=lambda entry: (entry[0], entry[1]))
        assert len(found) <= self._count
        return found

    def _matching_nodes(self, levels: list[str], dollar: bool) -> list[_Node[V]]:
        """The nodes with subscribers whose filter matches `levels`, in no promised order.
        Walks only the literal, `+` and `#` children at each level (depth-first, explicit stack).
        """
        out: list[_Node[V]] = []
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            wild_ok = depth > 0 or not dollar  # MQTT-4.7.2-1
            multi = node.children.get("#")
            if multi is not None and wild_ok and multi.subscribers:
                out.append(multi)  # '#' matches this level's parent and all below
            if depth == len(levels):
                if node.subscribers:
                    out.append(node)
                continue
            literal = node.children.get(levels[depth])
            if literal is not None:
                stack.append((literal, depth + 1))
            single = node.children.get("+")
            if single is not None and wild_ok:
                stack.append((single, depth + 1))
        assert len(out) == len({id(node) for node in out})  # each node reached by one path
        return out

    def filters(self) -> list[str]:
        """Every filter with at least one subscriber, sorted."""
        out: list[str] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node.topic_filter is not None:
                out.append(node.topic_filter)
            stack.extend(node.children.values())
        out.sort()
        assert len(out) <= self._count
        return out

    def node_count(self) -> int:
        """The number of trie nodes, root included (1 when empty)."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
        assert count >= 1
        return count

    def invariants(self) -> None:
        """Check the trie's structure: every non-root node has subscribers or children, filters
        are set exactly where subscribers are and spell the node's path, and the count adds up."""
        total = 0
        stack: list[tuple[_Node[V], list[str]]] = [(self._root, [])]
        while stack:
            node, path = stack.pop()
            assert path == [] or node.subscribers or node.children, path  # pruned
            assert (node.topic_filter is None) == (not node.subscribers), path
            if node.topic_filter is not None:
                assert node.topic_filter == "/".join(path), (node.topic_filter, path)
            total += len(node.subscribers)
            for level, child in node.children.items():
                stack.append((child, [*path, level]))
        assert self._root.topic_filter is None
        assert total == self._count, (total, self._count)
