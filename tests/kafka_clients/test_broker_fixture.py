"""The `kafka_broker` fixture itself: a graceful restart keeps ports and (for TwinMQ) data.

TwinMQ must exit 0 on SIGTERM and come back on the same Kafka port with its log intact. Tansu
runs with memory storage, so after its restart the topic is gone: asserted, so that a change in
that behaviour is noticed rather than silently relied on.
"""

from __future__ import annotations

import pytest

from tests.kafka_clients.clients import Confluent, Rec
from tests.kafka_clients.conftest import KafkaBroker, poll_until

pytestmark = pytest.mark.integration


def test_graceful_restart(kafka_broker: KafkaBroker) -> None:
    c = Confluent(kafka_broker.bootstrap)
    c.create_topic("restart", 1)
    poll_until(lambda: c.topics().get("restart") == 1, "topic listed")
    sent = [Rec(f"k{i}".encode(), f"v{i}".encode(), (("h", b"x"),)) for i in range(5)]
    assert c.produce("restart", sent) == [(0, i) for i in range(5)]
    port = kafka_broker.port
    assert kafka_broker.restart(kill=False) == 0
    assert kafka_broker.port == port
    if kafka_broker.kind == "tansu":
        assert "restart" not in c.topics(), "Tansu memory storage kept a topic over a restart"
        return
    [got] = c.read("restart", [0], len(sent))
    assert [(r.offset, r.key, r.value, r.headers) for r in got] == \
        [(i, r.key, r.value, r.headers) for i, r in enumerate(sent)]
