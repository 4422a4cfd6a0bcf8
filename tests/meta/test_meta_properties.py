"""Hypothesis: random command sequences (valid and invalid) are deterministic, and snapshot/restore
at any point continues identically."""

from __future__ import annotations

import json

from hypothesis import given, note, settings
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
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)
invalid_commands = st.one_of(
    st.binary(max_size=20),
    st.builds(lambda op, args: json.dumps({"op": op, "args": args}).encode(),
              st.sampled_from(["config.put", "topic.create", "node.register", "bogus"]),
              st.dictionaries(st.sampled_from(["key", "value", "name", "node_id", "z"]),
                              json_junk, max_size=3)),
)
commands = st.lists(st.one_of(valid_commands, valid_commands, invalid_commands), max_size=40)


def run(cmds: list[bytes], start: MetaStateMachine | None = None, first: int = 0) -> tuple:
    sm = start if start is not None else MetaStateMachine()
    results = []
    for i, data in enumerate(cmds[first:], start=first + 1):
        results.append(sm.apply(i, data))
        sm.invariants()
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
