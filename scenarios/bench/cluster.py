"""Replication benchmark: RF 3 acks=all vs RF 1 on one 3-node TwinMQ cluster, ratios in one run.

    python -m scenarios.bench.cluster [--mib 128] [--partitions 3] [--repeat 5]
                                      [--out reports/bench-cluster] [--smoke]

Issue 11's acceptance point: RF 3 acks=all produce throughput on 3 local nodes at least 0.4x the
same node's RF 1 throughput, consume unaffected. One cluster (`twinmq cluster`'s launcher via
`scenarios.chaos.drills.RealCluster`: 3 `twinmq serve` processes on loopback, file engine, the
node's default fsync policy `group` unless `--fsync` says otherwise) serves every cell.

Cells (one fresh topic each, named after the round and the cell)
----------------------------------------------------------------
Topics are created with a CreateTopics request sent to the chosen node itself (the project's
codec over a socket: confluent-kafka's AdminClient would send it to the controller, the meta
leader, and an RF 1 topic lives on the node it was created through).

* `rf1-<P>p`: replication factor 1, `--partitions` P, created through node 1 (meta records the
  creating node as the leader of every partition: the topic lives on node 1), producers and
  consumer bootstrap on node 1.
* `rf3-<P>p`: replication factor 3, `min.insync.replicas` 2, P partitions, placed by meta (each
  partition led by the node leading the fewest replicated partitions so far: the leaders spread
  over the 3 nodes; the report names them). Every node leads some partitions and follows the
  others, so this is the cluster's throughput, not one node's.
* `rf3-1p` / `rf1-1p`, the same-node pair: a 1-partition RF 3 topic (led by whichever node
  placement picks, `L`), and a 1-partition RF 1 topic created through node L. Both cells send
  all their records to one leader, L: the ratio is L's throughput with and without replication
  (its followers' work runs on the same 2 cores, as it would on any one machine). Placement
  rotates L over the rounds (the next 1-partition topic goes to the node leading fewest).

Every cell is acks=all, `--record-bytes` records through `scenarios/bench/kafka_loadgen.py`
worker processes, measured as in `scenarios/bench/kafka.py` (its `Workers`, `produce_fields`,
`consume_fields`, `summarize`): produce rate = delivered records / (first send -> last delivery
report), consume rate = distinct records / (assign() -> last new record; the consumer runs
with `CONSUMER_OVERRIDES`, see there), and the consumer checks every (producer, sequence) id:
`lost`, `duplicates`, `unknown`. A cell is `verified` when nothing was lost, duplicated,
unknown, unread or failed. CPU (utime + stime from /proc, 100 = one core) is sampled per node
over each phase, plus the whole machine's, and turned into the CPU milliseconds all nodes spent
per MB moved. Each node's `GET /replication` counters (in-sync set
shrinks and expansions, follower fetches served) are read before and after the produce phase.

After the consumer, a latency probe sends `--latency-records` records one at a time (linger.ms
0, acks=all, the next only after the previous one's delivery report) and reports p50 / p99 / max
of produce() -> delivery report: the acknowledgement latency of an idle cluster, which for RF 3
includes a follower fetch, the follower's group commit and the fetch that tells the leader. (The
load generator reports no per-record latency; under full load librdkafka's own queue would
dominate it anyway.)

Rounds: `--repeat`; within a round the cells are interleaved (rf1 before rf3 in even rounds, rf3
before rf1 in odd ones) so a change of background load hits both sides of a ratio alike. Every
RF 3 topic is in sync (every replica in the in-sync set) before its cell starts, and the cell
waits until it is again afterwards (`in_sync_after_s`), so a follower still catching up does not
load the next cell. The report shows per cell the median over the rounds (worst round for loss),
and per pair the median over the rounds of that round's rf3/rf1 ratio.

Results: `<out>.json` (everything) and `<out>.md`. MB = 10^6 bytes of record values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import struct
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from real.kafka.api import CREATE_TOPICS
from real.kafka.codec import (
    KafkaCodecError,
    RequestHeader,
    decode_response,
    encode_request,
)
from real.node import cluster as cluster_ctl
from scenarios.bench import kafka_loadgen
from scenarios.bench.kafka import (
    CellError,
    Workers,
    _fs_type,
    _git_rev,
    _pct,
    _recv_exact,
    _sleep_until,
    consume_fields,
    kafka_ready,
    machine_busy_s,
    produce_fields,
    ratio,
    split_counts,
    summarize,
)
from scenarios.bench.kafka_loadgen import (
    ConsumeJob,
    ConsumeStats,
    ProduceJob,
    ProduceStats,
    _warm_up,
    filler_for,
    produce_worker,
    record_value,
)
from scenarios.bench.mqtt import proc_cpu_s, proc_mem_mb
from scenarios.chaos.drills import RealCluster
from scenarios.provenance import provenance_md

ROOT = Path(__file__).resolve().parents[2]
NODES = 3
RF = 3
MIN_INSYNC = 2
BROKER = "twinmq-file-3n"  # the `broker` of every row (kafka.summarize groups by it)
PRODUCE_TARGET = 0.4  # issue 11: RF 3 produce >= 0.4x the same node's RF 1
CONSUME_TARGET = 0.9  # "consume unaffected": within 10 % (the run-to-run noise of one cell)
REPLICATION_COUNTERS = ("isr_shrinks", "isr_expands", "fetches_served", "reads_cached",
                        "reads_engine", "records_replicated", "replies_stale", "records_stale",
                        "errors")
LATENCY_INDEX = 1 << 20  # producer index of the latency probe's record ids
CREATE_TOPICS_VERSION = 4


@dataclass(frozen=True, slots=True)
class Cell:
    """One topic of a round and how it is driven."""

    name: str
    rf: int
    partitions: int
    pair: str  # the two cells of a pair are compared


@dataclass(slots=True)
class Placed:
    """A created topic: its name, the node the clients bootstrap on, its partitions' leaders."""

    topic: str
    via: int
    leaders: list[int]


def cells(partitions: int) -> list[Cell]:
    spread = f"{partitions}p"
    out = [Cell(f"rf1-{spread}", 1, partitions, spread),
           Cell(f"rf3-{spread}", RF, partitions, spread)]
    if partitions != 1:  # with one partition the spread pair is the same-node pair already
        out += [Cell("rf1-1p", 1, 1, "1p"), Cell("rf3-1p", RF, 1, "1p")]
    return out


def round_order(all_cells: list[Cell], rnd: int) -> list[Cell]:
    """Pairs in order; within a pair rf1 first in even rounds, rf3 first in odd ones."""
    out: list[Cell] = []
    for pair in dict.fromkeys(c.pair for c in all_cells):
        two = sorted((c for c in all_cells if c.pair == pair), key=lambda c: c.rf)
        out += two if rnd % 2 == 0 else two[::-1]
    return out


# ---------------------------------------------------------------------------------- cluster

class NodesProbe:
    """CPU of every node and of the whole machine over one phase (100 = one core)."""

    def __init__(self, pids: dict[int, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.cpu0 = {n: proc_cpu_s(p) for n, p in pids.items()}
        self.busy0 = machine_busy_s()

    def stop(self) -> tuple[float, dict[int, float], float]:
        """(wall s, CPU s per node, machine busy CPU s) since construction."""
        return (time.monotonic() - self.t0,
                {n: proc_cpu_s(p) - self.cpu0[n] for n, p in self.pids.items()},
                machine_busy_s() - self.busy0)


def node_cpu_fields(phase: str, cpu: tuple[float, dict[int, float], float],
                    leaders: list[int]) -> dict[str, Any]:
    """Per-node CPU % of a phase, and the split between the nodes leading some partition of the
    topic and the others (for RF 1 the others idle; for RF 3 they are its followers)."""
    wall, per_node, _ = cpu
    lead = set(leaders)
    return {f"node_cpu_{phase}_pct": [_pct(per_node[n], wall) for n in sorted(per_node)],
            f"leaders_cpu_{phase}_pct": _pct(sum(s for n, s in per_node.items() if n in lead),
                                             wall),
            f"others_cpu_{phase}_pct": _pct(sum(s for n, s in per_node.items()
                                                if n not in lead), wall)}


def cpu_per_mb(phase: str, cpu: tuple[float, dict[int, float], float], records: int,
               record_bytes: int) -> dict[str, Any]:
    """CPU milliseconds all nodes together spent per MB of record values moved in the phase:
    the cost of a MB, which CPU contention from other processes changes much less than the
    rate."""
    mb = records * record_bytes / 1e6
    spent = sum(cpu[1].values())
    return {f"nodes_cpu_ms_per_mb_{phase}": round(1000 * spent / mb, 2) if mb > 0 else None}


def _summed(cpu: tuple[float, dict[int, float], float]) -> tuple[float, float, float]:
    """kafka.py's probe triple (wall, broker CPU, machine busy) with every node as the broker."""
    return cpu[0], sum(cpu[1].values()), cpu[2]


def _admin_get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        return json.loads(resp.read())


def create_topic(port: int, name: str, partitions: int, rf: int,
                 timeout_s: float = 30.0) -> None:
    """CreateTopics v4 sent to the node on `port` itself (the AdminClient would send it to the
    controller, and an RF 1 topic lives on the node it was created through); RF > 1 topics
    get min.insync.replicas MIN_INSYNC. Raises CellError with the broker's answer."""
    config = [{"name": "min.insync.replicas", "value": str(MIN_INSYNC)}] if rf > 1 else []
    body = {"topics": [{"name": name, "num_partitions": partitions, "replication_factor": rf,
                        "assignments": [], "configs": config}],
            "timeout_ms": int(timeout_s * 1000), "validate_only": False}
    request = encode_request(RequestHeader(CREATE_TOPICS, CREATE_TOPICS_VERSION, 1,
                                           "bench-cluster-admin"), body)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s + 5) as sock:
            sock.sendall(request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            _, reply = decode_response(CREATE_TOPICS, CREATE_TOPICS_VERSION,
                                       _recv_exact(sock, size))
    except (OSError, KafkaCodecError, struct.error) as exc:
        raise CellError(f"create topic {name!r} (rf {rf}): {type(exc).__name__}: {exc}") from exc
    answer = reply["topics"][0]
    if answer["error_code"] != 0:
        raise CellError(f"create topic {name!r} (rf {rf}): error {answer['error_code']}: "
                        f"{answer.get('error_message')}")


class BenchCluster:
    """The 3 nodes, their Kafka addresses and pids, and topic placement as meta records it."""

    def __init__(self, work: Path, serve_args: tuple[str, ...], wait_s: float) -> None:
        self.work = work
        try:
            self.real = RealCluster(work, NODES, serve_args)
        except BaseException:
            if (work / "cluster.json").exists():
                self.stop()
            raise
        deadline = time.monotonic() + wait_s
        for node in self.real.nodes.values():
            why = kafka_ready(node["kafka"], deadline)
            if why:
                self.stop()
                raise CellError(f"node {node['id']} Kafka port: {why}; log: {self.log_tail(node)}")

    def bootstrap(self, node_id: int) -> str:
        return f"127.0.0.1:{self.real.nodes[node_id]['kafka']}"

    @property
    def pids(self) -> dict[int, int]:
        return {n: info["pid"] for n, info in sorted(self.real.nodes.items())}

    def wait_leaders(self, topic: str, timeout_s: float = 30.0) -> list[int]:
        """The topic's leaders once meta names one for every partition."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            shards = self.real.topics().get(topic)
            if shards and all(s[0] for s in shards):
                return [int(s[0]) for s in shards]
            time.sleep(0.05)  # polling meta over HTTP: there is no event to wait on
        raise CellError(f"{topic}: no leader for every partition within {timeout_s} s")

    def replication_stats(self) -> dict[str, int]:
        """`GET /replication` counters summed over the nodes (ISR shrinks and expansions,
        fetches served, records replicated, errors); {} when a node does not answer."""
        total: dict[str, int] = {}
        for node in self.real.nodes.values():
            try:
                stats = _admin_get(node["admin"], "/replication")["stats"]
            except (OSError, ValueError, KeyError):
                return {}
            for key in REPLICATION_COUNTERS:
                total[key] = total.get(key, 0) + int(stats.get(key, 0))
        return total

    def out_of_sync(self, topic: str) -> int:
        """Replicas missing from their partitions' in-sync sets, over the topic."""
        return sum(len(s[2]) - len(s[3]) for s in self.real.topics()[topic] if len(s) == 5)

    def wait_in_sync(self, topic: str, timeout_s: float) -> float:
        t0 = time.monotonic()
        try:
            self.real.wait_in_sync(topic, timeout_s)
        except AssertionError as exc:
            raise CellError(str(exc)[:400]) from exc
        return time.monotonic() - t0

    def alive(self) -> list[int]:
        return [n for n, pid in self.pids.items() if cluster_ctl._alive(pid)]

    def log_tail(self, node: dict[str, Any], lines: int = 3) -> str:
        try:
            text = Path(node["log"]).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])[-400:]

    def peak_rss_mb(self) -> dict[int, float | None]:
        out: dict[int, float | None] = {}
        for n, pid in self.pids.items():
            try:
                out[n] = proc_mem_mb(pid).get("VmHWM")
            except OSError:
                out[n] = None
        return out

    def stop(self) -> None:
        with open(os.devnull, "w") as quiet:
            cluster_ctl.down(self.work, out=quiet)


def place_round(bc: BenchCluster, rnd: int, chosen: list[Cell]) -> dict[str, Placed]:
    """Create the round's topics. The RF 3 1-partition topic comes first: its leader L is
    where the RF 1 1-partition topic is created (so both cells load the same node)."""
    placed: dict[str, Placed] = {}
    for cell in sorted(chosen, key=lambda c: (c.pair != "1p", -c.rf)):
        topic = f"bench-r{rnd}-{cell.name}"
        via = placed["rf3-1p"].leaders[0] if cell.name == "rf1-1p" else 1
        create_topic(bc.real.nodes[via]["kafka"], topic, cell.partitions, cell.rf)
        leaders = bc.wait_leaders(topic)
        if cell.rf == 1 and set(leaders) != {via}:
            raise CellError(f"{topic}: RF 1 topic created through node {via} is led by "
                            f"{leaders}")
        placed[cell.name] = Placed(topic, leaders[0] if cell.pair == "1p" else via, leaders)
    return placed


# ---------------------------------------------------------------------------------- phases

def produce_phase(bc: BenchCluster, bootstrap: str, topic: str, partitions: int,
                  cfg: argparse.Namespace, leaders: list[int]) -> tuple[dict[str, Any], list[int]]:
    records = cfg.mib * (1 << 20) // cfg.record_bytes
    jobs = [ProduceJob(bootstrap, topic, partitions, i, n, cfg.record_bytes, "all",
                       max_s=cfg.phase_max_s)
            for i, n in enumerate(split_counts(records, cfg.producers))]
    workers = Workers()
    try:
        for job in jobs:
            workers.spawn(f"producer-{job.index}", produce_worker, job)
        for job in jobs:
            workers.expect(f"producer-{job.index}", "ready", 60)
        t0 = time.monotonic() + 0.2
        workers.go(t0)
        _sleep_until(t0)
        probe = NodesProbe(bc.pids)
        stats: list[ProduceStats] = [
            workers.expect(f"producer-{job.index}", "done", cfg.phase_max_s + job.timeout_s + 30)
            for job in jobs]
        cpu = probe.stop()
    finally:
        workers.close()
    fields = produce_fields(stats, cfg.record_bytes, _summed(cpu))
    fields.update(node_cpu_fields("produce", cpu, leaders))
    fields.update(cpu_per_mb("produce", cpu, fields["delivered"], cfg.record_bytes))
    return fields, [s.sent for s in stats]


def consume_phase(bc: BenchCluster, bootstrap: str, topic: str, partitions: int,
                  cfg: argparse.Namespace, sent: list[int], leaders: list[int]) -> dict[str, Any]:
    job = ConsumeJob(bootstrap, topic, partitions, tuple(sent), idle_s=cfg.idle_s,
                     deadline_s=3 * cfg.phase_max_s)
    workers = Workers()
    try:
        workers.spawn("consumer", cluster_consume_worker, job)
        workers.expect("consumer", "ready", 60)
        t0 = time.monotonic() + 0.2
        workers.go(t0)
        _sleep_until(t0)
        probe = NodesProbe(bc.pids)
        stats: ConsumeStats = workers.expect("consumer", "done", job.deadline_s + 60)
        cpu = probe.stop()
    finally:
        workers.close()
    fields = consume_fields(stats, sum(sent), cfg.record_bytes, _summed(cpu))
    fields.update(node_cpu_fields("consume", cpu, leaders))
    fields.update(cpu_per_mb("consume", cpu, fields["consumed"], cfg.record_bytes))
    return fields


CONSUMER_OVERRIDES = {"fetch.queue.backoff.ms": 10}
"""librdkafka stops fetching a partition for `fetch.queue.backoff.ms` (default 1000) once its
pre-fetch queue is full (`queued.max.messages.kbytes`, 64 MiB). The Python consume loop drains
about 200-300 MB/s; an RF 3 topic whose partitions are led by 3 nodes is fetched by 3 broker
threads in parallel and fills that queue, and the 1 s backoff then stalls the whole phase (seen
as ~0.9 s extra in 3 rounds of 5). RF 1 topics, fetched from one node, never fill it. A 10 ms
backoff measures what the nodes deliver instead of that client pause; every cell uses it."""


def cluster_consume_worker(conn: Any, job: ConsumeJob) -> None:
    """Process entry: the load generator's `consume_worker`, with CONSUMER_OVERRIDES on top of
    its consumer configuration (patched in this worker process only)."""
    base = kafka_loadgen.consumer_config

    def tuned(j: ConsumeJob) -> dict[str, Any]:
        return {**base(j), **CONSUMER_OVERRIDES}

    kafka_loadgen.consumer_config = tuned  # type: ignore[assignment]
    kafka_loadgen.consume_worker(conn, job)


def ack_latency(bootstrap: str, topic: str, partitions: int, count: int, record_bytes: int,
                timeout_s: float = 10.0) -> dict[str, Any]:
    """`count` acks=all records one at a time (linger.ms 0): ms from produce() to the delivery
    report, p50 / p99 / max; failures counted."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "enable.idempotence": False, "message.timeout.ms": int(timeout_s * 1000),
                         "client.id": "bench-cluster-latency"})
    filler = filler_for(record_bytes)
    samples: list[float] = []
    failed = 0
    got: list[tuple[Any, float]] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        got.append((err, time.perf_counter()))

    try:
        _warm_up(producer, topic, partitions, 30.0)
        for seq in range(count):
            got.clear()
            t0 = time.perf_counter()
            producer.produce(topic, record_value(LATENCY_INDEX, seq, filler),
                             partition=seq % partitions, on_delivery=on_delivery)
            producer.flush(timeout_s)
            if not got or got[0][0] is not None:
                failed += 1
                continue
            samples.append(1000 * (got[0][1] - t0))
    finally:
        del producer
    if not samples:
        return {"ack_failed": failed}
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(0.99 * len(samples)))]
    return {"ack_p50_ms": round(statistics.median(samples), 2), "ack_p99_ms": round(p99, 2),
            "ack_max_ms": round(samples[-1], 2), "ack_samples": len(samples),
            "ack_failed": failed}


def other_load(row: dict[str, Any]) -> dict[str, Any]:
    """Machine CPU % not spent by the nodes or the load generator during each phase: other
    processes on the box (and kernel work such as loopback networking and page-cache writeback),
    so a reader can tell a quiet run from a contended one."""
    out: dict[str, Any] = {}
    for phase in ("produce", "consume"):
        gen = row.get(f"gen_{phase}_cpu_pct")
        gen_total = sum(g or 0 for g in gen) if isinstance(gen, list) else (gen or 0)
        machine, nodes = row.get(f"machine_cpu_{phase}_pct"), row.get(f"broker_cpu_{phase}_pct")
        out[f"other_cpu_{phase}_pct"] = (round(machine - nodes - gen_total, 1)
                                         if machine is not None and nodes is not None else None)
    return out


def verified(row: dict[str, Any]) -> bool:
    """Every acked record consumed once: nothing lost, duplicated, unknown, unread or failed."""
    return (row.get("lost") == 0 and row.get("unread") == 0 and row.get("duplicates") == 0
            and row.get("unknown_values") == 0 and row.get("produce_failed") == 0
            and row.get("consumed") == row.get("delivered") and row.get("delivered", 0) > 0)


def run_cell(bc: BenchCluster, cell: Cell, placed: Placed, cfg: argparse.Namespace
             ) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": cell.name, "broker": BROKER, "topic": placed.topic,
                           "bootstrap_node": str(placed.via),  # a string: rounds join
                           "leaders": ",".join(map(str, placed.leaders)),
                           "load_avg_1m": round(os.getloadavg()[0], 2)}
    bootstrap = bc.bootstrap(placed.via)
    try:
        if cell.rf > 1:
            row["in_sync_before_s"] = round(bc.wait_in_sync(placed.topic, cfg.settle_s), 3)
        before = bc.replication_stats()
        fields, sent = produce_phase(bc, bootstrap, placed.topic, cell.partitions, cfg,
                                     placed.leaders)
        row.update(fields)
        after = bc.replication_stats()
        if before and after:
            row.update({f"{k}_produce": after[k] - before[k] for k in REPLICATION_COUNTERS})
        if cell.rf > 1:
            row["out_of_sync_after_produce"] = bc.out_of_sync(placed.topic)
        row.update(consume_phase(bc, bootstrap, placed.topic, cell.partitions, cfg, sent,
                                 placed.leaders))
        row.update(ack_latency(bootstrap, placed.topic, cell.partitions, cfg.latency_records,
                               cfg.record_bytes))
        if cell.rf > 1:
            row["in_sync_after_s"] = round(bc.wait_in_sync(placed.topic, cfg.settle_s), 3)
        row["verified"] = verified(row)
        row.update(other_load(row))
    except (CellError, OSError) as exc:
        row["error"] = str(exc)
    dead = [n for n in bc.pids if n not in bc.alive()]
    if dead:
        row["error"] = (row.get("error", "") + f" node(s) {dead} died").strip()
    return row


# ---------------------------------------------------------------------------------- the run

def pair_ratios(rows: list[dict[str, Any]], chosen: list[Cell], repeat: int
                ) -> list[dict[str, Any]]:
    """Per pair: each round's rf3/rf1 ratio of produce and consume MB/s (and of the nodes' CPU
    per MB produced), and their medians."""
    out: list[dict[str, Any]] = []
    by = {(r["round"], r["scenario"]): r for r in rows if "error" not in r}
    for pair in dict.fromkeys(c.pair for c in chosen):
        one, three = (next(c.name for c in chosen if c.pair == pair and c.rf == rf)
                      for rf in (1, RF))
        entry: dict[str, Any] = {"pair": pair, "rf1": one, "rf3": three}
        for key in ("produce_mb_s", "consume_mb_s", "nodes_cpu_ms_per_mb_produce"):
            rounds = [ratio(by[(n, three)].get(key), by[(n, one)].get(key))
                      if (n, one) in by and (n, three) in by else None for n in range(repeat)]
            present = [r for r in rounds if r is not None]
            entry[f"{key}_ratio_rounds"] = rounds
            entry[f"{key}_ratio"] = (float(f"{statistics.median_low(present):.3g}")
                                     if present else None)
        entry["leaders_rf3"] = [by[(n, three)]["leaders"] if (n, three) in by else None
                                for n in range(repeat)]
        out.append(entry)
    return out


def targets(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in pairs:
        for key, goal, what in (("produce_mb_s", PRODUCE_TARGET, "produce"),
                                ("consume_mb_s", CONSUME_TARGET, "consume")):
            r = p[f"{key}_ratio"]
            out.append({"pair": p["pair"], "metric": key, "ratio": r, "goal": goal,
                        "what": f"{what} MB/s {p['rf3']}/{p['rf1']}",
                        "met": None if r is None else r >= goal})
    return out


def run(cfg: argparse.Namespace, command: str) -> dict[str, Any]:
    chosen = cells(cfg.partitions)
    rows: list[dict[str, Any]] = []
    serve_args = ("--storage", "file", *(("--fsync", cfg.fsync) if cfg.fsync else ()))
    nodes_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="twinmq-bench-cluster-", dir=cfg.tmp) as tmp_s:
        tmp = Path(tmp_s)
        t_start = time.monotonic()
        bc = BenchCluster(tmp / "cluster", serve_args, cfg.wait_s)
        try:
            print(f"cluster up in {time.monotonic() - t_start:.1f} s: pids {bc.pids}",
                  flush=True)
            for rnd in range(cfg.repeat):
                try:
                    placed = place_round(bc, rnd, chosen)
                except CellError as exc:
                    for cell in chosen:
                        rows.append({"scenario": cell.name, "broker": BROKER, "round": rnd,
                                     "error": f"topics of round {rnd}: {exc}"})
                    print(f"round {rnd}: {exc}", flush=True)
                    continue
                for cell in round_order(chosen, rnd):
                    row = run_cell(bc, cell, placed[cell.name], cfg)
                    row["round"] = rnd
                    rows.append(row)
                    print(line(row), flush=True)
                if len(bc.alive()) < NODES:
                    print("a node died: the run stops here", flush=True)
                    break
            nodes_info = {"peak_rss_mb": bc.peak_rss_mb(), "alive_at_end": bc.alive(),
                          "log_tails": {n["id"]: bc.log_tail(n)
                                        for n in bc.real.nodes.values()}}
        finally:
            bc.stop()
        data_fs = _fs_type(tmp)
    return result_dict(cfg, command, chosen, rows, nodes_info, data_fs)


def line(row: dict[str, Any]) -> str:
    keys = ("leaders", "produce_mb_s", "consume_mb_s", "ack_p50_ms", "ack_p99_ms", "verified",
            "node_cpu_produce_pct", "gen_produce_cpu_pct", "machine_cpu_produce_pct",
            "in_sync_after_s", "error")
    return f"r{row['round']} {row['scenario']:8} " + " ".join(
        f"{k}={row[k]}" for k in keys if k in row)


def result_dict(cfg: argparse.Namespace, command: str, chosen: list[Cell],
                rows: list[dict[str, Any]], nodes_info: dict[str, Any], data_fs: str
                ) -> dict[str, Any]:
    import confluent_kafka

    summary = summarize(rows)
    pairs = pair_ratios(rows, chosen, cfg.repeat)
    mem_total = next((int(x.split()[1]) // 1024 for x in
                      Path("/proc/meminfo").read_text().splitlines()
                      if x.startswith("MemTotal:")), None)
    return {
        "command": command,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "mem_total_mib": mem_total,
                    "load_avg_1m": round(os.getloadavg()[0], 2), "data_dir_fs": data_fs},
        "versions": {"twinmq": f"git {_git_rev()}",
                     "confluent_kafka": confluent_kafka.__version__,
                     "librdkafka": confluent_kafka.libversion()[0]},
        "config": {"nodes": NODES, "storage": "file",
                   "fsync": cfg.fsync or "node default (group)", "mib": cfg.mib,
                   "record_bytes": cfg.record_bytes,
                   "records": cfg.mib * (1 << 20) // cfg.record_bytes,
                   "partitions": cfg.partitions, "producers": cfg.producers, "acks": "all",
                   "rf": RF, "min_insync_replicas": MIN_INSYNC, "linger_ms": 5,
                   "consumer_overrides": CONSUMER_OVERRIDES,
                   "latency_records": cfg.latency_records, "phase_max_s": cfg.phase_max_s,
                   "idle_s": cfg.idle_s, "repeat": cfg.repeat},
        "cells": [asdict(c) for c in chosen], "nodes": nodes_info, "rows": rows,
        "summary": summary, "pairs": pairs, "targets": targets(pairs),
    }


# ---------------------------------------------------------------------------------- report

METRICS = [
    ("leaders", "partition leaders (node ids; / between rounds)"),
    ("bootstrap_node", "clients bootstrap on node (/ between rounds)"),
    ("produce_mb_s", "produce MB/s"), ("produce_records_s", "produce records/s"),
    ("consume_mb_s", "consume MB/s"), ("consume_records_s", "consume records/s"),
    ("ack_p50_ms", "ack latency p50 ms (idle, one at a time)"),
    ("ack_p99_ms", "ack latency p99 ms (idle, one at a time)"),
    ("ack_max_ms", "ack latency max ms"),
    ("delivered", "records delivered (acked)"), ("produce_failed", "delivery failures"),
    ("consumed", "records consumed (distinct)"), ("lost", "records lost"),
    ("duplicates", "duplicates"), ("unknown_values", "unknown values"),
    ("verified", "verified (all rounds)"), ("capped", "producer time cap hit"),
    ("node_cpu_produce_pct", "CPU % per node 1, 2, 3 (produce)"),
    ("leaders_cpu_produce_pct", "CPU % of the leading node(s) (produce)"),
    ("others_cpu_produce_pct", "CPU % of the other nodes (produce)"),
    ("node_cpu_consume_pct", "CPU % per node 1, 2, 3 (consume)"),
    ("gen_produce_cpu_pct", "generator CPU % (per producer)"),
    ("gen_consume_cpu_pct", "generator CPU % (consumer)"),
    ("machine_cpu_produce_pct", "machine CPU %, all processes (produce)"),
    ("machine_cpu_consume_pct", "machine CPU %, all processes (consume)"),
    ("other_cpu_produce_pct", "machine CPU % not used by nodes or generator (produce)"),
    ("other_cpu_consume_pct", "machine CPU % not used by nodes or generator (consume)"),
    ("nodes_cpu_ms_per_mb_produce", "CPU ms of all nodes per MB produced"),
    ("nodes_cpu_ms_per_mb_consume", "CPU ms of all nodes per MB consumed"),
    ("isr_shrinks_produce", "in-sync set shrinks during produce (all nodes)"),
    ("isr_expands_produce", "in-sync set expansions during produce"),
    ("fetches_served_produce", "follower fetches served during produce"),
    ("out_of_sync_after_produce", "replicas out of sync right after produce"),
    ("in_sync_after_s", "s waited after the latency probe until every replica was in sync"),
    ("load_avg_1m", "load average (1 min) before the cell"),
    ("produce_mb_s_rounds", "produce MB/s, each round"),
    ("consume_mb_s_rounds", "consume MB/s, each round"),
]

READING = [
    "- Ratios are rf3/rf1 per round (the two cells of a round ran back to back), then the "
    "median over the rounds; the cell tables show medians over the rounds (worst round for "
    "loss, `verified` only if every round was).",
    "- `verified`: the consumer read every acknowledged record exactly once (ids carry "
    "producer and sequence), and no delivery failed.",
    "- CPU %: 100 = one core; the machine has 2 cores for the 3 nodes, the load generator and "
    "everything else, so replication's follower work competes with the leader and the "
    "producer for the same cores (on real hardware each node has its own). Leading/other "
    "nodes: the nodes that lead a partition of the cell's topic, and the rest (idle for RF 1, "
    "the followers for RF 3 1p).",
    "- Ack latency: a separate probe after the consumer, one record in flight, linger.ms 0: "
    "the round trip of an idle cluster, not the latency under the throughput load.",
    "- Machine CPU % not used by the nodes or the generator: other processes on the box plus "
    "kernel work (loopback networking, writeback); tens of % mean the run shared the 2 cores "
    "with other work, which slows RF 3 (4 busy processes that wait on each other) more than "
    "RF 1.",
    "- CPU ms per MB: every node's CPU over the phase divided by the MB moved; it is the cost "
    "of replication and varies far less with other load on the machine than MB/s does.",
    "- Duplicates with in-sync set shrinks: when the leader drops followers that have not "
    "caught up for `cluster.replica_lag_ms` below min.insync.replicas, acks=all produce is "
    "refused (NOT_ENOUGH_REPLICAS) or fails after the append (NOT_ENOUGH_REPLICAS_AFTER_APPEND); "
    "the load generator's producer is not idempotent (librdkafka's default, as in "
    "bench-kafka), so it retries and the retried batch is in the log twice: at-least-once, as "
    "Kafka promises a non-idempotent producer, but the cell is not `verified`.",
]


def _cell_value(summary: list[dict[str, Any]], name: str, key: str) -> str:
    for row in summary:
        if row["scenario"] == name:
            if "error" in row:
                return "error"
            got = row.get(key, "")
            return ", ".join(map(str, got)) if isinstance(got, list) else str(got)
    return ""


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    names = [c["name"] for c in result["cells"]]
    summary = result["summary"]
    out = ["# Replication benchmark: RF 3 acks=all vs RF 1 on a 3-node cluster", "",
           f"Command: `{result['command']}`", "", *provenance_md(result),
           f"Machine: {result['machine']}", "", f"Versions: {result['versions']}", "",
           f"Cluster: {cfg['nodes']} `twinmq serve` nodes on loopback, storage {cfg['storage']}, "
           f"fsync {cfg['fsync']}. Workload per cell: {cfg['mib']} MiB of "
           f"{cfg['record_bytes']} B records ({cfg['records']} records), acks=all, "
           f"{cfg['producers']} producer process(es) (linger.ms {cfg['linger_ms']}), then 1 "
           f"consumer process (librdkafka defaults plus {cfg.get('consumer_overrides')}: see "
           f"CONSUMER_OVERRIDES in scenarios/bench/cluster.py); RF 3 topics with "
           f"min.insync.replicas {cfg['min_insync_replicas']}."
           f" {cfg['repeat']} rounds, cells interleaved.", "",
           "## Result", "",
           "| pair | leaders of the RF 3 topic | RF 1 produce MB/s | RF 3 produce MB/s | "
           "produce rf3/rf1 | RF 1 consume MB/s | RF 3 consume MB/s | consume rf3/rf1 | "
           "ack p50/p99 ms RF 1 | RF 3 | nodes' CPU ms per MB produced RF 1 / RF 3 | "
           "verified |",
           "|---" * 12 + "|"]
    for p in result["pairs"]:
        one, three = p["rf1"], p["rf3"]
        label = ("1 partition, same leader node" if p["pair"] == "1p"
                 else f"{p['pair'].removesuffix('p')} partitions, RF 1 on node 1 / RF 3 spread")

        def lat(name: str) -> str:
            return (f"{_cell_value(summary, name, 'ack_p50_ms')}/"
                    f"{_cell_value(summary, name, 'ack_p99_ms')}")

        ok = all(_cell_value(summary, n, "verified") == "True" for n in (one, three))
        dups = [_cell_value(summary, n, "duplicates") for n in (one, three)]
        check = "yes" if ok else f"NO (duplicates {dups[0]} / {dups[1]}, worst round)"
        out.append(f"| {label} | {' / '.join(map(str, p['leaders_rf3']))} | "
                   f"{_cell_value(summary, one, 'produce_mb_s')} | "
                   f"{_cell_value(summary, three, 'produce_mb_s')} | "
                   f"**{p['produce_mb_s_ratio']}** | "
                   f"{_cell_value(summary, one, 'consume_mb_s')} | "
                   f"{_cell_value(summary, three, 'consume_mb_s')} | "
                   f"**{p['consume_mb_s_ratio']}** | {lat(one)} | {lat(three)} | "
                   f"{_cell_value(summary, one, 'nodes_cpu_ms_per_mb_produce')} / "
                   f"{_cell_value(summary, three, 'nodes_cpu_ms_per_mb_produce')} | {check} |")
    out += ["", "Per-round rf3/rf1 ratios (produce MB/s; consume MB/s; nodes' CPU per MB "
            "produced):", ""]
    out += [f"- {p['pair']}: {p['produce_mb_s_ratio_rounds']}; {p['consume_mb_s_ratio_rounds']}; "
            f"{p.get('nodes_cpu_ms_per_mb_produce_ratio_rounds')}" for p in result["pairs"]]
    out += ["", f"## Targets (produce >= {PRODUCE_TARGET}x, consume >= {CONSUME_TARGET}x "
            "\"unaffected\")", ""]
    for t in result["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        out.append(f"- {t['what']}: {t['ratio']} (goal >= {t['goal']}x): **{verdict}**")
    out += ["", "## How to read", "", *READING, "", "## Cells", "",
            "| metric | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    for key, label in METRICS:
        out.append(f"| {label} | " + " | ".join(_cell_value(summary, n, key) for n in names)
                   + " |")
    errors = [f"*{r['scenario']}: {e}*" for r in summary for e in
              ([r["error"]] if "error" in r else r.get("round_errors", []))]
    if errors:
        out += ["", *errors]
    nodes = result.get("nodes") or {}
    if nodes:
        out += ["", f"Node peak RSS MB at the end: {nodes.get('peak_rss_mb')}; alive at the "
                f"end: {nodes.get('alive_at_end')}."]
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scenarios.bench.cluster", description=__doc__.splitlines()[0],
        epilog="Default run: 4 cells x 5 rounds on one cluster, about 3 minutes on 2 cores.")
    parser.add_argument("--mib", type=int, default=128,
                        help="MiB of record values produced per cell (default 128: an RF 3 "
                             "produce phase then outlasts cluster.replica_lag_ms)")
    parser.add_argument("--partitions", type=int, default=3,
                        help="partitions of the spread pair's topics (default 3: one led by "
                             "each node)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--producers", type=int, default=1, help="producer processes (1)")
    parser.add_argument("--record-bytes", type=int, default=1024, help="value size (1024)")
    parser.add_argument("--latency-records", type=int, default=200,
                        help="records of the one-at-a-time latency probe per cell (200)")
    parser.add_argument("--phase-max-s", type=float, default=30.0,
                        help="producers stop sending after this long; the consumer gets 3x")
    parser.add_argument("--idle-s", type=float, default=10.0,
                        help="the consumer gives up after this long without a new record")
    parser.add_argument("--settle-s", type=float, default=30.0,
                        help="how long an RF 3 topic may take to be fully in sync")
    parser.add_argument("--wait-s", type=float, default=30.0,
                        help="seconds the nodes may take to answer on their Kafka ports")
    parser.add_argument("--fsync", default=None, choices=("always", "group", "never"),
                        help="--fsync of every node (default: the node's, group)")
    parser.add_argument("--tmp", default=None, help="directory for the cluster's data and logs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-cluster",
                        help="report path without suffix (.json and .md are written)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run for the test suite: 2 MiB, 1 round, 20 latency records, "
                             "short timeouts (overrides those options)")
    cfg = parser.parse_args(argv)
    if cfg.smoke:
        cfg.mib, cfg.repeat, cfg.latency_records = 2, 1, 20
        cfg.idle_s, cfg.phase_max_s = 5.0, 10.0
    if (min(cfg.mib, cfg.partitions, cfg.repeat, cfg.producers, cfg.latency_records) < 1
            or cfg.record_bytes < 12):
        parser.error("--mib, --partitions, --repeat, --producers and --latency-records must "
                     "be >= 1, --record-bytes >= 12")
    return cfg


def main(argv: list[str] | None = None) -> int:
    from scenarios.bench.kafka import run_and_write

    return run_and_write("scenarios.bench.cluster", argv, parse_args, run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
