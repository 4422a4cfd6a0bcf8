"""Partition leader failover, real and simulated side by side: power off (SIGKILL) the node
leading a Kafka partition of a replication-factor-3 topic while idempotent acks=all producers
write to it, and measure the time from the kill to the first acknowledgement of a record sent
after it, on that partition.

    python -m scenarios.studies.partition_failover [--trials 100] [--sim-trials 300] [--seed 1]
                                                   [--jobs 2] [--out reports/]

**Real**: the `kill-partition-leader` drill of `scenarios/chaos/drills.py` (a 3-node
`twinmq cluster` with default timings, confluent-kafka with `retry.backoff.ms` 20 and metadata
refreshed on error; every run's history checked: nothing acknowledged lost, no duplicates).
The killed node's peer port refuses the others' reconnects, so the controller knows it is dead
about 50 ms after the kill (docs/cluster.md, failure detection).

**Simulated** (`scenarios/studies/partition_failover.toml`): the same three nodes and timings
(`NodeCore` on `SimHost`), producers speaking the real protocol and following metadata; a trial
powers off the leader of a random partition at a random moment after the producers started and
reads the acknowledgements from the trace; the down node's port refuses reconnects as on one
machine (`[network] refuse_down_ms` 50). The simulator's clients retry after 20-40 ms.

Writes reports/partition-failover.json, .md and .png. Targets (issue 11): p50 <= 1 s, p99 <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from scenarios.provenance import provenance, provenance_md
from scenarios.studies.failover import plot, summary

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "studies" / "partition_failover.toml"
US_PER_MS = 1000


def sim_trial(seed: int) -> float | None:
    """Milliseconds (sim time) from the power loss of a partition's leader to the first
    acknowledgement of a batch first sent after it, on that partition (None if none came)."""
    from model.scenario import load
    from model.world import World

    rng = random.Random(f"partition-failover/{seed}")  # noqa: S311 - simulation
    world = World(load(SCENARIO), seed, keep_trace=True)
    state: dict[str, Any] = {}

    def script() -> Any:
        yield world.env.timeout(rng.randrange(700, 1200) * US_PER_MS)
        part = rng.randrange(3)
        leader = 0
        for nid in world.node_ids:
            core = world.nodes[nid].core
            if core is not None and core.replicator.leads_shard("events", part):
                leader = nid
        if not leader:
            return
        state.update(part=part, victim=leader, at=int(world.env.now))
        world.crash(leader)

    world.env.process(script())
    world.run()
    if "at" not in state:
        return None
    first_sent: dict[tuple[int, int], int] = {}
    best = None
    assert world.trace.lines is not None
    for line in world.trace.lines:
        e = json.loads(line)
        if e.get("p") != state["part"]:
            continue
        key = (e["node"], e.get("seq", -1))
        if e["kind"] == "send":
            first_sent.setdefault(key, e["t"])
        elif e["kind"] == "ack" and e["t"] > state["at"]:
            if first_sent.get(key, -1) >= state["at"]:
                best = e["t"] if best is None else min(best, e["t"])
    return None if best is None else (best - state["at"]) / US_PER_MS


def real_trials(count: int, seed: int) -> tuple[list[float], list[dict[str, Any]]]:
    from scenarios.chaos.drills import run_drill

    results = run_drill("kill-partition-leader", count, seed=seed)
    bad = [r for r in results if not r["ok"]]
    assert not bad, f"anomalies in the real runs: {bad[:3]}"
    return [r["failover_ms"] for r in results if r["failover_ms"] is not None], results


def write_report(result: dict[str, Any], out: Path) -> None:
    real, sim = result["real"]["summary"], result["sim"]["summary"]
    rows = [f"| {k} | {real[k]} | {sim[k]} | {real[k] / sim[k]:.2f} |"
            for k in ("min", "p50", "p90", "p99", "max", "mean")]
    ok = real["p50"] <= 1000 and real["p99"] <= 3000
    md = ["# Partition leader failover: real cluster vs simulator", "", *provenance_md(result),
          f"`{result.get('command') or 'python -m scenarios.studies.partition_failover'}`; "
          f"wall {result['wall_s']} s.", *(["", result["note"]] if result.get("note") else []),
          "", "Three nodes with default timings: meta Raft (10 ms ticks, election timeout "
          "10-19 ticks), controller (heartbeat 100 ms, dead after 600 ms of silence or at once "
          "when its peer port refuses connections), replication (fetch wait 500 ms). A topic "
          "of 3 partitions, replication factor 3, min.insync.replicas 2, written by "
          "idempotent acks=all producers. A trial kills the leader of a random "
          "partition and measures the time to the first acknowledgement of a record sent "
          "after the kill, on that partition. Real: SIGKILL, confluent-kafka, every run's "
          "history checked (no acknowledged record lost, no duplicate); simulated: power "
          "loss, exact times.", "",
          f"| ms | real ({real['trials']} trials) | simulated ({sim['trials']} trials) | "
          "real / simulated |", "|---|---|---|---|", *rows, "",
          f"Targets: p50 <= 1000 ms and p99 <= 3000 ms on the real cluster: "
          f"{'met' if ok else 'NOT met'} (p50 {real['p50']}, p99 {real['p99']}).", "",
          "![partition-failover.png](partition-failover.png)", "", "## Reading it", "",
          "The failover is the controller's detection, a meta commit of the election, the new "
          "leader's first fetch round with the surviving follower (acks=all needs min.insync "
          "2), and the client's metadata refresh and retry. A killed node's peer port refuses "
          "the others' reconnects, so the controller knows it is dead about 50 ms after the "
          "kill instead of after the 600 ms session timeout (docs/cluster.md, failure "
          "detection); when the killed node also led the meta group, a meta election "
          "(100-190 ms timeouts) comes first. The simulated clients retry every 20-40 ms; "
          "librdkafka asks for metadata again on a doubling backoff, so a real trial whose new "
          "leader is ready just after one of its refreshes waits for the next one, which is "
          "the likeliest reason for the real trials' second group (not confirmed with "
          "librdkafka's debug log).", ""]
    (out / "partition-failover.md").write_text("\n".join(md))


def _without_note(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.studies.partition_failover",
                                description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=100, help="real trials")
    p.add_argument("--sim-trials", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="processes for the simulated trials")
    p.add_argument("--real-from", type=Path, help="reports/chaos.json of a drills run: its "
                   "kill-partition-leader runs are the real trials (the same measurement)")
    p.add_argument("--note", default="", help="a sentence on how or where the data was taken")
    p.add_argument("--sim-json", type=Path, help="a JSON list of earlier simulated results "
                   "(ms or null per trial, seeds seed*1e6 + i) instead of running them")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    args = p.parse_args(argv)
    started = time.perf_counter()
    if args.sim_json is not None:  # the simulated trials of an earlier run (same seeds)
        sims = json.loads(args.sim_json.read_text())[:args.sim_trials]
    else:
        from concurrent.futures import ProcessPoolExecutor

        seeds = [args.seed * 1_000_000 + i for i in range(args.sim_trials)]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            sims = list(pool.map(sim_trial, seeds, chunksize=4))
    sim_ms = [x for x in sims if x is not None]
    if args.real_from is not None:  # the kill-partition-leader runs of a chaos report
        runs = json.loads(args.real_from.read_text())["drills"]["kill-partition-leader"][
            "results"][:args.trials]
        real_ms = [r["failover_ms"] for r in runs if r["failover_ms"] is not None]
    else:
        real_ms, runs = real_trials(args.trials, args.seed)
    result: dict[str, Any] = {
        "study": "partition leader failover", "seed": args.seed, "provenance": provenance(),
        "command": " ".join(["python -m scenarios.studies.partition_failover",
                             *_without_note(sys.argv[1:] if argv is None else argv)]),
        "note": args.note,
        "wall_s": round(time.perf_counter() - started, 1),
        "real": {"ms": [round(x, 2) for x in real_ms], "summary": summary(real_ms),
                 "acked": sum(r["acked"] for r in runs), "lost": sum(r["lost"] for r in runs),
                 "duplicates": sum(r["duplicates"] for r in runs)},
        "sim": {"ms": [round(x, 3) for x in sim_ms], "summary": summary(sim_ms),
                "no_ack": len(sims) - len(sim_ms)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "partition-failover.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "partition-failover.png",
         xlabel="ms from killing a partition's leader to the first ack of a later record",
         title="Partition failover, RF 3, acks=all, default timings", mark_ms=1000)
    write_report(result, args.out)
    print(f"real {result['real']['summary']}\nsim  {result['sim']['summary']}\n"
          f"-> {args.out / 'partition-failover.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
