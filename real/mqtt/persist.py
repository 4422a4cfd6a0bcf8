"""The broker's state log: how sessions, queued QoS 1/2 messages and retained messages become
`Record`s in one shard, and how they are read back after a crash.

One shard (`$mqtt-state` by default) holds every durable fact of the broker, appended in the order
the broker learns it. A record's `key` names its kind; `meta` carries the fields as (name, text)
pairs; the payload is the message payload; `headers` are the MQTT 5 User Properties (so a future
Kafka view of the log sees them as Kafka headers).

    kind  meta                                                   meaning
    ses   c=client, e=expiry s, v=version, [u=user], s=sub (rep) persistent session, full sub list
    del   c=client                                              session ended
    pub   t=topic, q=qos, [r=1], [x=expiry ms], [o=origin],     a message: retained (r=1) and/or
          [ct, rt, cd(hex), pf], d=client,qos,retain,ids (rep)  queued to each d= target session
    ack   c=client, m=pub offset                                the target finished with it
    snd   c=client, m=pub offset, p=packet id                   QoS 2 PUBLISH sent under p
    rel   c=client, m=pub offset (-1: none), p=packet id        PUBREC came: PUBREL owed for p
    cmp   c=client, p=packet id                                 PUBCOMP came: p is free again
    ckp   g=generation                                          a checkpoint is complete
    cur   p=partition, o=offset, i=index                        cluster log (real/mqtt/cluster.py)
                                                                routed here up to message i of
                                                                the batch at offset o of p
    qi    c=client, p=packet id                                 an inbound QoS 2 PUBLISH
                                                                accepted under p (PUBREL due)
    qr    c=client, p=packet id                                 its PUBREL came: p is free
    rls   c=client, i=meta index, k=key (hex); payload: value   a session hand-over written for
                                                                the claim at meta index i
                                                                (claims.py), sent again after
                                                                a restart until committed
    clm   c=client, i=meta index                                the claims of client id c
                                                                (claims.py) are settled here
                                                                up to meta index i

In a cluster (`mqtt.cluster`) a `pub` routed from the cluster log also carries
cp=partition:offset:index, its place in that log (the batch's shard offset, the message's index
in it): after a crash the node resumes each partition after the highest place a durable `pub`
or `cur` names, so a message queued to a persistent session is queued once.

A subscription `s` is "filter\\tqos\\tno_local\\trap\\tretain_handling\\tsub_id". A target `d` is
"client\\tqos\\tretain\\tid,id,...".

Durability point: a QoS 1/2 publish that was logged is acknowledged to its publisher (PUBACK /
PUBREC) only once the shard's `durable_end` passes the `pub` record. A `ses` record precedes every
`pub` that targets the session and an `ack` follows its `pub`, so any durable prefix of the log is
a consistent state: at worst a message delivered just before the crash is delivered again (QoS 1
allows duplicates).

Outbound QoS 2 keeps its packet ids across a crash, because the client holds a QoS 2 packet id
until it gets PUBREL and silently acknowledges any new PUBLISH that reuses it (MQTT-4.3.3): a
logged QoS 2 PUBLISH is sent only once its `snd` record is durable, PUBREC writes `rel`, PUBCOMP
writes `cmp`. Recovery puts `snd`-without-`rel` deliveries back in the inflight window under their
packet id (re-sent with DUP) and `rel`-without-`cmp` ids as owed PUBRELs, so no id the client may
hold is reused.

Inbound QoS 2 keeps its packet ids too: a persistent session's accepted QoS 2 PUBLISH writes `qi`
and its PUBREC waits until that is durable; PUBREL writes `qr` and its PUBCOMP waits likewise. A
client that re-sends the PUBLISH (DUP) after a crash, or to another node of a cluster (the id
moves with the session), is acknowledged without a second copy.

Checkpoints bound the log: the broker re-writes its whole live state (sessions, retained messages,
queued messages) as records tagged `g=<generation>`, then a `ckp g=<generation>` record, and, once
that is durable, deletes everything before the first tagged record. Recovery reads the log once to
find the last complete checkpoint and replays from its first record; records of an incomplete
checkpoint (a crash part-way) are ignored, so a torn checkpoint never duplicates state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from real.mqtt.properties import Properties, PropertyId, PropertyValue
from real.mqtt.session import EXPIRY_NEVER, Delivery, Inflight, Message, Session, SubOpts
from real.storage.port import ShardEngine
from real.storage.record import Record

SES, DEL, PUB, ACK, CKP = b"ses", b"del", b"pub", b"ack", b"ckp"
SND, REL, CMP = b"snd", b"rel", b"cmp"
CUR = b"cur"
CLM = b"clm"
QI, QR = b"qi", b"qr"
RLS = b"rls"
KINDS = (SES, DEL, PUB, ACK, SND, REL, CMP, CKP, CUR, CLM, QI, QR, RLS)


class CorruptState(Exception):
    """A state-log record that cannot be understood; names the offset and the field."""


# ------------------------------------------------------------------------------------- encoding


def session_record(session: Session, now: int, generation: int = 0) -> Record:
    meta: list[tuple[str, str]] = [("c", session.client_id), ("e", str(session.expiry_s)),
                                   ("v", str(session.version))]
    if session.username is not None:
        meta.append(("u", session.username))
    for topic_filter, opts in session.subscriptions.items():
        meta.append(("s", f"{topic_filter}\t{opts.qos}\t{int(opts.no_local)}\t"
                          f"{int(opts.retain_as_published)}\t{opts.retain_handling}\t{opts.sub_id}"))
    if generation:
        meta.append(("g", str(generation)))
    return Record(-1, int(now), SES, b"", meta=tuple(meta))


def delete_record(client_id: str, now: int) -> Record:
    return Record(-1, int(now), DEL, b"", meta=(("c", client_id),))


def ack_record(client_id: str, log_id: int, now: int) -> Record:
    return Record(-1, int(now), ACK, b"", meta=(("c", client_id), ("m", str(log_id))))


def packet_record(kind: bytes, client_id: str, log_id: int, packet_id: int, now: int,
                  generation: int = 0) -> Record:
    """A `snd`, `rel` or `cmp` record (QoS 2 packet-id state; `log_id` unused for `cmp`)."""
    meta: list[tuple[str, str]] = [("c", client_id), ("p", str(packet_id))]
    if kind != CMP:
        meta.append(("m", str(log_id)))
    if generation:
        meta.append(("g", str(generation)))
    return Record(-1, int(now), kind, b"", meta=tuple(meta))


def claims_record(client_id: str, index: int, now: int, generation: int = 0) -> Record:
    """`clm`: this node has settled the meta claims (real/mqtt/claims.py) of `client_id` up to
    `index` (the session a claim brought is logged, or the one it took is handed over); a
    restart does not act on them again."""
    meta = [("c", client_id), ("i", str(index))]
    if generation:
        meta.append(("g", str(generation)))
    return Record(-1, now, CLM, b"", meta=tuple(meta))


def inbound_record(kind: bytes, client_id: str, packet_id: int, now: int,
                   generation: int = 0) -> Record:
    """`qi` (an inbound QoS 2 PUBLISH accepted under `packet_id`: a re-send of it after a
    crash is acknowledged, not delivered again) or `qr` (its PUBREL came)."""
    meta = [("c", client_id), ("p", str(packet_id))]
    if generation:
        meta.append(("g", str(generation)))
    return Record(-1, now, kind, b"", meta=tuple(meta))


def release_state_record(client_id: str, index: int, key: bytes, value: bytes, now: int,
                         generation: int = 0) -> Record:
    """`rls`: the `__mqtt` record (`key`, `value`) of a hand-over of `client_id`'s session for
    the claim at meta `index`, written when the session left (its `del` before it): a restart
    before it is committed sends it again, as it was (the session's state and the places it
    names are those of that moment)."""
    meta = [("c", client_id), ("i", str(index)), ("k", key.hex())]
    if generation:
        meta.append(("g", str(generation)))
    return Record(-1, now, RLS, value, meta=tuple(meta))


def checkpoint_record(generation: int, now: int) -> Record:
    return Record(-1, int(now), CKP, b"", meta=(("g", str(generation)),))


_FORWARDED_TEXT = ((PropertyId.CONTENT_TYPE, "ct"), (PropertyId.RESPONSE_TOPIC, "rt"))


def cursor_record(partition: int, place: tuple[int, int], now: int,
                  generation: int = 0) -> Record:
    """`cur`: this node has routed the cluster log's `partition` up to `place` (shard offset,
    index of the first message of that batch not routed yet)."""
    meta = [("p", str(partition)), ("o", str(place[0])), ("i", str(place[1]))]
    if generation:
        meta.append(("g", str(generation)))
    return Record(-1, now, CUR, b"", meta=tuple(meta))


def publish_record(msg: Message, targets: Iterable[tuple[str, Delivery]], now: int,
                   retained: bool, generation: int = 0,
                   cluster_pos: tuple[int, int, int] | None = None) -> Record:
    """The `pub` record of `msg`: retained (the topic's retained message) and/or queued to
    `targets` ((client id, delivery) pairs); `cluster_pos`: (partition, shard offset, index in
    the batch) of the cluster log message it was routed from."""
    meta: list[tuple[str, str]] = [("t", msg.topic), ("q", str(msg.qos))]
    if retained:
        meta.append(("r", "1"))
    if msg.expiry_at != EXPIRY_NEVER:
        meta.append(("x", str(msg.expiry_at)))
    if msg.origin:
        meta.append(("o", msg.origin))
    headers: list[tuple[str, bytes]] = []
    for pid, value in msg.props.items:
        if pid == PropertyId.USER_PROPERTY:
            assert isinstance(value, tuple), value
            name, text = value
            headers.append((name, text.encode()))
        elif pid == PropertyId.CONTENT_TYPE:
            assert isinstance(value, str), value
            meta.append(("ct", value))
        elif pid == PropertyId.RESPONSE_TOPIC:
            assert isinstance(value, str), value
            meta.append(("rt", value))
        elif pid == PropertyId.CORRELATION_DATA:
            assert isinstance(value, bytes), value
            meta.append(("cd", value.hex()))
        elif pid == PropertyId.PAYLOAD_FORMAT_INDICATOR:
            meta.append(("pf", str(value)))
    for client_id, d in targets:
        ids = ",".join(str(i) for i in d.sub_ids)
        meta.append(("d", f"{client_id}\t{d.qos}\t{int(d.retain)}\t{ids}"))
    if generation:
        meta.append(("g", str(generation)))
    if cluster_pos is not None:
        meta.append(("cp", ":".join(str(n) for n in cluster_pos)))
    return Record(-1, int(msg.created_ms), PUB, msg.payload, headers=tuple(headers),
                  meta=tuple(meta))


# ------------------------------------------------------------------------------------- recovery


@dataclass
class RecoveredState:
    """What replaying the log yields: sessions (with queued deliveries), retained messages, and
    the generation of the last complete checkpoint."""

    sessions: dict[str, Session] = field(default_factory=dict)
    retained: dict[str, Message] = field(default_factory=dict)
    generation: int = 0
    replay_from: int = 0
    records: int = 0
    cluster_positions: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Cluster log partition -> (shard offset, index in that batch) of the first message this
    node has not routed yet."""
    claims_settled: dict[str, int] = field(default_factory=dict)
    """Client id -> the meta index up to which this node settled its claims."""
    releases: list[tuple[str, int, bytes, bytes]] = field(default_factory=list)
    """Hand-overs written and not settled: (client id, claim's meta index, key, value)."""


def _meta_get(rec: Record, name: str) -> str | None:
    for key, value in rec.meta:
        if key == name:
            return value
    return None


def _required(rec: Record, name: str) -> str:
    value = _meta_get(rec, name)
    if value is None:
        raise CorruptState(f"state log offset {rec.offset}: {rec.key!r} record lacks {name!r}")
    return value


def _int(rec: Record, name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CorruptState(f"state log offset {rec.offset}: field {name!r} is not an integer: "
                           f"{text!r}") from None


def _parse_sub(rec: Record, text: str) -> tuple[str, SubOpts]:
    parts = text.split("\t")
    if len(parts) != 6:
        raise CorruptState(f"state log offset {rec.offset}: bad subscription {text!r}")
    topic_filter, qos, nl, rap, rh, sub_id = parts
    share = ""
    if topic_filter.startswith("$share/"):
        share = topic_filter.split("/", 2)[1]
    return topic_filter, SubOpts(qos=_int(rec, "s", qos), no_local=nl == "1",
                                 retain_as_published=rap == "1", retain_handling=_int(rec, "s", rh),
                                 sub_id=_int(rec, "s", sub_id), share_group=share)


def message_from_record(rec: Record) -> Message:
    props: list[tuple[PropertyId, PropertyValue]] = []
    for key, value in rec.meta:
        if key == "pf":
            props.append((PropertyId.PAYLOAD_FORMAT_INDICATOR, _int(rec, "pf", value)))
        elif key == "ct":
            props.append((PropertyId.CONTENT_TYPE, value))
        elif key == "rt":
            props.append((PropertyId.RESPONSE_TOPIC, value))
        elif key == "cd":
            props.append((PropertyId.CORRELATION_DATA, bytes.fromhex(value)))
    for name, raw in rec.headers:
        props.append((PropertyId.USER_PROPERTY, (name, raw.decode())))
    expiry = _meta_get(rec, "x")
    return Message(
        topic=_required(rec, "t"), payload=rec.payload, qos=_int(rec, "q", _required(rec, "q")),
        retain=_meta_get(rec, "r") == "1",
        props=Properties(tuple(props)),
        expiry_at=EXPIRY_NEVER if expiry is None else _int(rec, "x", expiry),
        origin=_meta_get(rec, "o") or "", created_ms=rec.timestamp_ms, log_id=rec.offset)


def recover(records: Iterable[Record]) -> RecoveredState:
    """Rebuild the broker's durable state from the log's records (offset order)."""
    log = list(records)
    complete: set[int] = set()
    first_of: dict[int, int] = {}
    for rec in log:
        gen = _meta_get(rec, "g")
        if gen is None:
            continue
        g = _int(rec, "g", gen)
        if rec.key == CKP:
            complete.add(g)
        else:
            first_of.setdefault(g, rec.offset)
    state = RecoveredState()
    if complete:
        state.generation = max(complete)
        state.replay_from = first_of.get(state.generation, log[0].offset if log else 0)
    pending: dict[str, dict[int, Delivery]] = {}
    packets = _PacketState()
    for rec in log:
        if rec.offset < state.replay_from:
            continue
        gen = _meta_get(rec, "g")
        if gen is not None and rec.key != CKP and _int(rec, "g", gen) not in complete:
            continue  # part of a checkpoint that never completed: its facts are repeats
        state.records += 1
        _apply(rec, state, pending, packets)
    for client_id, session in state.sessions.items():
        for packet_id, delivery in packets.released.get(client_id, {}).items():
            session.inflight[packet_id] = Inflight(delivery or _OWED, packet_id, released=True)
        sent = packets.sent.get(client_id, {})
        by_id = pending.get(client_id, {})
        for log_id in sorted(by_id):
            sent_id = sent.get(log_id)
            if sent_id is not None and sent_id not in session.inflight:
                session.inflight[sent_id] = Inflight(by_id[log_id], sent_id)
            else:
                session.queue.append(by_id[log_id])
    return state


_OWED = Delivery(Message("", b"", 2, False, Properties(), EXPIRY_NEVER, "", 0), 2, False)
"""Stands for a released QoS 2 delivery whose message is gone: only its PUBREL is owed."""


@dataclass
class _PacketState:
    sent: dict[str, dict[int, int]] = field(default_factory=dict)  # client -> log id -> pid
    released: dict[str, dict[int, Delivery | None]] = field(default_factory=dict)  # -> pid


def _advance(state: RecoveredState, partition: int, place: tuple[int, int]) -> None:
    positions = state.cluster_positions
    if place > positions.get(partition, (-1, 0)):
        positions[partition] = place


def _apply(rec: Record, state: RecoveredState, pending: dict[str, dict[int, Delivery]],
           packets: _PacketState) -> None:
    kind = rec.key
    if kind == SES:
        client_id = _required(rec, "c")
        old = state.sessions.get(client_id)
        session = old or Session(client_id, 0, 4, rec.timestamp_ms)
        session.expiry_s = _int(rec, "e", _required(rec, "e"))
        session.version = _int(rec, "v", _required(rec, "v"))
        session.subscriptions = dict(_parse_sub(rec, v) for k, v in rec.meta if k == "s")
        session.username = _meta_get(rec, "u")
        session.disconnected_ms = rec.timestamp_ms
        state.sessions[client_id] = session
    elif kind == DEL:
        client_id = _required(rec, "c")
        state.sessions.pop(client_id, None)
        pending.pop(client_id, None)
        packets.sent.pop(client_id, None)
        packets.released.pop(client_id, None)
    elif kind == PUB:
        msg = message_from_record(rec)
        place = _meta_get(rec, "cp")
        if place is not None:
            parts = place.split(":")
            if len(parts) != 3:
                raise CorruptState(f"state log offset {rec.offset}: bad cp {place!r}")
            partition, offset, index = (_int(rec, "cp", part) for part in parts)
            _advance(state, partition, (offset, index + 1))
        if msg.retain:
            if msg.payload:
                state.retained[msg.topic] = msg
            else:
                state.retained.pop(msg.topic, None)
        for key, value in rec.meta:
            if key != "d":
                continue
            parts = value.split("\t")
            if len(parts) != 4:
                raise CorruptState(f"state log offset {rec.offset}: bad target {value!r}")
            client_id, qos, retain, ids = parts
            if client_id not in state.sessions:
                continue
            sub_ids = tuple(_int(rec, "d", i) for i in ids.split(",")) if ids else ()
            pending.setdefault(client_id, {})[rec.offset] = Delivery(
                msg, _int(rec, "d", qos), retain == "1", sub_ids)
    elif kind == ACK:
        client_id = _required(rec, "c")
        log_id = _int(rec, "m", _required(rec, "m"))
        by_id = pending.get(client_id)
        if by_id is not None:
            by_id.pop(log_id, None)
        packets.sent.get(client_id, {}).pop(log_id, None)
    elif kind in (SND, REL, CMP):
        client_id = _required(rec, "c")
        packet_id = _int(rec, "p", _required(rec, "p"))
        if client_id not in state.sessions:
            return
        if kind == CMP:
            packets.released.get(client_id, {}).pop(packet_id, None)
            return
        log_id = _int(rec, "m", _required(rec, "m"))
        if kind == SND:
            packets.sent.setdefault(client_id, {})[log_id] = packet_id
        else:
            delivery = pending.get(client_id, {}).pop(log_id, None)
            packets.sent.get(client_id, {}).pop(log_id, None)
            packets.released.setdefault(client_id, {})[packet_id] = delivery
    elif kind == CUR:
        _advance(state, _int(rec, "p", _required(rec, "p")),
                 (_int(rec, "o", _required(rec, "o")), _int(rec, "i", _required(rec, "i"))))
    elif kind in (QI, QR):
        holder = state.sessions.get(_required(rec, "c"))
        if holder is not None:
            packet_id = _int(rec, "p", _required(rec, "p"))
            if kind == QI:
                holder.inbound_qos2.add(packet_id)
            else:
                holder.inbound_qos2.discard(packet_id)
    elif kind == CLM:
        client_id = _required(rec, "c")
        index = _int(rec, "i", _required(rec, "i"))
        state.claims_settled[client_id] = max(state.claims_settled.get(client_id, 0), index)
        state.releases = [r for r in state.releases if r[0] != client_id or r[1] > index]
    elif kind == RLS:
        try:
            raw_key = bytes.fromhex(_required(rec, "k"))
        except ValueError:
            raise CorruptState(f"state log offset {rec.offset}: bad rls key") from None
        state.releases.append((_required(rec, "c"), _int(rec, "i", _required(rec, "i")),
                               raw_key, bytes(rec.payload)))
    elif kind == CKP:
        pass
    else:
        raise CorruptState(f"state log offset {rec.offset}: unknown record kind {kind!r}")


def read_all(engine: ShardEngine, batch_records: int = 4096, batch_bytes: int = 16 << 20
             ) -> Iterator[Record]:
    """Every record of a `ShardEngine` from its start, in offset order."""
    offset = engine.start_offset()
    end = engine.end_offset()
    while offset < end:
        batch = engine.read(offset, batch_records, batch_bytes)
        if not batch:
            break
        yield from batch
        offset = batch[-1].offset + 1
