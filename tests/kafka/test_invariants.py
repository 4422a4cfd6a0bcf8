"""`KafkaBroker.invariants()` catches planted corruption (the harness calls it after every input,
so every other test in tests/kafka runs it on healthy states)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from real.kafka import api
from real.kafka.broker import KafkaBroker, KafkaConfig, _FetchWait, _Slot
from real.kafka.codec import RequestHeader
from tests.kafka.harness import Harness, KClient, batch, fetch_body, produce_body


def _setup() -> tuple[Harness, KClient, KClient]:
    """A file-engine topic with a batch, a produce held for durability, a long-poll fetch and
    a group in its first generation."""
    h = Harness(KafkaConfig(default_engine="file"))
    h.create_topic("t")
    producer = h.open("p")
    producer.send(api.PRODUCE, 8, produce_body("t", batch(b"a", b"b")))
    h.flush()
    assert producer.take()
    producer.send(api.PRODUCE, 8, produce_body("t", batch(b"c")))  # held: not durable yet
    consumer = h.open("c")
    consumer.send(api.FETCH, 11, fetch_body("t", 2, max_wait_ms=5_000))  # long poll
    member = h.open("m")
    joined = member.call(api.JOIN_GROUP, 1, {
        "group_id": "g", "session_timeout_ms": 10_000, "rebalance_timeout_ms": 30_000,
        "member_id": "", "group_instance_id": None, "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": b"sub"}]})
    assert joined["error_code"] == 0 and joined["generation_id"] == 1
    b = h.broker
    assert b._produce_waits and b._fetch_waits and b.logs
    b.invariants()
    return h, producer, consumer


def _fetch_wait_on_gone_conn(h: Harness, p: KClient, c: KClient) -> None:
    del h.broker.conns[c.id]  # closed without `closed()` dropping its wait


def _produce_wait_on_gone_conn(h: Harness, p: KClient, c: KClient) -> None:
    del h.broker.conns[p.id]


def _answered_wait(h: Harness, p: KClient, c: KClient) -> None:
    h.broker._fetch_waits[0].slot.data = b"reply"


def _wait_past_the_cap(h: Harness, p: KClient, c: KClient) -> None:
    h.broker._fetch_waits[0].deadline_ms += h.broker.config.fetch_wait_max_ms + 1


def _stray_fetch_wait(h: Harness, p: KClient, c: KClient) -> None:
    gone = h.broker.conns[c.id].__class__(999, "x")  # a conn the broker does not know
    h.broker._fetch_waits.append(_FetchWait(gone, _Slot(), RequestHeader(1, 11, 1, "x"), {},
                                            h.clock.now, ()))


def _log_end_went_back(h: Harness, p: KClient, c: KClient) -> None:
    key, log = next(iter(h.broker.logs.items()))
    seen = h.broker._seen_offsets[key]
    h.broker._seen_offsets[key] = (log, seen[1], seen[2], seen[3], seen[4] + 1)  # was longer


def _high_watermark_beyond_end(h: Harness, p: KClient, c: KClient) -> None:
    log = next(iter(h.broker.logs.values()))
    log._log_end = 1  # below the durable batch's end (2)


def _generation_went_back(h: Harness, p: KClient, c: KClient) -> None:
    group = h.broker.groups._groups["g"]
    group.generation_id -= 1


def _member_in_empty_group(h: Harness, p: KClient, c: KClient) -> None:
    from real.kafka.group import EMPTY

    h.broker.groups._groups["g"].state = EMPTY  # with its member still in it


def _pid_past_limit(h: Harness, p: KClient, c: KClient) -> None:
    h.broker._pid_next = h.broker._pid_limit + 1


def _pid_waiter_without_proposal(h: Harness, p: KClient, c: KClient) -> None:
    h.broker._pid_waiters.append(lambda _pid: None)


def _conn_under_wrong_id(h: Harness, p: KClient, c: KClient) -> None:
    h.broker.conns[12345] = h.broker.conns[c.id]


CORRUPTIONS: list[Callable[[Harness, KClient, KClient], None]] = [
    _fetch_wait_on_gone_conn, _produce_wait_on_gone_conn, _answered_wait, _wait_past_the_cap,
    _stray_fetch_wait, _log_end_went_back, _high_watermark_beyond_end, _generation_went_back,
    _member_in_empty_group, _pid_past_limit, _pid_waiter_without_proposal, _conn_under_wrong_id,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_planted_corruption_is_caught(corrupt: Callable[[Harness, KClient, KClient], None]
                                      ) -> None:
    h, producer, consumer = _setup()
    corrupt(h, producer, consumer)
    with pytest.raises(AssertionError):
        h.broker.invariants()


def test_a_deleted_and_recreated_group_may_start_again() -> None:
    """Generations are compared only for the same group object."""
    h, _p, _c = _setup()
    groups = h.broker.groups
    old = groups._groups.pop("g")
    groups._groups["g"] = type(old)("g")  # generation 0, a new group
    h.broker.invariants()


def test_healthy_life_passes() -> None:
    h, producer, consumer = _setup()
    h.flush()
    assert producer.take() and consumer.take()
    h.advance(20_000)  # the member's session runs out: the group empties, generation 2
    b: KafkaBroker = h.broker
    assert b.groups.generation("g") == 2
    b.invariants()
