"""Hypothesis: random command sequences (valid and invalid) are deterministic, and snapshot/restore
at any point continues identically."""

from __future__ import annotations

import json

from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from real.meta import MetaStateMachine, encode_command

node_ids = st.integers(1, 5)
names = st.sampled_from(sorted(["a", "b/c", "t.0", "x_y"]))
keys = st.sampled_from(sorted(["k1", "k2", "retention.ms"]))
scalars = st.one_of(
    st.text(max_size=5).filter(lambda s: all(c.isprintable() for c in s)),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
engines = st.sampled_from(["file", "memory", "rocksdb", "s3"])

valid_commands = st.one_of(
    st.builds(lambda n, p: encode_command("node.register", node_id=n, addr=f"h:{p}"),
              node_ids, st.integers(1, 9)),
    st.builds(lambda n: encode_command("node.unregister", node_id=n), node_ids),
    st.builds(lambda t, s, e, c: encode_command("topic.create", name=t, shards=s, engine=e,
                                                config=c),
              names, st.integers(1, 4), engines, st.dictionaries(keys, scalars, max_size=2)),
    st.builds(lambda t: encode_command("topic.delete", name=t), names),
    st.builds(lambda t, s, n: encode_command("shard.set_leader", topic=t, shard=s, node_id=n),
              names, st.integers(0, 4), node_ids),
    st.builds(lambda t, s, n, e: encode_command("shard.set_leader", topic=t, shard=s, node_id=n,
                                                epoch=e),
              names, st.integers(0, 4), node_ids, st.integers(0, 6)),
    st.builds(lambda k, v: encode_command("config.put", key=k, value=v), keys, scalars),
    st.builds(lambda k: encode_command("config.delete", key=k), keys),
)
# Replication. Placed shards start at epoch 1 / version 1 and each change bumps them by one, so
# small ranges hit the current (epoch, version) often enough to get past the fencing.
isrs = st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True)
epochs, versions = st.integers(0, 4), st.integers(0, 5)
replication_commands = st.one_of(
    st.builds(lambda t, s, e, r: encode_command("topic.create", name=t, shards=s, engine=e,
                                                replication=r),
              names, st.integers(1, 4), engines, st.integers(1, 4)),
    st.builds(lambda t, s: encode_command("topic.add_shards", name=t, shards=s),
              names, st.integers(1, 6)),
    st.builds(lambda t, s, n, e, v, i: encode_command("shard.set_isr", topic=t, shard=s,
                                                      leader=n, epoch=e, version=v, isr=i),
              names, st.integers(0, 4), node_ids, epochs, versions, isrs),
    st.builds(lambda t, s, e, v, n, i, u: encode_command(
                  "shard.elect", topic=t, shard=s, epoch=e, version=v, leader=n, isr=i,
                  **({} if u is None else {"unclean": u})),
              names, st.integers(0, 4), epochs, versions, st.integers(0, 5), isrs,
              st.none() | st.booleans()),
    # Re-registrations fence the node's old self.
    st.builds(lambda n: encode_command("node.register", node_id=n, addr="h:0"), node_ids),
)
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)
invalid_commands = st.one_of(
    st.binary(max_size=20),
    st.builds(lambda op, args: json.dumps({"op": op, "args": args}).encode(),
              st.sampled_from(["config.put", "topic.create", "node.register", "shard.set_isr",
                               "shard.elect", "bogus"]),
              st.dictionaries(st.sampled_from(["key", "value", "name", "node_id", "z", "isr",
                                               "replication", "unclean"]),
                              json_junk, max_size=3)),
    # Well-formed but for (most likely) one field.
    st.builds(lambda isr, u: json.dumps({"op": "shard.elect", "args": {
        "topic": "a", "shard": 0, "epoch": 1, "version": 1, "leader": 1, "isr": isr,
        "unclean": u}}).encode(),
              json_junk | st.lists(st.integers(-1, 2), max_size=3), json_junk | st.booleans()),
    st.builds(lambda r: json.dumps({"op": "topic.create", "args": {
        "name": "a", "shards": 1, "engine": "file", "replication": r}}).encode(),
              json_junk | st.integers(-1, 1)),
)
commands = st.lists(
    st.one_of(valid_commands, valid_commands, replication_commands, replication_commands,
              invalid_commands),
    max_size=40)


def run(cmds: list[bytes], start: MetaStateMachine | None = None, first: int = 0) -> tuple:
    """Applies `cmds[first:]`, checking the invariants and the snapshot round trip after every
    step."""
    sm = start if start is not None else MetaStateMachine()
    results = []
    for i, data in enumerate(cmds[first:], start=first + 1):
        results.append(sm.apply(i, data))
        sm.invariants()
        snap = sm.snapshot()
        assert MetaStateMachine.restore(snap).snapshot() == snap
    return sm, results


@settings(max_examples=150, deadline=None)
@given(commands, st.data())
def test_snapshot_restore_mid_sequence_gives_identical_digests(cmds, data) -> None:
    cut = data.draw(st.integers(0, len(cmds)), label="cut")
    whole, whole_results = run(cmds)
    prefix, prefix_results = run(cmds[:cut])
    restored = MetaStateMachine.restore(prefix.snapshot())
    assert restored.digest() == prefix.digest()
    resumed, rest_results = run(cmds, start=restored, first=cut)
    note(f"cut={cut} ok={[r.ok for r in whole_results]}")
    assert resumed.digest() == whole.digest()
    assert resumed.snapshot() == whole.snapshot()
    assert prefix_results + rest_results == whole_results
    again, again_results = run(cmds)
    assert again.digest() == whole.digest() and again_results == whole_results


# ---- state-aware sequences: get past the fencing of shard.set_isr and shard.elect ----------------

NOT_A_REPLICA = 6  # node_ids are 1..5, so 6 is never registered nor placed


def draw_command(data: st.DataObject, sm: MetaStateMachine) -> bytes:
    """A command aimed at `sm`'s current state: mostly valid (current epoch, version, leader,
    replicas), sometimes off by one field."""
    replicated = [(t.name, i, s) for t in sm.topics() for i, s in enumerate(t.shards)
                  if s.replicated]
    kind = data.draw(st.sampled_from(
        ["static", "static", "register", "unregister", "create"]
        + (["set_isr", "elect"] * 4 if replicated else [])), label="kind")
    if kind == "static":
        return data.draw(st.one_of(valid_commands, replication_commands), label="command")
    if kind == "register":  # often a re-registration
        return encode_command("node.register", node_id=data.draw(node_ids, label="node"),
                              addr="h:1")
    if kind == "unregister" and sm.nodes():
        node = data.draw(st.sampled_from([n.node_id for n in sm.nodes()]), label="node")
        return encode_command("node.unregister", node_id=node)
    if kind in ("create", "unregister"):
        return encode_command("topic.create", name=data.draw(names, label="name"),
                              shards=data.draw(st.integers(1, 4), label="shards"),
                              engine="file", replication=data.draw(st.integers(1, 4), label="rf"))
    name, index, s = data.draw(st.sampled_from(replicated), label="shard")
    candidates = sorted(s.replicas)
    pool = st.sampled_from(candidates + [NOT_A_REPLICA]) if data.draw(
        st.integers(0, 9), label="off") == 0 else st.sampled_from(candidates)
    isr = data.draw(st.lists(pool, min_size=1, max_size=4, unique=True), label="isr")
    nudge = st.sampled_from([0, 0, 0, 0, 0, 0, -1, 1])
    epoch = max(0, s.epoch + data.draw(nudge, label="epoch nudge"))
    version = max(0, s.version + data.draw(nudge, label="version nudge"))
    if kind == "set_isr":
        leader = s.leader or 1
        if data.draw(st.integers(0, 9), label="other leader") == 0:
            leader = data.draw(node_ids, label="leader")
        if data.draw(st.integers(0, 3), label="add leader") and leader not in isr:
            isr = [leader, *isr][:4]
        return encode_command("shard.set_isr", topic=name, shard=index, leader=leader,
                              epoch=epoch, version=version, isr=isr)
    unclean = data.draw(st.none() | st.booleans(), label="unclean")
    leader = data.draw(st.sampled_from([0, *isr, NOT_A_REPLICA]), label="leader")
    if unclean and leader and data.draw(st.integers(0, 3), label="restart isr"):
        isr = [leader]
    extra = {} if unclean is None else {"unclean": unclean}
    return encode_command("shard.elect", topic=name, shard=index, epoch=epoch, version=version,
                          leader=leader, isr=isr, **extra)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_replication_sequences_keep_invariants_and_survive_snapshots(data: st.DataObject) -> None:
    sm, cmds, results = MetaStateMachine(), [], []
    for _ in range(data.draw(st.integers(1, 40), label="length")):
        cmds.append(draw_command(data, sm))
        results.append(sm.apply(len(cmds), cmds[-1]))
        sm.invariants()
        snap = sm.snapshot()
        assert MetaStateMachine.restore(snap).snapshot() == snap
        op = json.loads(cmds[-1])["op"]
        event(f"{op} {'ok' if results[-1].ok else 'refused'}")
    note(f"results={[(json.loads(c)['op'], r.ok) for c, r in zip(cmds, results, strict=True)]}")
    # Replaying the log gives the same results and state; so does resuming from a snapshot.
    again, again_results = run(cmds)
    assert again_results == results and again.snapshot() == sm.snapshot()
    cut = data.draw(st.integers(0, len(cmds)), label="cut")
    prefix, _ = run(cmds[:cut])
    resumed, rest = run(cmds, start=MetaStateMachine.restore(prefix.snapshot()), first=cut)
    assert results[cut:] == rest and resumed.digest() == sm.digest()
