"""Client ids across a cluster: claims in meta, session hand-overs through the `__mqtt` log.

With `mqtt.cluster`, a client id belongs to one node connection at a time, cluster-wide:

1. **Claim.** A CONNECT (with a client id the client chose) makes its node propose
   `mqtt.claim` (client id, node, the node's process life, connection number) to meta. The
   meta state machine records the new owner and answers with the previous one; every node
   applies the claim in the same meta order. The CONNACK is held until the claim is applied.
2. **Release.** The previous owner's node, when it applies a claim that takes a client id from
   it, closes that client's connection (MQTT 5: DISCONNECT 0x8E, Session taken over), takes
   the session out of its broker, and appends a *release* record for the claim to the `__mqtt`
   partition of the client id: the session (its state-log records: subscriptions, queued and
   in-flight messages, QoS 2 packet ids), the inbound QoS 2 packet ids awaiting PUBREL, and how
   far the node had routed each partition of `__mqtt` when it let go.
3. **Take-over.** The claimant, reading the committed release from its own replica, rebuilds
   the session and makes it whole: for a partition it had routed further than the old node, it
   reads the gap from its replica and queues what matches; for one it had routed less far, the
   session skips messages before the old node's place (they are in the hand-over). Then the
   CONNACK goes out. No moment exists in which both nodes deliver to the client: the old node
   stopped before it wrote the release, the new one starts after it read it.

When the previous owner is down, the claim waits for it: restarted, it recovers the session from
its state log, replays the claim and hands the session over (a release it wrote before dying
but that was not committed is in its state log, `rls`, and is sent again). One that does not
come back within `ClusterConfig.claim_wait_ms` never will: the claim goes on without it and
the client gets a new session. A node that hears no meta quorum for the controller's session
timeout fences itself and closes its MQTT connections, so it no longer serves a client whose
claim gave up waiting for it.

This module holds the wire forms (sans-I/O): the release record's key and value, and the
session snapshot as `real/mqtt/persist.py` records.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from real.kafka.records import KRecord
from real.meta.machine import Owner as ClaimKey
from real.mqtt.persist import (
    REL,
    SND,
    packet_record,
    publish_record,
    recover,
    session_record,
)
from real.mqtt.session import Session
from real.storage.record import Record, decode_records, encode_records

CONTROL = 2
"""The first byte of a `__mqtt` record key that is a control record, not a message (a
message's key starts with its format, 1)."""
RELEASE = 1
"""Control record kind: a session hand-over for a claim."""

_KEY = struct.Struct(">BBIQQ")  # control, kind, claim node, claim life, claim conn
_POS = struct.Struct(">IqI")  # partition, shard offset, index
_U16 = struct.Struct(">H")

Place = tuple[int, int]
"""(shard offset of a batch in a `__mqtt` partition, index of a message in it)."""


@dataclass(slots=True)
class Release:
    """A decoded release record: `client` handed over to `claim`."""

    client: str
    claim: ClaimKey
    positions: dict[int, Place]
    """How far the old node had routed each `__mqtt` partition when it let go: the first place
    it had not routed."""
    inbound_qos2: tuple[int, ...]
    records: list[Record] | None
    """The session as state-log records, or None: the old node held no session for it."""

    def session(self) -> Session | None:
        """The handed-over session, rebuilt (None if there was none)."""
        if self.records is None:
            return None
        state = recover(self.records)
        session = state.sessions.get(self.client)
        if session is not None:
            session.inbound_qos2 = set(self.inbound_qos2)
        return session


def snapshot_records(session: Session, now: int) -> list[Record]:
    """`session` as state-log records at offsets 0.. (`persist.recover` rebuilds it): its
    `ses` record, a `pub` for each message it still has to deliver (in-flight first, in send
    order, then the queue), then QoS 2 packet-id state (`snd` / `rel`)."""
    records = [session_record(session, now).at(0)]
    offsets: dict[int, int] = {}  # id(delivery) -> offset of its pub record
    pending = [i.delivery for i in session.inflight.values() if not i.released]
    pending += list(session.queue)
    for d in pending:
        offsets[id(d)] = len(records)
        records.append(publish_record(d.message, [(session.client_id, d)], now,
                                      retained=False).at(len(records)))
    for pid, inflight in session.inflight.items():
        if inflight.released:
            rec = packet_record(REL, session.client_id, -1, pid, now)
        elif inflight.delivery.qos == 2:
            rec = packet_record(SND, session.client_id, offsets[id(inflight.delivery)], pid, now)
        else:
            continue
        records.append(rec.at(len(records)))
    return records


def release_record(client: str, claim: ClaimKey, positions: dict[int, Place],
                   inbound_qos2: tuple[int, ...], records: list[Record] | None,
                   now: int) -> KRecord:
    """The `__mqtt` record of a release. Key: control (2) | kind (1) | claim node:u32 | life:u64
    | conn:u64 | client id (UTF-8, the rest). Value: positions (count:u16, then partition:u32 |
    offset:i64 | index:u32 each) | inbound QoS 2 ids (count:u16, id:u16 each) | the session's
    records as one storage batch (absent: no session)."""
    key = _KEY.pack(CONTROL, RELEASE, claim.node, claim.life, claim.conn) + client.encode()
    parts = [_U16.pack(len(positions))]
    parts += [_POS.pack(p, o, i) for p, (o, i) in sorted(positions.items())]
    parts.append(_U16.pack(len(inbound_qos2)))
    parts += [_U16.pack(pid) for pid in inbound_qos2]
    if records is not None:
        parts.append(encode_records(records, base_offset=0))
    return KRecord(-1, max(0, now), key, b"".join(parts), ())


def is_control(krec: KRecord) -> bool:
    key = krec.key
    return key is not None and len(key) > 0 and key[0] == CONTROL


def decode_release(krec: KRecord) -> Release:
    """The release `release_record` wrote; ValueError if the record is not one."""
    key, value = krec.key or b"", krec.value or b""
    try:
        control, kind, node, life, conn = _KEY.unpack_from(key, 0)
        if control != CONTROL or kind != RELEASE:
            raise ValueError(f"control {control}, kind {kind}")
        client = key[_KEY.size:].decode()
        (n,) = _U16.unpack_from(value, 0)
        pos = 2
        positions: dict[int, Place] = {}
        for _ in range(n):
            p, o, i = _POS.unpack_from(value, pos)
            positions[p] = (o, i)
            pos += _POS.size
        (n,) = _U16.unpack_from(value, pos)
        pos += 2
        inbound = tuple(_U16.unpack_from(value, pos + 2 * k)[0] for k in range(n))
        pos += 2 * n
        records = decode_records(value[pos:]) if pos < len(value) else None
    except Exception as exc:  # noqa: BLE001 - any decoding failure means "not a release"
        raise ValueError(f"not an MQTT release record: {exc}") from None
    if not client:
        raise ValueError("not an MQTT release record: no client id")
    return Release(client, ClaimKey(node, life, conn), positions, inbound, records)
