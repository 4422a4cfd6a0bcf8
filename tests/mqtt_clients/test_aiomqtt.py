"""aiomqtt (asyncio, MQTT 3.1.1 and 5, over TCP and WebSocket) against the broker under test.

Each test is a plain function that runs one coroutine with `asyncio.run`; every wait is bounded
by `asyncio.timeout(WAIT)`, and concurrent readers live in a `TaskGroup`.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from tests.mqtt_clients.conftest import TRANSPORTS, WAIT, Broker

pytestmark = pytest.mark.integration
PROTOCOLS = [pytest.param(aiomqtt.ProtocolVersion.V311, id="v311"),
             pytest.param(aiomqtt.ProtocolVersion.V5, id="v5")]


def client(broker: Broker, identifier: str, protocol: aiomqtt.ProtocolVersion,
           transport: str) -> aiomqtt.Client:
    if transport == "ws":
        return aiomqtt.Client(broker.host, broker.ws_port, identifier=identifier,
                              protocol=protocol, transport="websockets",
                              websocket_path=broker.ws_path, timeout=WAIT)
    return aiomqtt.Client(broker.host, broker.port, identifier=identifier, protocol=protocol,
                          timeout=WAIT)


async def next_messages(c: aiomqtt.Client, count: int) -> list[aiomqtt.Message]:
    """The next `count` messages of `c`, or TimeoutError after WAIT seconds."""
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(WAIT):
        async for m in c.messages:
            got.append(m)
            if len(got) == count:
                return got
    raise AssertionError(f"message stream ended after {len(got)} of {count}")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip(broker: Broker, protocol: aiomqtt.ProtocolVersion, transport: str,
                    qos: int) -> None:
    payload = bytes(range(256)) * 4  # every byte value, 1 KiB

    async def scenario() -> list[aiomqtt.Message]:
        async with client(broker, "sub", protocol, transport) as sub, \
                client(broker, "pub", protocol, transport) as pub:
            await sub.subscribe("aio/t", qos=qos)
            for i in range(3):
                await pub.publish("aio/t", bytes([i]) + payload, qos=qos)
            return await next_messages(sub, 3)

    got = asyncio.run(scenario())
    assert [m.payload for m in got] == [bytes([i]) + payload for i in range(3)]
    assert all(m.topic.value == "aio/t" and m.qos == qos and not m.retain for m in got)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retained(broker: Broker, protocol: aiomqtt.ProtocolVersion, transport: str) -> None:
    async def scenario() -> aiomqtt.Message:
        async with client(broker, "pub", protocol, transport) as pub:
            await pub.publish("aio/ret", b"state=on", qos=1, retain=True)
        async with client(broker, "late", protocol, transport) as late:
            await late.subscribe("aio/ret", qos=1)
            return (await next_messages(late, 1))[0]

    m = asyncio.run(scenario())
    assert (m.topic.value, m.payload, m.retain, m.qos) == ("aio/ret", b"state=on", True, 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_subscription(broker: Broker, protocol: aiomqtt.ProtocolVersion,
                             transport: str) -> None:
    """Two `$share/g/...` members split 40 messages: each delivered once, both get some."""
    total = 40

    async def scenario() -> list[list[bytes]]:
        got: list[list[bytes]] = [[], []]
        done = asyncio.Event()

        async def drain(c: aiomqtt.Client, mine: list[bytes]) -> None:
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                mine.append(m.payload)
                if sum(map(len, got)) >= total:
                    done.set()

        async with client(broker, "m1", protocol, transport) as m1, \
                client(broker, "m2", protocol, transport) as m2, \
                client(broker, "pub", protocol, transport) as pub:
            for m in (m1, m2):
                await m.subscribe("$share/g/aio/jobs", qos=1)
            async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
                readers = [tg.create_task(drain(m1, got[0])), tg.create_task(drain(m2, got[1]))]
                for i in range(total):
                    await pub.publish("aio/jobs", f"job-{i:02d}".encode(), qos=1)
                await done.wait()
                for r in readers:
                    r.cancel()
        return got

    got = asyncio.run(scenario())
    everything = got[0] + got[1]
    assert sorted(everything) == [f"job-{i:02d}".encode() for i in range(total)]
    assert got[0] and got[1], [len(g) for g in got]
