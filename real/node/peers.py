"""The inter-node transport of `twinmq serve`: asyncio TCP carrying `PeerSession`s
(real/cluster/peer.py) between the nodes: Raft messages and the `real.server.peermsg` messages
(shard fetches and replies, broker heartbeats), each in its frame (`real.cluster.wire.peer_frame`).

Each node listens on its own peer address and dials every other peer; messages to a peer go out
on the connection this node dialled, and messages from a peer arrive on the connection that peer
dialled (one TCP connection per direction, as etcd's stream transport). A dialer reconnects with
exponential backoff (RECONNECT_MIN_S to RECONNECT_MAX_S); a refused dial (nothing listens on the
peer's port) is reported (`gone`: the controller takes that node for dead at once); each peer
has a bounded queue (QUEUE_MAX messages: Raft tolerates lost messages, and a lost fetch or
heartbeat is sent again, so when it is full the oldest goes, counted).
An inbound connection must finish the handshake within HANDSHAKE_TIMEOUT_S, and at most
INBOUND_MAX connections are open at once; anything the session refuses is logged and closed.
With `cluster.tls_*` set, every connection is mutual TLS first (`peer_tls`): a stranger without a
certificate from the cluster CA never reaches the handshake.

**Link faults** (`set_fault`, the admin API's `/faults/net`, `twinmq cluster partition|loss|delay`):
per peer, messages to it can be dropped (`drop_out`), messages from it dropped on arrival
(`drop_in`), a fraction lost (`loss`, each message independently) or delayed by `delay_ms` plus a
uniform `jitter_ms` (order kept, as TCP keeps it). Both ends of a partitioned link drop, so the
partition outlives the restart of either node. The faults act on whole messages at the transport
boundary, like a blackholing proxy on the link (Toxiproxy's `timeout`/`latency`): TCP under them
stays up; client traffic is not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from real.cluster.peer import Closed, Established, PeerConfig, PeerSession, Received
from real.cluster.wire import describe
from real.raft.types import Message
from real.server.peermsg import PeerMessage

RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
HANDSHAKE_TIMEOUT_S = 5.0
QUEUE_MAX = 4096
INBOUND_MAX = 64
READ_BYTES = 1 << 18
SOCKET_BUFFER_BYTES = 4 << 20
USER_TIMEOUT_MS = 3000
"""A peer connection whose data stays unacknowledged this long (a link cut in the kernel) is
dropped and dialled again, so that traffic resumes soon after the link heals instead of after
TCP's doubling retransmission backoff (Linux TCP_USER_TIMEOUT)."""


@dataclass
class PeerStats:
    sent: int = 0
    received: int = 0
    dropped_full: int = 0
    connects: int = 0
    refused: int = 0
    dropped_fault: int = 0
    delayed: int = 0
    gone: int = 0


@dataclass
class LinkFault:
    drop_out: bool = False
    drop_in: bool = False
    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be in [0, 1], got {self.loss}")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.delay_ms + self.jitter_ms > 60_000:
            raise ValueError(f"delay_ms and jitter_ms must be >= 0 and add up to at most 60000, "
                             f"got {self.delay_ms} and {self.jitter_ms}")

    @property
    def clean(self) -> bool:
        return self == LinkFault()


class _Outbound:
    def __init__(self, peer_id: int, host: str, port: int) -> None:
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self.queue: deque[Message | PeerMessage] = deque()
        self.ready = asyncio.Event()
        self.connected = False


def peer_tls(cert_file: str, key_file: str, ca_file: str) -> tuple[ssl.SSLContext,
                                                                     ssl.SSLContext]:
    """(server, client) contexts for mutual TLS between the nodes: each side presents its
    certificate and requires the other's to be signed by the cluster CA (`ca_file`; a
    self-signed certificate may be its own CA). TLS 1.2 or later; host names are not checked
    (nodes are addressed by IP; the CA says who is a member, the secret handshake which node)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        ctx.load_verify_locations(ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    client.check_hostname = False
    client.verify_mode = ssl.CERT_REQUIRED
    return server, client


def _socket_buffers(writer: asyncio.StreamWriter) -> None:
    """Kernel buffers for a peer connection large enough for a whole shard reply (fewer partial
    sends: asyncio 3.11 moves its unsent remainder down after each one)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


def _source_address(host: str, peer: str) -> tuple[str, int] | None:
    """(host, 0) if `host` is a specific IP address (not a wildcard or a name) of the same
    family as the peer's address `peer`, else None (let the kernel choose)."""
    try:
        addr, to = ipaddress.ip_address(host), ipaddress.ip_address(peer)
    except ValueError:
        return None
    return None if addr.is_unspecified or addr.version != to.version else (host, 0)


class PeerNet:
    def __init__(self, config: PeerConfig, peers: dict[int, tuple[str, int]],
                 deliver: Callable[[Message | PeerMessage], None], log: Callable[[str], None],
                 rng: random.Random | None = None,
                 tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
                 deliver_many: Callable[[list[Message | PeerMessage]], None] | None = None,
                 gone: Callable[[int], None] | None = None) -> None:
        assert config.node_id in peers, (config.node_id, peers)
        self.config = config
        self.peers = peers
        self.deliver = deliver
        self.deliver_many = deliver_many
        """If given, the messages that arrive in one read are handed over together (the node
        settles once for the burst)."""
        self.gone = gone
        """If given, called with a peer's id each time a connection to it is refused
        (ECONNREFUSED: nothing listens on its peer port, its process is gone)."""
        self.log = log
        self.rng = rng or random.SystemRandom()
        self.stats = PeerStats()
        self._out = {nid: _Outbound(nid, host, port) for nid, (host, port) in peers.items()
                     if nid != config.node_id}
        self._configured = dict(peers)
        """The addresses from this node's configuration (for members meta has none for)."""
        self._server: asyncio.Server | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._inbound: set[asyncio.StreamWriter] = set()
        self._closing = False
        self.tls = tls
        """(server, client) contexts: mutual TLS on the peer port (`peer_tls`), or None."""
        self.faults: dict[int, LinkFault] = {}
        self._release_at: dict[int, float] = {}
        self._own_host = peers[config.node_id][0]
        """Dialled from when it is an IP address like the peer's (so that kernel network
        faults can tell the nodes apart by source address: `twinmq cluster up
        --distinct-hosts`)."""

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        host, port = self.peers[self.config.node_id]
        self._server = await asyncio.start_server(
            self._accept, host, port, ssl=self.tls[0] if self.tls else None,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self.tls else None)
        for out in self._out.values():
            self._dial(out)

    def _dial(self, out: _Outbound) -> None:
        self._tasks[out.peer_id] = asyncio.create_task(self._dial_loop(out),
                                                       name=f"peer-{out.peer_id}")

    def set_peers(self, members: tuple[tuple[int, str], ...]) -> None:
        """The meta membership changed (`NodeReady.members`: every peer to reach, with the
        address meta recorded for it or "" for this node's configured one): dial the new
        peers, stop dialling the removed ones, and accept connections from the members only."""
        want: dict[int, tuple[str, int]] = {}
        for nid, addr in members:
            if addr:
                host, _, port = addr.rpartition(":")
                want[nid] = (host.strip("[]"), int(port))
            elif nid in self._configured:
                want[nid] = self._configured[nid]
            else:
                self.log(f"cluster: no address for member {nid} (not in cluster.peers and "
                         "not recorded in meta): not dialled")
        own = self.config.node_id
        want.pop(own, None)
        for nid in sorted(set(self._out) - set(want)):
            self.log(f"cluster: node {nid} is no longer a member: not dialled any more")
            self._drop(nid)
        for nid, (peer_host, peer_port) in sorted(want.items()):
            out = self._out.get(nid)
            if out is not None and (out.host, out.port) == (peer_host, peer_port):
                continue
            if out is not None:
                self._drop(nid)
            self.log(f"cluster: member {nid} at {peer_host}:{peer_port}")
            self._out[nid] = _Outbound(nid, peer_host, peer_port)
            if self._server is not None and not self._closing:
                self._dial(self._out[nid])
        self.peers = {own: self.peers[own], **want}
        self.config = replace(self.config, members=frozenset(self.peers))

    def _drop(self, nid: int) -> None:
        self._out.pop(nid)
        self.faults.pop(nid, None)
        task = self._tasks.pop(nid, None)
        if task is not None:
            task.cancel()

    def set_fault(self, peer: int, fault: LinkFault) -> None:
        """Replace the fault on the link to and from `peer` (a clean one heals it)."""
        if peer not in self._out:
            raise ValueError(f"no peer {peer} (peers: {sorted(self._out)})")
        if fault.clean:
            self.faults.pop(peer, None)
        else:
            self.faults[peer] = fault
        self.log(f"cluster: link to node {peer}: {fault if not fault.clean else 'healed'}")

    def heal(self) -> None:
        for peer in sorted(self.faults):
            self.set_fault(peer, LinkFault())

    def inbound(self, msg: Message | PeerMessage) -> None:
        """A message arrived from `msg.src`: delivered unless its link drops what arrives."""
        if self._admit(msg):
            self.deliver(msg)

    def _admit(self, msg: Message | PeerMessage) -> bool:
        fault = self.faults.get(msg.src)
        if fault is not None and fault.drop_in:
            self.stats.dropped_fault += 1
            return False
        return True

    def send(self, msg: Message | PeerMessage) -> None:
        """Queue a message for its `dst` (encoded with `peer_frame` when its connection sends),
        through the link's fault if it has one."""
        fault = self.faults.get(msg.dst)
        if fault is not None:
            if fault.drop_out or (fault.loss and self.rng.random() < fault.loss):
                self.stats.dropped_fault += 1
                return
            if fault.delay_ms or fault.jitter_ms:
                loop = asyncio.get_running_loop()
                at = loop.time() + (fault.delay_ms + self.rng.random() * fault.jitter_ms) / 1000
                # in order, as TCP keeps it (strictly later: equal loop times may run in any
                # order)
                at = max(at, self._release_at.get(msg.dst, 0.0) + 1e-6)
                self._release_at[msg.dst] = at
                self.stats.delayed += 1
                loop.call_at(at, self._enqueue, msg)
                return
        self._enqueue(msg)

    def _enqueue(self, msg: Message | PeerMessage) -> None:
        out = self._out.get(msg.dst)
        if out is None:
            self.log(f"cluster: no peer {msg.dst} for a {describe(msg)} message")
            return
        if len(out.queue) >= QUEUE_MAX:
            out.queue.popleft()
            self.stats.dropped_full += 1
        out.queue.append(msg)
        out.ready.set()

    def connected(self) -> list[int]:
        return sorted(nid for nid, out in self._out.items() if out.connected)

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for writer in list(self._inbound):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ---- outbound: dial, handshake, drain the queue ---------------------------------------

    async def _dial_loop(self, out: _Outbound) -> None:
        backoff = RECONNECT_MIN_S
        while not self._closing:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(out.host, out.port,
                                            ssl=self.tls[1] if self.tls else None,
                                            local_addr=_source_address(self._own_host,
                                                                       out.host)),
                    HANDSHAKE_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                if isinstance(exc, ConnectionRefusedError) and self.gone is not None:
                    self.stats.gone += 1
                    self.gone(out.peer_id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
                continue
            try:
                await self._serve_outbound(out, reader, writer)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                if out.connected:  # it was established: redial soon, however it ended (a
                    # killed peer often ends it with a reset; the backoff of the dials before
                    # it, up to RECONNECT_MAX_S, delayed the refusal that reports it gone)
                    backoff = RECONNECT_MIN_S
                out.connected = False
                writer.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _serve_outbound(self, out: _Outbound, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> bool:
        """One outbound connection; True once it was established."""
        session = PeerSession(self.config, self.rng, dialer=True, expect=out.peer_id)
        writer.write(session.take_output())
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            while not session.established:
                data = await reader.read(READ_BYTES)
                if not data:
                    return False
                for event in session.receive(data):
                    if isinstance(event, Closed):
                        writer.write(session.take_output())
                        self.log(f"cluster: connection to node {out.peer_id} refused: "
                                 f"{event.reason}")
                        self.stats.refused += 1
                        return False
                writer.write(session.take_output())
        _socket_buffers(writer)
        out.connected = True
        self.stats.connects += 1
        self.log(f"cluster: connected to node {out.peer_id} at {out.host}:{out.port}")
        closed = asyncio.ensure_future(reader.read(READ_BYTES))  # the peer only ever closes
        try:
            while not closed.done():
                while out.queue:
                    session.send(out.queue.popleft())
                    self.stats.sent += 1
                writer.write(session.take_output())
                await writer.drain()
                out.ready.clear()
                waiter = asyncio.ensure_future(out.ready.wait())
                await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            closed.cancel()
        return True

    # ---- inbound: accept, handshake, deliver -----------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._inbound) >= INBOUND_MAX:
            writer.close()
            return
        self._inbound.add(writer)
        _socket_buffers(writer)
        peer = writer.get_extra_info("peername")
        session = PeerSession(self.config, self.rng, dialer=False)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                while not session.established and session.closed_reason is None:
                    data = await reader.read(READ_BYTES)
                    if not data:
                        return
                    self._events(session, session.receive(data), peer)
                    writer.write(session.take_output())
            while session.closed_reason is None:
                data = await reader.read(READ_BYTES)
                if not data:
                    return
                self._events(session, session.receive(data), peer)
                writer.write(session.take_output())
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            if not session.established:
                self.log(f"cluster: a connection from {peer} did not finish the handshake")
        finally:
            self._inbound.discard(writer)
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()

    def _events(self, session: PeerSession, events: list, peer: object) -> None:
        burst: list[Message | PeerMessage] = []
        for event in events:
            if isinstance(event, Received):
                self.stats.received += 1
                if self.deliver_many is None:
                    self.inbound(event.message)
                elif self._admit(event.message):
                    burst.append(event.message)
                continue
            if burst:  # in order: what came before a handshake or close event goes first
                self._deliver_burst(burst)
                burst = []
            if isinstance(event, Established):
                self.log(f"cluster: node {event.peer_id} connected from {peer}")
            elif isinstance(event, Closed):
                self.stats.refused += 1
                self.log(f"cluster: closed a connection from {peer}: {event.reason}")
        if burst:
            self._deliver_burst(burst)

    def _deliver_burst(self, burst: list[Message | PeerMessage]) -> None:
        assert self.deliver_many is not None
        if len(burst) == 1:
            self.deliver(burst[0])
        else:
            self.deliver_many(burst)
