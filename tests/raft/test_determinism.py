"""Same seed, same trace: across runs, tick batching and PYTHONHASHSEED."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

from real.raft import ProposalDropped, RaftConfig
from tests.raft.harness import Network, fmt_ready

ROOT = Path(__file__).resolve().parents[2]


def chaos_trace_hash(seed: int, steps: int = 400) -> str:
    """Random schedule (drops, reorders, partitions, crashes) driven only by `seed`."""
    config = RaftConfig(election_tick_min=4, election_tick_max=8, heartbeat_tick=1)
    net = Network(config, seed=seed)
    ids = (1, 2, 3, 4, 5)
    for i in ids:
        net.add_node(i, ids)
    sched = random.Random(seed)
    digest = hashlib.sha256()
    for step in range(steps):
        nid = sched.choice(net.up())
        action = sched.randrange(10)
        if action < 3:
            net.nodes[nid].tick(sched.randint(1, 5))
        elif action < 5 and net.msgs:
            net.deliver_one(sched.randrange(len(net.msgs)))
        elif action == 5 and net.msgs:
            net.msgs.pop(sched.randrange(len(net.msgs)))
        elif action == 6:
            try:
                net.nodes[nid].propose(b"s%d" % step)
            except ProposalDropped:
                pass
        elif action == 7 and not net.down:
            net.crash(nid)
        elif action == 8 and net.down:
            net.restart(sorted(net.down)[0])
        else:
            net.heal()
            if sched.random() < 0.3:
                net.partition({nid})
        for up in net.up():
            for rd in net.process_ready(up):
                digest.update("\n".join(fmt_ready(up, rd)).encode())
    return digest.hexdigest()


def test_same_seed_same_trace() -> None:
    assert chaos_trace_hash(11) == chaos_trace_hash(11)
    assert chaos_trace_hash(11) != chaos_trace_hash(12)


def test_trace_independent_of_hash_seed() -> None:
    code = (
        "from tests.raft.test_determinism import chaos_trace_hash; print(chaos_trace_hash(11))"
    )
    outs = set()
    for hashseed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        outs.add(out)
    assert outs == {chaos_trace_hash(11)}
