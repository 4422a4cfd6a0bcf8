"""model/: the SimPy shell that drives the same RaftNode and MetaStateMachine objects as real/.

    rng.py       SeedTree: per-component random streams derived in a fixed order
    dist.py      latency distributions (fixed, uniform, lognormal, normal-clipped), ms -> us
    clock.py     NodeClock: ticks <-> sim time with drift and skew
    net.py       Network: per-ordered-pair links (latency, loss, dup, reorder, partitions, bound)
    fs.py        SimFileSystem: power loss (unsynced loss, torn writes), EIO, simulated time
    node.py      SimNode: the persist -> fsync -> send -> apply -> advance loop, crash/pause;
                 its Raft log is the real RaftLog (real/server/raftlog.py) on a SimFileSystem
    workload.py  Client: proposals to the leader with retries and bounds
    faults.py    Nemesis: random faults, then heal
    checkers.py  safety oracles run during the sim (election, log matching, completeness, SM)
    trace.py     JSONL trace + trace-hash
    scenario.py  TOML scenario loader (unknown keys fail fast)
    world.py     World(scenario, seed).run() -> RunResult(outcome ok|safety|liveness|crash)
    sweep.py     many seeds in parallel processes
    __main__.py  `python -m model run|sweep` (main(argv) -> exit code)

Simulated time is integer microseconds. SimPy is glue only: no RealtimeEnvironment.
"""
