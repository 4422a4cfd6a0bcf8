"""Drive a sans-I/O `Broker` with codec-built packets: a fake clock and in-memory clients."""

from __future__ import annotations

from real.mqtt import MQTT_3_1_1, MQTT_5, Connect, Decoder, Properties, PropertyId, encode
from real.mqtt.broker import Broker, BrokerConfig
from real.mqtt.packets import Packet


class FakeClock:
    def __init__(self, now: int = 1_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Client:
    def __init__(self, harness: Harness, conn_id: int, version: int, raw: bool = False) -> None:
        self.h = harness
        self.raw = raw  # keep the broker's bytes undecoded (hostile clients)
        self.raw_out = bytearray()
        self.id = conn_id
        self.version = version
        self.decoder = Decoder(version=version, max_packet_size=1 << 28)
        self.inbox: list[Packet] = []
        self.closed = False

    def send(self, *packets: Packet) -> None:
        self.send_bytes(b"".join(encode(p, self.version) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        self.h.broker.receive(self.id, data)
        self.h.broker.invariants()
        self.h.pump()

    def take(self) -> list[Packet]:
        self.h.pump()
        out, self.inbox = self.inbox, []
        return out

    def drop(self) -> None:
        """The network connection breaks (no DISCONNECT)."""
        self.h.broker.closed(self.id)
        self.closed = True
        self.h.broker.invariants()
        self.h.pump()


class Harness:
    def __init__(self, config: BrokerConfig | None = None, log: object | None = None,
                 **kwargs: object) -> None:
        self.clock = FakeClock()
        self.broker = Broker(config or BrokerConfig(sys_interval_ms=0), self.clock, log=log,
                             **kwargs)  # type: ignore[arg-type]
        self.broker.recover()
        self.clients: dict[int, Client] = {}
        self._next = 1

    def pump(self) -> None:
        for conn_id, data, close in self.broker.drain():
            client = self.clients.get(conn_id)
            if client is None:
                continue
            if data and client.raw:
                client.raw_out += data
            elif data:
                client.inbox.extend(client.decoder.feed(data))
            if close and not client.closed:
                client.closed = True
                self.broker.closed(conn_id)
        # closing may have produced more output (wills)
        if self.broker._dirty:  # noqa: SLF001
            self.pump()
        self.broker.invariants()  # after every input: each one ends with a pump

    def open(self, version: int = MQTT_3_1_1, raw: bool = False) -> Client:
        conn_id = self._next
        self._next += 1
        client = self.clients[conn_id] = Client(self, conn_id, version, raw)
        self.broker.open(conn_id, peer=f"10.0.0.1:{conn_id}", anonymous_ok=True)
        self.broker.invariants()
        return client

    def connect(self, client_id: str, version: int = MQTT_3_1_1, clean: bool = True,
                expiry: int | None = None, **kwargs: object) -> Client:
        client = self.open(version)
        props = dict(kwargs.pop("props", {}))  # type: ignore[arg-type]
        if expiry is not None:
            props[PropertyId.SESSION_EXPIRY_INTERVAL] = expiry
        properties = Properties.of(*props.items()) if version == MQTT_5 else Properties()
        client.send(Connect(client_id, protocol_version=version, clean_start=clean,
                            properties=properties, **kwargs))  # type: ignore[arg-type]
        return client

    def advance(self, ms: int) -> None:
        self.clock.now += ms
        self.broker.tick()
        self.pump()
