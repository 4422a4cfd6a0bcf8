"""The inter-node transport's options: mutual TLS on the peer port (a stranger without a
certificate, or speaking plain TCP, never reaches the handshake) and link faults (drop at either
end, loss, delay keeping order, heal)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from typing import Any

import pytest

from real.cluster.peer import PeerConfig
from real.node.peers import LinkFault, PeerNet, peer_tls
from real.raft.types import Message, MsgType
from real.server.peermsg import BrokerHeartbeat, PeerMessage

SECRET = b"0123456789abcdef-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pair(deliver2, tls=None) -> tuple[PeerNet, PeerNet, list[str]]:
    peers = {1: ("127.0.0.1", _free_port()), 2: ("127.0.0.1", _free_port())}
    logs: list[str] = []
    one = PeerNet(PeerConfig("c", 1, SECRET, frozenset(peers)), peers, lambda m: None,
                  logs.append, random.Random(1), tls=tls)
    two = PeerNet(PeerConfig("c", 2, SECRET, frozenset(peers)), peers, deliver2, logs.append,
                  random.Random(2), tls=tls)
    return one, two, logs


def test_mutual_tls_carries_messages_and_refuses_strangers(certs: tuple[str, str]) -> None:
    cert, key = certs
    tls = peer_tls(cert, key, cert)  # a self-signed certificate is its own CA

    async def run() -> None:
        got: list[Message | PeerMessage] = []
        arrived = asyncio.Event()

        def deliver(msg: Message | PeerMessage) -> None:
            got.append(msg)
            arrived.set()

        one, two, _logs = _pair(deliver, tls)
        await one.start()
        await two.start()
        try:
            one.send(Message(MsgType.HEARTBEAT, 1, 2, 1))
            await asyncio.wait_for(arrived.wait(), 10)
            port = two.peers[2][1]
            # plain TCP: the TLS server never answers it with a frame
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"\x00\x00\x00\x10" + b"x" * 16)
            assert await asyncio.wait_for(r.read(100), 10) == b""
            w.close()
            # TLS without a client certificate: refused in the TLS handshake
            bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            bare.check_hostname = False
            bare.verify_mode = ssl.CERT_NONE
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                r, w = await asyncio.open_connection("127.0.0.1", port, ssl=bare)
                w.write(b"\x00\x00\x00\x02\x01\x01")
                await w.drain()
                data = await asyncio.wait_for(r.read(100), 10)
                if not data:
                    raise ConnectionError("closed")
            assert got == [Message(MsgType.HEARTBEAT, 1, 2, 1)]
        finally:
            await one.close()
            await two.close()

    asyncio.run(run())


def test_link_faults_drop_lose_delay_in_order_and_heal() -> None:
    async def run() -> None:
        got: list[int] = []

        def deliver(msg: Message | PeerMessage) -> None:
            assert isinstance(msg, BrokerHeartbeat)
            got.append(msg.broker_epoch)

        one, two, logs = _pair(deliver)
        await one.start()
        await two.start()
        try:
            async def settle(count: int) -> None:
                for _ in range(500):
                    if len(got) >= count:
                        return
                    await asyncio.sleep(0.01)

            one.send(BrokerHeartbeat(1, 2, 0))
            await settle(1)
            one.set_fault(2, LinkFault(drop_out=True))
            one.send(BrokerHeartbeat(1, 2, 1))
            two.set_fault(1, LinkFault(drop_in=True))
            one.set_fault(2, LinkFault())
            one.send(BrokerHeartbeat(1, 2, 2))  # dropped at the receiving end
            await asyncio.sleep(0.2)
            assert got == [0]
            two.heal()
            one.set_fault(2, LinkFault(delay_ms=80, jitter_ms=40))
            loop = asyncio.get_running_loop()
            started = loop.time()
            for epoch in range(3, 13):
                one.send(BrokerHeartbeat(1, 2, epoch))
            await settle(11)
            assert got == [0, *range(3, 13)], "delayed messages keep their order"
            assert loop.time() - started >= 0.08
            one.set_fault(2, LinkFault(loss=1.0))
            one.send(BrokerHeartbeat(1, 2, 99))
            await asyncio.sleep(0.1)
            assert 99 not in got and one.stats.dropped_fault == 2
            one.heal()
            one.send(BrokerHeartbeat(1, 2, 100))
            await settle(12)
            assert got[-1] == 100
            with pytest.raises(ValueError, match="loss"):
                LinkFault(loss=1.5)
            with pytest.raises(ValueError, match="no peer"):
                one.set_fault(7, LinkFault(drop_out=True))
            assert any("healed" in line for line in logs)
        finally:
            await one.close()
            await two.close()

    asyncio.run(run())


def test_a_burst_is_delivered_together_in_order_and_faults_still_apply() -> None:
    """With `deliver_many`, the messages that arrive in one read reach the node together (it
    settles once for them), in the order sent; one alone goes through `deliver`; a link that
    drops what arrives drops the burst's messages too."""
    async def run() -> None:
        bursts: list[list[int]] = []
        peers = {1: ("127.0.0.1", _free_port()), 2: ("127.0.0.1", _free_port())}
        one = PeerNet(PeerConfig("c", 1, SECRET, frozenset(peers)), peers, lambda m: None,
                      lambda _line: None, random.Random(1))
        two = PeerNet(PeerConfig("c", 2, SECRET, frozenset(peers)), peers,
                      lambda m: bursts.append([m.broker_epoch]), lambda _line: None,
                      random.Random(2),
                      deliver_many=lambda ms: bursts.append([m.broker_epoch for m in ms]))
        await one.start()
        await two.start()
        try:
            async def settle(count: int) -> None:
                for _ in range(500):
                    if sum(map(len, bursts)) >= count:
                        return
                    await asyncio.sleep(0.01)

            one.send(BrokerHeartbeat(1, 2, 0))
            await settle(1)
            assert bursts == [[0]]
            for epoch in range(1, 201):  # queued in one loop turn: one write, few reads
                one.send(BrokerHeartbeat(1, 2, epoch))
            await settle(201)
            assert [e for b in bursts for e in b] == list(range(201))
            assert len(bursts) < 201 and max(map(len, bursts)) > 1
            two.set_fault(1, LinkFault(drop_in=True))
            for epoch in range(300, 310):
                one.send(BrokerHeartbeat(1, 2, epoch))
            await asyncio.sleep(0.2)
            assert [e for b in bursts for e in b] == list(range(201))
            assert two.stats.dropped_fault == 10
        finally:
            await one.close()
            await two.close()

    asyncio.run(run())


def test_a_refused_dial_reports_the_peer_gone() -> None:
    """Nothing listens on peer 2's port (its process is gone): a refused dial reports it.
    Once 2 listens the dial succeeds and messages flow."""

    async def run() -> None:
        gone: list[int] = []
        reported = asyncio.Event()
        peers = {1: ("127.0.0.1", _free_port()), 2: ("127.0.0.1", _free_port())}

        def on_gone(peer: int) -> None:
            gone.append(peer)
            reported.set()

        one = PeerNet(PeerConfig("c", 1, SECRET, frozenset(peers)), peers, lambda m: None,
                      lambda line: None, random.Random(1), gone=on_gone)
        await one.start()
        try:
            await asyncio.wait_for(reported.wait(), 10)
            assert gone[0] == 2 and one.stats.gone >= 1
            got = asyncio.Event()
            two = PeerNet(PeerConfig("c", 2, SECRET, frozenset(peers)), peers,
                          lambda m: got.set(), lambda line: None, random.Random(2))
            await two.start()
            try:
                one.send(BrokerHeartbeat(1, 2, 1))
                await asyncio.wait_for(got.wait(), 10)
                assert one.connected() == [2]
            finally:
                await two.close()
        finally:
            await one.close()

    asyncio.run(run())


def test_a_node_dials_from_its_own_address_only_when_it_is_one_like_the_peers() -> None:
    from real.node.peers import _source_address

    assert _source_address("127.0.0.2", "127.0.0.3") == ("127.0.0.2", 0)
    assert _source_address("0.0.0.0", "127.0.0.3") is None  # a wildcard: the kernel chooses
    assert _source_address("node1.example", "127.0.0.3") is None  # a name
    assert _source_address("127.0.0.2", "::1") is None  # another family


def test_set_peers_dials_new_members_admits_them_and_drops_removed_ones() -> None:
    """Node 3 joins at run time: node 1 learns its address (from meta), dials it and admits
    its connections; once 3 is removed, 1 neither dials it nor admits it."""

    async def run() -> None:
        ports = {n: ("127.0.0.1", _free_port()) for n in (1, 2, 3)}
        logs: list[str] = []
        got3: list[int] = []
        got1: list[int] = []
        arrived = asyncio.Event()

        def into(got: list[int]) -> Any:
            def deliver(msg: Message | PeerMessage) -> None:
                assert isinstance(msg, BrokerHeartbeat)
                got.append(msg.broker_epoch)
                arrived.set()
            return deliver

        initial = {1: ports[1], 2: ports[2]}
        one = PeerNet(PeerConfig("c", 1, SECRET, frozenset(initial)), dict(initial),
                      into(got1), logs.append, random.Random(1))
        three = PeerNet(PeerConfig("c", 3, SECRET, frozenset(ports)), dict(ports), into(got3),
                        logs.append, random.Random(3))
        await one.start()
        await three.start()

        async def wait_for(got: list[int], value: int) -> None:
            for _ in range(500):
                if value in got:
                    return
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 0.02)
            raise AssertionError(f"{value} never arrived: {got}, {logs[-5:]}")

        try:
            three.send(BrokerHeartbeat(3, 1, 1))  # 1 does not know 3 yet: refused
            one.send(BrokerHeartbeat(1, 3, 1))  # no such peer: logged
            await asyncio.sleep(0.2)
            assert got1 == [] and got3 == []
            assert any("node id 3 is not a member" in line for line in logs)
            assert any("no peer 3" in line for line in logs)
            one.set_peers(((2, ""), (3, f"127.0.0.1:{ports[3][1]}")))
            assert one.config.members == frozenset({1, 2, 3})
            one.send(BrokerHeartbeat(1, 3, 2))
            await wait_for(got3, 2)
            three.send(BrokerHeartbeat(3, 1, 3))  # 3's redial is admitted now
            await wait_for(got1, 3)
            one.set_peers(((2, ""),))
            assert one.config.members == frozenset({1, 2}) and sorted(one.peers) == [1, 2]
            assert 3 not in one.connected()
            logs.clear()
            one.send(BrokerHeartbeat(1, 3, 4))
            assert any("no peer 3" in line for line in logs)
        finally:
            await one.close()
            await three.close()

    asyncio.run(run())
