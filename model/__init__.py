"""model/: the simulator. It runs the product's own composed node (`NodeCore`, real/server/)
under SimPy time, over simulated devices, with workloads, one nemesis and checkers.

    sim/         building blocks: seeded random streams (rng), latency distributions (dist),
                 machine clocks with drift and skew (clock), the JSONL trace (trace), the
                 multi-process seed sweep (sweep)
    devices/     simulated devices behind the real ports: the network between nodes (net),
                 client connections (conn), a filesystem with power loss (fs), a key-value store
                 (kv), an object store (objstore)
    host.py      SimHost: one simulated machine running one NodeCore (the twin of real/node/host.py)
    world.py     World(scenario, seed).run() -> RunResult(ok|safety|liveness|crash): N hosts, the
                 network, the workloads, the nemesis, the checkers, the trace
    workloads/   what runs against the cluster: the meta client (meta), MQTT publishers and
                 subscribers (mqtt), Kafka producers, groups and readers (kafka), the bridge audit
                 (bridge)
    checkers/    oracles: Raft safety during the run (raft); MQTT, Kafka and bridge histories at
                 the end (mqtt, kafka, bridge)
    nemesis.py   one fault schedule: crashes, pauses, partitions, loss, delay, clock skew, client
                 drops, client-network spikes, consumer pauses; then heal
    scenario.py  the one TOML schema (unknown keys and bad values fail naming the key)
    __main__.py  `python -m model run|sweep` (also `twinmq sim ...`)

Simulated time is integer microseconds. SimPy is the scheduler only: no RealtimeEnvironment.
"""
