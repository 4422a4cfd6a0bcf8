"""An efficient MQTT 3.1.1 load generator: asyncio Protocols, pre-encoded packets, batched writes.

Used by `scenarios/bench/mqtt.py`; every scenario runs in worker processes started by the bench
(one for the publishers, one for the subscribers) so the generator's two halves get a core each
when the broker is idle, and each reports its own CPU time.

How it stays cheap per message
------------------------------
* Every packet is encoded once at setup with `real.mqtt.encode`: CONNECT, SUBSCRIBE, and the
  PUBLISH frames. A QoS 0 publisher writes one pre-built chunk of `CHUNK_MSGS` PUBLISH frames over
  and over. A QoS 1 publisher owns a *ring* of `RING_IDS` frames (packet ids 1..RING_IDS, all the
  same length), and sends the next k messages as one slice of that ring.
* Topics are fixed-width (`bench/p03/t5`), so all frames of a scenario have one length; the topic
  of each frame is drawn from a `random.Random(seed)` at setup, so a given seed always sends the
  same sequence of topics.
* Writes are batched: a QoS 0 publisher writes chunks until asyncio's transport says
  `pause_writing` (the socket and the 64 KiB transport buffer are full), then waits for
  `resume_writing`; at most `PUMP_CHUNKS` chunks per event-loop turn, so one fast connection
  cannot starve the others. A QoS 1 publisher refills its window once per `data_received`.
* The receiving side never decodes a packet: `FrameCounter` walks fixed headers (type byte,
  Remaining Length) and only looks inside a PUBLISH for the packet id (QoS > 0, to answer with a
  PUBACK sliced from a pre-built table) or the 8-byte send timestamp (latency runs).

Wire facts used (MQTT 3.1.1 section 2.2 and 3.3): byte 0 = type << 4 | flags (PUBLISH flags:
DUP << 3 | QoS << 1 | RETAIN); then the Remaining Length as a variable byte integer (1-4 bytes, 7
bits each, low group first, top bit = "more"); a PUBLISH body is a 2-byte topic length, the topic,
a 2-byte packet id when QoS > 0, then the payload. PUBACK is `0x40 0x02 <id hi> <id lo>`.

Latency payloads start with `time.perf_counter_ns()` at the write, as 8 big-endian bytes; the
publisher and subscriber of a latency run share one process, so the clocks are the same clock.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from real.mqtt import Connect, Publish, Subscribe, Subscription, encode
from real.mqtt.packets import MQTT_3_1_1

PUBLISH_TYPE = 3
PUBACK_TYPE = 4
CONNACK_TYPE = 2
SUBACK_TYPE = 9
CHUNK_MSGS = 64  # QoS 0 frames per pre-built chunk (one write)
PUMP_CHUNKS = 8  # chunks a QoS 0 publisher may write per event-loop turn
RING_IDS = 1024  # QoS 1 packet ids 1..RING_IDS, reused in order (window <= RING_IDS / 2)
FRAME_BYTES_MAX = 1 << 20  # FrameCounter refuses a frame that claims to be longer
STAMP = struct.Struct(">Q")
PUBACKS = b"".join(bytes([0x40, 2]) + pid.to_bytes(2, "big") for pid in range(65536))


class FrameError(ValueError):
    """The byte stream is not a sequence of MQTT frames (names the offset and what was wrong)."""


# ------------------------------------------------------------------------------ frame counter

class FrameCounter:
    """Counts MQTT packets in a byte stream by walking fixed headers, without decoding them.

    `feed(data)` takes bytes in any fragmentation; complete frames are counted in `counts[type]`
    (index = packet type 0..15) and `publishes`; a partial frame is kept (at most
    `FRAME_BYTES_MAX` bytes plus header) until the rest arrives. Optional extraction, into lists
    the caller drains:

    * `want_ids`: the packet id of every QoS > 0 PUBLISH -> `publish_ids` (for PUBACKs), and of
      every PUBACK -> `ack_ids`;
    * `want_stamps`: the first 8 payload bytes of every PUBLISH as a big-endian int -> `stamps`;
    * every other packet (CONNACK, SUBACK, ...) -> `control` as (type, body bytes): rare.
    """

    __slots__ = ("_tail", "counts", "publishes", "want_ids", "want_stamps", "publish_ids",
                 "ack_ids", "stamps", "control", "bytes_seen")

    def __init__(self, want_ids: bool = False, want_stamps: bool = False) -> None:
        self._tail = b""
        self.counts = [0] * 16
        self.publishes = 0
        self.want_ids = want_ids
        self.want_stamps = want_stamps
        self.publish_ids: list[int] = []
        self.ack_ids: list[int] = []
        self.stamps: list[int] = []
        self.control: list[tuple[int, bytes]] = []
        self.bytes_seen = 0

    def buffered(self) -> int:
        """Bytes held of a frame that is not complete yet."""
        return len(self._tail)

    def feed(self, data: bytes) -> int:
        """Count the frames `data` completes; returns how many of them are PUBLISH."""
        buf = self._tail + data if self._tail else data
        self.bytes_seen += len(data)
        n = len(buf)
        i = 0
        before = self.publishes
        while n - i >= 2:
            b0 = buf[i]
            rl = buf[i + 1]
            h = i + 2
            if rl & 0x80:
                got = _long_length(buf, i, n)
                if got is None:
                    break
                h, rl = got
            end = h + rl
            if end > n:
                if rl > FRAME_BYTES_MAX:
                    raise FrameError(f"frame at stream offset {self.bytes_seen - n + i} claims "
                                     f"{rl} bytes (limit {FRAME_BYTES_MAX})")
                break
            kind = b0 >> 4
            if kind == PUBLISH_TYPE:
                self.publishes += 1
                if self.want_ids or self.want_stamps:
                    self._publish_fields(buf, b0, h, end)
            elif kind == PUBACK_TYPE:
                if self.want_ids:
                    self.ack_ids.append(buf[h] << 8 | buf[h + 1])
            else:
                self.control.append((kind, bytes(buf[h:end])))
            self.counts[kind] += 1
            i = end
        self._tail = bytes(buf[i:]) if i < n else b""
        assert len(self._tail) <= FRAME_BYTES_MAX + 5
        return self.publishes - before

    def _publish_fields(self, buf: bytes, b0: int, h: int, end: int) -> None:
        at = h + 2 + (buf[h] << 8 | buf[h + 1])  # past the topic
        if b0 & 0x06:  # QoS 1 or 2: a packet id follows the topic
            if self.want_ids:
                self.publish_ids.append(buf[at] << 8 | buf[at + 1])
            at += 2
        if self.want_stamps:
            if end - at < 8:
                raise FrameError(f"PUBLISH payload of {end - at} bytes has no 8-byte stamp")
            self.stamps.append(STAMP.unpack_from(buf, at)[0])


def _long_length(buf: bytes, i: int, n: int) -> tuple[int, int] | None:
    """(body start, Remaining Length) of the frame at `i` when its length takes 2-4 bytes."""
    value = 0
    shift = 0
    h = i + 1
    while True:
        if h >= n:
            return None
        byte = buf[h]
        h += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return h, value
        shift += 7
        if shift > 21:
            raise FrameError(f"Remaining Length of the frame at buffer offset {i} runs past "
                             f"4 bytes")


# ------------------------------------------------------------------------------ packets

def connect_bytes(client_id: str, keep_alive: int = 60) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, no credentials."""
    return encode(Connect(client_id=client_id, keep_alive=keep_alive, clean_start=True),
                  MQTT_3_1_1)


def subscribe_bytes(topic_filter: str, qos: int) -> bytes:
    return encode(Subscribe(packet_id=1, subscriptions=(Subscription(topic_filter, qos),)),
                  MQTT_3_1_1)


def publish_frames(topics: list[str], payload: bytes, qos: int, first_id: int = 1) -> list[bytes]:
    """One PUBLISH per topic; QoS 1 frames get packet ids first_id, first_id + 1, ..."""
    return [encode(Publish(topic, payload, qos=qos,
                           packet_id=(first_id + k) if qos else None), MQTT_3_1_1)
            for k, topic in enumerate(topics)]


def topic_sequence(rng: random.Random, prefix: str, count: int, choices: int = 8) -> list[str]:
    """`count` topics `prefix/t<k>` with k drawn from `rng` (fixed width: k < 10)."""
    assert 1 <= choices <= 10
    return [f"{prefix}/t{rng.randrange(choices)}" for _ in range(count)]


# ------------------------------------------------------------------------------ connections

class Client(asyncio.Protocol):
    """One MQTT connection. Sends CONNECT on connect (and SUBSCRIBE after CONNACK when asked).

    Futures: `connected` (CONNACK return code 0), `subscribed` (SUBACK granting a QoS), `lost`.
    Subclasses handle PUBLISH/PUBACK through `on_frames` after each `data_received`.
    """

    def __init__(self, client_id: str, subscribe: bytes | None = None,
                 counter: FrameCounter | None = None, keep_alive: int = 60) -> None:
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.counter = counter or FrameCounter()
        self._connect = connect_bytes(client_id, keep_alive)
        self.subscribe_packet = subscribe
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._connect)

    def data_received(self, data: bytes) -> None:
        counter = self.counter
        counter.feed(data)
        if counter.control:
            self._on_control()
        self.on_frames()

    def _on_control(self) -> None:
        for kind, body in self.counter.control:
            if kind == CONNACK_TYPE and not self.connected.done():
                if len(body) == 2 and body[1] == 0:
                    self.connected.set_result(None)
                    if self.subscribe_packet is not None:
                        self.transport.write(self.subscribe_packet)  # type: ignore[union-attr]
                else:
                    self.connected.set_exception(ConnectionError(f"CONNACK {body.hex()}"))
            elif kind == SUBACK_TYPE and not self.subscribed.done():
                if body[-1:] in (b"\x00", b"\x01", b"\x02"):
                    self.subscribed.set_result(None)
                else:
                    self.subscribed.set_exception(ConnectionError(f"SUBACK {body.hex()}"))
        self.counter.control.clear()

    def on_frames(self) -> None:
        """Called after every `data_received`; the counter holds what arrived."""

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.connected, self.subscribed):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc}"))
                fut.exception()  # mark retrieved: an idle client never awaits `subscribed`
        if not self.lost.done():
            self.lost.set_result(None)


@dataclass
class Window:
    """When counting happens: [start, end) on time.monotonic(), the same clock in every process."""

    start: float = float("inf")
    end: float = float("inf")
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    def cpu_s(self) -> float:
        """Process CPU seconds over the window (sampling the end now if its timer has not run:
        a timer due at the same instant may fire after the code that ends the run)."""
        if not self.cpu_end:
            self.cpu_end = time.process_time()
        assert self.cpu_end >= self.cpu_start
        return self.cpu_end - self.cpu_start


class Subscriber(Client):
    """Counts deliveries (all, and those in the window); answers QoS 1 with pre-built PUBACKs."""

    def __init__(self, client_id: str, topic_filter: str, qos: int, window: Window,
                 want_stamps: bool = False) -> None:
        super().__init__(client_id, subscribe_bytes(topic_filter, qos),
                         FrameCounter(want_ids=qos > 0, want_stamps=want_stamps))
        self.window = window
        self.in_window = 0
        self._seen = 0
        self.sent_ns: list[int] = []  # latency runs: the stamp of each delivery ...
        self.latencies_ns: list[int] = []  # ... and its publish-to-deliver time

    def on_frames(self) -> None:
        counter = self.counter
        got = counter.publishes - self._seen
        self._seen = counter.publishes
        if got:
            now = time.monotonic()
            if self.window.start <= now < self.window.end:
                self.in_window += got
        if counter.publish_ids:
            self.transport.write(b"".join(  # type: ignore[union-attr]
                PUBACKS[4 * pid:4 * pid + 4] for pid in counter.publish_ids))
            counter.publish_ids.clear()
        if counter.stamps:
            now_ns = time.perf_counter_ns()
            self.sent_ns.extend(counter.stamps)
            self.latencies_ns.extend(now_ns - stamp for stamp in counter.stamps)
            counter.stamps.clear()


class Qos0Publisher(Client):
    """Writes a pre-built chunk of QoS 0 PUBLISH frames as fast as the socket takes it."""

    def __init__(self, client_id: str, chunk: bytes, msgs_per_chunk: int, window: Window) -> None:
        super().__init__(client_id)
        self.chunk = chunk
        self.msgs_per_chunk = msgs_per_chunk
        self.window = window
        self.sent = 0
        self.in_window = 0
        self.stop_at = float("inf")
        self.running = False

    def start(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self.running = True
        self._pump()

    def _pump(self) -> None:
        transport = self.transport
        if not self.running or transport is None or transport.is_closing():
            return
        now = time.monotonic()
        if now >= self.stop_at:
            self.running = False
            return
        wrote = 0
        while wrote < PUMP_CHUNKS and not self.paused:
            transport.write(self.chunk)
            wrote += 1
        msgs = wrote * self.msgs_per_chunk
        self.sent += msgs
        if self.window.start <= now < self.window.end:
            self.in_window += msgs
        if not self.paused:
            asyncio.get_running_loop().call_soon(self._pump)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._pump()


class Qos1Publisher(Client):
    """Keeps at most `window_max` PUBLISHes unacknowledged, sending slices of a pre-built ring."""

    def __init__(self, client_id: str, ring: bytes, frame_len: int, window_max: int,
                 window: Window) -> None:
        super().__init__(client_id, counter=FrameCounter(want_ids=True))
        assert len(ring) == frame_len * RING_IDS and window_max <= RING_IDS // 2
        self.ring = memoryview(ring)
        self.frame_len = frame_len
        self.window_max = window_max
        self.window = window
        self.next_id = 1
        self.unacked = bytearray(RING_IDS + 1)  # 1 = sent, not acknowledged yet
        self.inflight = 0
        self.sent = 0
        self.acked = 0
        self.in_window = 0
        self.stray_acks = 0
        self.stop_at = float("inf")
        self.idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self._send(self.window_max)

    def _send(self, count: int) -> None:
        now = time.monotonic()
        if now >= self.stop_at or count <= 0:
            if self.inflight == 0 and not self.idle.done():
                self.idle.set_result(None)
            return
        first = self.next_id
        count = min(count, RING_IDS - first + 1)  # one contiguous slice; the rest next time
        for pid in range(first, first + count):
            if self.unacked[pid]:
                raise RuntimeError(f"packet id {pid} reused before its PUBACK")
            self.unacked[pid] = 1
        fl = self.frame_len
        self.transport.write(self.ring[(first - 1) * fl:(first - 1 + count) * fl])  # type: ignore
        self.next_id = first + count if first + count <= RING_IDS else 1
        self.inflight += count
        self.sent += count
        if self.window.start <= now < self.window.end:
            self.in_window += count

    def on_frames(self) -> None:
        ids = self.counter.ack_ids
        if not ids:
            return
        for pid in ids:
            if 0 < pid <= RING_IDS and self.unacked[pid]:
                self.unacked[pid] = 0
                self.inflight -= 1
                self.acked += 1
            else:
                self.stray_acks += 1
        ids.clear()
        self._send(self.window_max - self.inflight)


class LatencyPublisher(Client):
    """Publishes at a fixed rate; each payload starts with perf_counter_ns() at the write."""

    def __init__(self, client_id: str, template: bytes, stamp_at: int, id_at: int | None,
                 window_max: int) -> None:
        super().__init__(client_id, counter=FrameCounter(want_ids=True))
        self.template = bytearray(template)
        self.stamp_at = stamp_at
        self.id_at = id_at
        self.window_max = window_max
        self.next_id = 1
        self.inflight = 0
        self.sent = 0
        self.window_full_ticks = 0  # sends cut short because `window_max` were unacknowledged
        self.behind_max = 0  # the most messages ever due by the schedule but not yet sent

    def send(self, count: int) -> int:
        """Send up to `count` messages in one write; returns how many (QoS 1 window permitting)."""
        if self.id_at is not None:
            room = self.window_max - self.inflight
            if count > room:
                self.window_full_ticks += 1
                self.behind_max = max(self.behind_max, count - room)
                count = room
        if count <= 0:
            return 0
        out = bytearray()
        STAMP.pack_into(self.template, self.stamp_at, time.perf_counter_ns())
        for _ in range(count):
            if self.id_at is not None:
                self.template[self.id_at:self.id_at + 2] = self.next_id.to_bytes(2, "big")
                self.next_id = self.next_id % 65535 + 1
            out += self.template
        self.transport.write(bytes(out))  # type: ignore[union-attr]
        self.inflight += count if self.id_at is not None else 0
        self.sent += count
        return count

    def on_frames(self) -> None:
        if self.counter.ack_ids:
            self.inflight -= len(self.counter.ack_ids)
            self.counter.ack_ids.clear()


# ------------------------------------------------------------------------------ helpers

async def open_client(host: str, port: int, factory: Callable[[], Client],
                      timeout: float) -> Client:
    """Connect, wait for CONNACK (and SUBACK when the client subscribes)."""
    loop = asyncio.get_running_loop()
    _transport, client = await asyncio.wait_for(
        loop.create_connection(factory, host, port), timeout)
    await asyncio.wait_for(client.connected, timeout)
    if client.subscribe_packet is not None:
        await asyncio.wait_for(client.subscribed, timeout)
    return client


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list (q in [0, 1])."""
    assert values and 0 <= q <= 1
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


@dataclass
class Stats:
    """What one worker process reports back (plain data: it crosses a pipe)."""

    role: str
    connections: int = 0
    sent: int = 0
    sent_in_window: int = 0
    delivered: int = 0
    delivered_in_window: int = 0
    acked: int = 0
    cpu_s_in_window: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ scenarios

@dataclass(frozen=True)
class Scenario:
    """One load shape. `kind` is fan-in, fan-out, latency or idle; times are seconds.

    fan-in: `publishers` -> 1 subscriber on `bench/#`; fan-out: 1 publisher -> `subscribers`;
    both publish flat out for `warmup_s + seconds` and count only the last `seconds`. QoS 1
    publishers keep at most `window_max` PUBLISHes unacknowledged. latency: 1 -> 1 at `rate`
    msg/s. idle: `connections` clients connect (keep-alive `keep_alive_s`) and stay idle.
    """

    name: str
    kind: str
    qos: int = 0
    publishers: int = 1
    subscribers: int = 1
    payload_bytes: int = 64
    window_max: int = 64
    warmup_s: float = 1.0
    seconds: float = 5.0
    rate: int = 5000
    connections: int = 10_000
    connects_in_flight_max: int = 256
    keep_alive_s: int = 60
    seed: int = 1
    timeout_s: float = 10.0  # per connect/SUBSCRIBE handshake
    drain_quiet_s: float = 1.0  # after publishing: stop waiting when nothing arrived for this long
    drain_max_s: float = 10.0  # ... or after this long in any case

    def __post_init__(self) -> None:
        if self.kind not in ("fan-in", "fan-out", "latency", "idle"):
            raise ValueError(f"Scenario.kind: expected fan-in|fan-out|latency|idle, "
                             f"got {self.kind!r}")
        if self.qos not in (0, 1):
            raise ValueError(f"Scenario.qos: expected 0 or 1, got {self.qos!r}")
        if not 8 <= self.payload_bytes <= 65_000:
            raise ValueError(f"Scenario.payload_bytes: expected 8..65000, "
                             f"got {self.payload_bytes}")
        if not 1 <= self.window_max <= RING_IDS // 2:
            raise ValueError(f"Scenario.window_max: expected 1..{RING_IDS // 2}, "
                             f"got {self.window_max}")


def _payload(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


def qos0_chunk(scenario: Scenario, index: int) -> bytes:
    """CHUNK_MSGS pre-encoded QoS 0 frames of publisher `index` (topics from the seed)."""
    rng = random.Random(scenario.seed * 1000 + index)  # noqa: S311 - seeded topic choice
    topics = topic_sequence(rng, f"bench/p{index:02d}", CHUNK_MSGS)
    return b"".join(publish_frames(topics, _payload(scenario.payload_bytes), 0))


def qos1_ring(scenario: Scenario, index: int) -> tuple[bytes, int]:
    """(ring of RING_IDS QoS 1 frames with ids 1..RING_IDS, frame length) of publisher `index`."""
    rng = random.Random(scenario.seed * 1000 + index)  # noqa: S311 - seeded topic choice
    topics = topic_sequence(rng, f"bench/p{index:02d}", RING_IDS)
    frames = publish_frames(topics, _payload(scenario.payload_bytes), 1)
    assert len({len(f) for f in frames}) == 1, "ring frames must share one length"
    return b"".join(frames), len(frames[0])


# ------------------------------------------------------------------------------ worker processes
#
# The bench talks to each worker over a multiprocessing Connection:
#   worker -> ("ready", info)        all clients connected (and subscribed)
#   bench  -> ("go", t0)             start at time.monotonic() == t0 (one clock for all processes)
#   bench  -> ("drain", expected)    subscribers only: publishers are done, `expected` deliveries
#   bench  -> ("close", None)        idle only: RSS was measured, disconnect
#   worker -> ("done", Stats) | ("error", text)

def run_worker(role: str, conn: Any, scenario: Scenario, host: str, port: int,
               sub_port: int = 0) -> None:
    """Process entry point: runs one role of `scenario` against host:port and reports on `conn`.
    `sub_port`: subscribers connect there instead (another node of a cluster)."""
    if role == "subscribers" and sub_port:
        port = sub_port
    try:
        if role == "latency":
            asyncio.run(_latency(conn, scenario, host, port, sub_port or port))
            return
        body = {"subscribers": _subscribers, "publishers": _publishers, "idle": _idle}[role]
        asyncio.run(body(conn, scenario, host, port))
    except BaseException as exc:  # report, never hang the bench
        conn.send(("error", f"{role}: {type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


async def _recv(conn: Any, timeout: float) -> tuple[str, Any]:
    """Wait (without blocking the loop) for the bench's next message."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
    finally:
        loop.remove_reader(fd)
    return conn.recv()


def _sample_cpu(window: Window, loop: asyncio.AbstractEventLoop) -> None:
    """Record this process's CPU time at window start and end (loop.time() is monotonic)."""
    def at_start() -> None:
        window.cpu_start = time.process_time()

    def at_end() -> None:
        window.cpu_end = time.process_time()

    loop.call_at(window.start, at_start)
    loop.call_at(window.end, at_end)


async def _open_all(factories: list[Callable[[], Client]], host: str, port: int,
                    timeout: float) -> list[Client]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(open_client(host, port, f, timeout)) for f in factories]
    return [t.result() for t in tasks]


async def _close_all(clients: list[Client], timeout: float) -> None:
    for client in clients:
        if client.transport is not None and not client.transport.is_closing():
            client.transport.write(b"\xe0\x00")  # DISCONNECT
            client.transport.close()  # flushes what is buffered first
    if clients:
        await asyncio.wait([c.lost for c in clients], timeout=timeout)


async def _subscribers(conn: Any, sc: Scenario, host: str, port: int) -> None:
    count = sc.subscribers if sc.kind == "fan-out" else 1
    window = Window()
    subs = await _open_all(
        [lambda k=k: Subscriber(f"sub-{sc.name}-{k}", "bench/#", sc.qos, window)
         for k in range(count)], host, port, sc.timeout_s)
    conn.send(("ready", {"subscribers": count}))
    _kind, t0 = await _recv(conn, 60)
    window.start = t0 + sc.warmup_s
    window.end = window.start + sc.seconds
    _sample_cpu(window, asyncio.get_running_loop())
    _kind, expected = await _recv(conn, sc.warmup_s + sc.seconds + sc.drain_max_s + 120)
    drain = await _drain(subs, expected, sc)
    stats = Stats("subscribers", connections=count,
                  delivered=sum(s.counter.publishes for s in subs),
                  delivered_in_window=sum(s.in_window for s in subs),
                  cpu_s_in_window=window.cpu_s(),
                  extra={"per_subscriber": [s.counter.publishes for s in subs], "drain": drain,
                         "lost_connections": sum(s.lost.done() for s in subs)})
    await _close_all(subs, 5)
    conn.send(("done", stats))


async def _drain(subs: list[Subscriber], expected: int, sc: Scenario) -> str:
    """Wait until `expected` deliveries ("complete"), `drain_quiet_s` without one ("quiet": what
    is missing was dropped), or `drain_max_s` ("deadline": deliveries were still arriving, so
    what is missing may only be backlog). Returns which."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + sc.drain_max_s
    last = -1
    quiet_since = loop.time()
    while loop.time() < deadline:
        total = sum(s.counter.publishes for s in subs)
        if total >= expected:
            return "complete"
        if total != last:
            last, quiet_since = total, loop.time()
        elif loop.time() - quiet_since >= sc.drain_quiet_s:
            return "quiet"
        await asyncio.sleep(0.02)  # polling a counter, not standing in for an event
    return "deadline"


async def _publishers(conn: Any, sc: Scenario, host: str, port: int) -> None:
    count = sc.publishers if sc.kind == "fan-in" else 1
    window = Window()
    factories: list[Callable[[], Client]] = []
    for k in range(count):
        if sc.qos == 0:
            chunk = qos0_chunk(sc, k)
            factories.append(lambda k=k, c=chunk: Qos0Publisher(f"pub-{sc.name}-{k}", c,
                                                                CHUNK_MSGS, window))
        else:
            ring, flen = qos1_ring(sc, k)
            factories.append(lambda k=k, r=ring, f=flen: Qos1Publisher(
                f"pub-{sc.name}-{k}", r, f, sc.window_max, window))
    pubs = await _open_all(factories, host, port, sc.timeout_s)
    conn.send(("ready", {"publishers": count}))
    _kind, t0 = await _recv(conn, 60)
    loop = asyncio.get_running_loop()
    window.start = t0 + sc.warmup_s
    window.end = window.start + sc.seconds
    _sample_cpu(window, loop)
    for pub in pubs:
        loop.call_at(t0, pub.start, window.end)  # type: ignore[attr-defined]
    await asyncio.sleep(max(0.0, window.end - loop.time()))  # the run itself: timed, not a sync
    if sc.qos == 1:  # let the last window be acknowledged
        await asyncio.wait([p.idle for p in pubs], timeout=sc.drain_max_s)  # type: ignore
    stats = Stats("publishers", connections=count,
                  sent=sum(p.sent for p in pubs),  # type: ignore[attr-defined]
                  sent_in_window=sum(p.in_window for p in pubs),  # type: ignore[attr-defined]
                  acked=sum(getattr(p, "acked", 0) for p in pubs),
                  cpu_s_in_window=window.cpu_s(),
                  extra={"stray_acks": sum(getattr(p, "stray_acks", 0) for p in pubs),
                         "unacked_at_end": sum(getattr(p, "inflight", 0) for p in pubs),
                         "lost_connections": sum(p.lost.done() for p in pubs)})
    await _close_all(pubs, 10)
    conn.send(("done", stats))


def latency_template(sc: Scenario) -> tuple[bytes, int, int | None]:
    """(one pre-encoded PUBLISH, offset of its 8-byte stamp, offset of its packet id or None)."""
    topic = "bench/lat/t0"
    frame = publish_frames([topic], _payload(sc.payload_bytes), sc.qos)[0]
    id_at = None
    body_at = len(frame) - sc.payload_bytes  # the payload ends the frame
    if sc.qos:
        id_at = body_at - 2
    return frame, body_at, id_at


async def _latency(conn: Any, sc: Scenario, host: str, port: int, sub_port: int) -> None:
    window = Window()
    sub = await open_client(host, sub_port, lambda: Subscriber(
        f"lat-sub-{sc.name}", "bench/#", sc.qos, window, want_stamps=True), sc.timeout_s)
    template, stamp_at, id_at = latency_template(sc)
    pub = await open_client(host, port, lambda: LatencyPublisher(
        f"lat-pub-{sc.name}", template, stamp_at, id_at, sc.window_max), sc.timeout_s)
    assert isinstance(sub, Subscriber) and isinstance(pub, LatencyPublisher)
    conn.send(("ready", {"publishers": 1, "subscribers": 1}))
    _kind, t0 = await _recv(conn, 60)
    loop = asyncio.get_running_loop()
    window.start = t0 + sc.warmup_s
    window.end = window.start + sc.seconds
    _sample_cpu(window, loop)
    marks: dict[str, int] = {}
    loop.call_at(window.start, lambda: marks.setdefault("start", time.perf_counter_ns()))
    loop.call_at(window.end, lambda: marks.setdefault("end", time.perf_counter_ns()))
    done: asyncio.Future[None] = loop.create_future()

    def tick() -> None:  # every ~1 ms: send what the schedule says is due by now
        now = loop.time()
        if now >= window.end:  # may run before the window.end callback: mark here too
            marks.setdefault("start", time.perf_counter_ns())
            marks.setdefault("end", time.perf_counter_ns())
            done.set_result(None)
            return
        due = int((now - t0) * sc.rate) - pub.sent
        if due > 0:
            pub.send(due)
        loop.call_later(0.001, tick)

    loop.call_at(t0, tick)
    await done
    drain = await _drain([sub], pub.sent, sc)
    start_ns, end_ns = marks["start"], marks["end"]
    lat = [lat_ns / 1e6 for sent_ns, lat_ns in zip(sub.sent_ns, sub.latencies_ns, strict=True)
           if start_ns <= sent_ns < end_ns]
    sent_window = sum(1 for s in sub.sent_ns if start_ns <= s < end_ns)
    stats = Stats("latency", connections=2, sent=pub.sent, delivered=sub.counter.publishes,
                  delivered_in_window=sent_window,
                  cpu_s_in_window=window.cpu_s(),
                  extra={"delivered_per_s": round(len(lat) / sc.seconds, 1),
                         "window_full_ticks": pub.window_full_ticks,
                         "behind_schedule_max": pub.behind_max, "drain": drain,
                         "p50_ms": round(percentile(lat, 0.50), 3) if lat else None,
                         "p99_ms": round(percentile(lat, 0.99), 3) if lat else None,
                         "max_ms": round(max(lat), 3) if lat else None,
                         "samples": len(lat)})
    await _close_all([sub, pub], 5)
    conn.send(("done", stats))


async def _idle(conn: Any, sc: Scenario, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(sc.connects_in_flight_max)
    clients: list[Client] = []
    failures: list[str] = []

    async def one(k: int) -> None:
        async with gate:
            try:
                clients.append(await open_client(
                    host, port, lambda: Client(f"idle-{k:05d}", keep_alive=sc.keep_alive_s),
                    sc.timeout_s))
            except (OSError, TimeoutError, ConnectionError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    started = loop.time()
    async with asyncio.TaskGroup() as group:
        for k in range(sc.connections):
            group.create_task(one(k))
    connect_s = loop.time() - started
    conn.send(("ready", {"connected": len(clients), "failed": len(failures),
                         "first_failures": sorted(set(failures))[:3],
                         "connect_s": round(connect_s, 3),
                         "connects_per_s": round(len(clients) / connect_s, 1)}))
    await _recv(conn, 600)
    lost_before_close = sum(c.lost.done() for c in clients)
    await _close_all(clients, 30)
    conn.send(("done", Stats("idle", connections=len(clients),
                             extra={"lost_before_close": lost_before_close,
                                    "failed": len(failures)})))
