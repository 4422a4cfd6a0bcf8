"""Chaos drills against a real 3-node cluster, each run checked from its client history.

    python -m scenarios.chaos.drills [--drill NAME ...] [--runs 50] [--out reports/] [--resume]

A drill reuses one cluster (`twinmq cluster`'s launcher) for all its runs. A run creates a fresh
topic (3 partitions, replication factor 3, min.insync.replicas 2), starts an idempotent acks=all
producer (confluent-kafka, every broker as bootstrap) sending distinct values round-robin over
the partitions, and a consumer polling every partition from the beginning; it injects the
drill's fault while they run, heals, lets the cluster settle (every in-sync set full again),
reads every partition back from its leader, checks the history (`scenarios/chaos/history.py`:
lost, duplicate, inconsistent offsets, skips) and deletes the topic (so every run meets the same
cluster). Drills:

- `kill-partition-leader`: SIGKILL the leader of a random partition mid-stream; restart it on
  its data. Every drill measures, on that partition, the time from the fault to the first
  acknowledgement of a record sent after the fault (the partition failover when its leader
  was hit; near zero when the fault did not touch it).
- `kill-meta-leader`: SIGKILL the meta Raft leader (the controller) mid-stream; restart.
- `stop-leader`: SIGSTOP the leader of a random partition for longer than the session timeout, then
  SIGCONT: it must come back as a follower, with no write acknowledged that it could not
  replicate.
- `minority-partition`: cut the leader of a random partition off from both other nodes (every
  inter-node link, both ways; clients still reach it) for 2 s, then heal: the minority side
  must acknowledge no acks=all write (none may be lost), the majority side elects and goes on.
- `power-loss-fsync-never`: the nodes run with fsync "never" over the power-loss layer
  (`--hold-unsynced`, real/node/holdfs.py: unsynced writes never reach the OS, so a SIGKILL
  loses them as a power cut would); a partition leader loses power mid-stream and restarts.
  acks=all with RF 3 promises survival of any single node, fsync or not: nothing acknowledged
  may be lost.
- `rolling-restart`: SIGTERM and restart every node in turn while the clients run.

Writes reports/chaos.json (per drill: runs, anomalies, failover times) and reports/chaos.md after
every drill (`--resume` keeps the drills a crashed run finished);
each run's history under `--histories DIR` if given, and with it, after a drill with an anomaly
or a failover slower than SLOW_FAILOVER_MS, its nodes' logs (`DRILL-nN.log`, each line stamped
with the wall time as librdkafka stamps its own) and, per run, librdkafka's log of the idempotent
producer's state (`TOPIC.eos.log`: PID, epoch bumps, drains); `TWINMQ_CHAOS_CLIENT_DEBUG=DIR`
writes a full protocol log of both clients there instead. Exit status 1 if any run found an anomaly.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from real.node import cluster
from scenarios.chaos.history import History, Read, Verdict, check_kafka

DRILLS = ("kill-partition-leader", "kill-meta-leader", "stop-leader", "minority-partition",
          "power-loss-fsync-never", "rolling-restart")
SERVE_ARGS = {"power-loss-fsync-never": ("--fsync", "never", "--hold-unsynced", "true")}
"""Drills that need the nodes started differently."""
PARTITIONS = 3
SETTLE_S = 30.0
SLOW_FAILOVER_MS = 3_000.0
"""A failover this slow keeps the drill's node logs beside its histories (as an anomaly does)."""
SEND_INTERVAL_S = 0.002


CLIENT_DEBUG_ENV = "TWINMQ_CHAOS_CLIENT_DEBUG"
"""A directory: the producer and the consumer of each run log librdkafka's debug output (the
producer's eos, msg, protocol, broker, topic; the consumer's consumer, fetch, topic, protocol)
to DIR/<topic>.rdkafka (for chasing an anomaly; slows the clients down)."""


def _get(port: int, path: str, host: str = "127.0.0.1") -> Any:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as resp:
        return json.loads(resp.read())


class RealCluster:
    def __init__(self, work: Path, nodes: int = 3, serve_args: tuple[str, ...] = (),
                 distinct_hosts: bool = False) -> None:
        self.work = work
        self.nodes = {n["id"]: n for n in cluster.start(nodes, work, serve_args,
                                                         distinct_hosts=distinct_hosts)}
        self.down: set[int] = set()
        self.wait_settled()

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{n['host']}:{n['kafka']}" for n in self.nodes.values())

    def live(self) -> list[dict[str, Any]]:
        return [n for i, n in sorted(self.nodes.items()) if i not in self.down]

    def wait_settled(self, timeout: float = SETTLE_S) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = cluster.settled(self.live())
            if leader:
                return leader
            time.sleep(0.05)
        raise AssertionError(f"cluster in {self.work} did not settle in {timeout}s")

    def topics(self) -> dict[str, list[list[Any]]]:
        for node in self.live():
            try:
                return {t["name"]: t["shards"]
                        for t in _get(node["admin"], "/meta/topics", node["host"])}
            except OSError:
                continue
        raise AssertionError("no node answers /meta/topics")

    def meta_leader(self) -> int:
        return self.wait_settled()

    def leader_of(self, topic: str, partition: int) -> int:
        return int(self.topics()[topic][partition][0])

    def wait_in_sync(self, topic: str, timeout: float = SETTLE_S) -> None:
        """Every partition of `topic` led by a live node with its whole replica set in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shards = self.topics().get(topic)
            if shards and all(s[0] and s[0] not in self.down and len(s) == 5
                              and sorted(s[3]) == sorted(s[2]) for s in shards):
                return
            time.sleep(0.05)
        raise AssertionError(f"{topic}: in-sync sets not full in {timeout}s: {self.topics()}")

    def signal(self, nid: int, sig: signal.Signals) -> None:
        cluster.signal_node(self.work, nid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(self.nodes[nid]["pid"], 0)
                except ProcessLookupError:
                    break
                try:
                    os.waitpid(self.nodes[nid]["pid"], os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.01)
            self.down.add(nid)

    def restart(self, nid: int) -> None:
        self.nodes[nid]["pid"] = cluster.restart(self.work, nid)
        self.down.discard(nid)

    def stop(self) -> None:
        with open(os.devnull, "w") as quiet:
            cluster.down(self.work, out=quiet)


class Clients:
    """An idempotent acks=all producer and a polling consumer, both recording to `history`."""

    def __init__(self, c: RealCluster, topic: str, history: History,
                 eos_log: Path | None = None) -> None:
        import confluent_kafka as ck

        self.ck = ck
        self.topic = topic
        self.history = history
        debug: dict[str, Any] = {}
        self._log: tuple[logging.Logger, logging.Handler] | None = None
        where = os.environ.get(CLIENT_DEBUG_ENV)
        if where or eos_log is not None:  # librdkafka's own log of the clients, to a file
            logger = logging.getLogger(f"chaos.{topic}")
            logger.setLevel(logging.DEBUG)
            target = Path(where) / f"{topic}.rdkafka" if where else eos_log
            assert target is not None
            handler = logging.FileHandler(target)
            handler.setFormatter(logging.Formatter("%(created).3f %(message)s"))
            logger.addHandler(handler)
            self._log = (logger, handler)
            # full: the producer's and the consumer's protocol; light (histories kept): only
            # the idempotent producer's state (PID, epoch bumps, drains), a few kB per run
            debug = {"debug": "eos,msg,protocol,broker,topic" if where else "eos",
                     "log_level": 7, "logger": logger}
        self.producer = ck.Producer({
            "bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 1, "message.timeout.ms": 15_000, "retry.backoff.ms": 20,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
            "topic.metadata.refresh.interval.ms": 500, "log_level": 0, **debug})
        self.consumer = ck.Consumer({
            "bootstrap.servers": c.bootstrap, "group.id": "chaos-unused",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
            "topic.metadata.refresh.interval.ms": 500, "log_level": 0,
            **({**debug, "debug": "consumer,fetch,topic,protocol"} if where else {})})
        # From offset 0 (the topic is new), not OFFSET_BEGINNING: resolving BEGINNING sends a
        # ListOffsets, and librdkafka 2.16 keeps one that found its broker down in a retry
        # queue; sent once the broker is back (after a leader change), its answer (FENCED_LEADER_
        # EPOCH, as Kafka gives) put the partition, already being fetched, back to resolving
        # BEGINNING: the consumer read the partition again from 0 (5 rolling-restart runs in 50
        # on d2efda5, each partition 0, whose leader restarts first; the rdkafka debug log shows
        # it). The brokers' answers were right; this keeps the check on the brokers.
        self.consumer.assign([ck.TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.polls: list[tuple[int, int]] = []
        self.acked: dict[int, list[tuple[float, float]]] = {p: [] for p in range(PARTITIONS)}
        """Per partition: (send time, ack time) of every acknowledged record."""
        self._stop = threading.Event()
        self._seq = 0
        self._threads = [threading.Thread(target=self._produce, daemon=True),
                         threading.Thread(target=self._consume, daemon=True)]
        for t in self._threads:
            t.start()

    def _produce(self) -> None:
        while not self._stop.is_set():
            seq = self._seq
            self._seq += 1
            p = seq % PARTITIONS
            value = f"{self.topic}-{seq}"
            self.history.add("producer", "invoke", "send", {"value": value, "partition": p})
            self.producer.produce(self.topic, value=value.encode(), partition=p,
                                  on_delivery=self._delivered(value, p, time.monotonic()))
            self.producer.poll(0)
            time.sleep(SEND_INTERVAL_S)
        self.producer.flush(30)

    def _delivered(self, value: str, p: int, sent: float) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                self.history.add("producer", "ok", "send",
                                 {"value": value, "partition": p, "offset": msg.offset()})
                self.acked[p].append((sent, time.monotonic()))
            else:
                certain = not err.retriable() and err.code() != self.ck.KafkaError._MSG_TIMED_OUT
                self.history.add("producer", "fail" if certain else "info", "send",
                                 {"value": value, "partition": p, "error": str(err)})
        return report

    def _consume(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            self.polls.append((msg.partition(), msg.offset()))

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        self.consumer.close()
        # Destroy the producer now: its delivery callbacks reference this object, so without
        # this it lives until a garbage collection, refreshing its metadata every 500 ms, and
        # that Metadata request re-creates the run's topic after the run deleted it (topics
        # piled up over a drill, and with them the nodes' load and the failover times).
        self.producer = None
        self._threads = []
        gc.collect()
        if self._log is not None:
            logger, handler = self._log
            logger.removeHandler(handler)
            handler.close()


def read_all(c: RealCluster, topic: str) -> Read:
    """Every record of every partition, from the beginning to the high watermark."""
    import confluent_kafka as ck

    consumer = ck.Consumer({"bootstrap.servers": c.bootstrap, "group.id": "chaos-read",
                            "enable.auto.commit": False, "log_level": 0})
    try:
        ends = {p: consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)
                         for p in range(PARTITIONS)])
        out: Read = []
        seen = {p: -1 for p in range(PARTITIONS)}
        deadline = time.monotonic() + 30
        while any(seen[p] < ends[p] - 1 for p in ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: read stuck at {seen} of {ends}")
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            out.append((msg.partition(), msg.offset(), bytes(msg.value())))
            seen[msg.partition()] = msg.offset()
        return out
    finally:
        consumer.close()


def create_topic(c: RealCluster, topic: str) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": c.bootstrap, "log_level": 0})
    deadline = time.monotonic() + SETTLE_S
    while True:  # meta may be between leaders (an election under load): ask again
        fut = admin.create_topics([NewTopic(topic, PARTITIONS, 3,
                                            config={"min.insync.replicas": "2"})])[topic]
        try:
            fut.result(20)
            break
        except TimeoutError:  # no answer in 20 s (a node restarting under load): ask again
            if time.monotonic() > deadline:
                raise
            continue
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                break
            if not err.retriable() and err.code() != KafkaError.REQUEST_TIMED_OUT \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    c.wait_in_sync(topic)


def delete_topic(c: RealCluster, topic: str) -> None:
    """Delete a run's topic once it was read back, and wait until meta has dropped it (a node
    slows down with every replicated partition it holds: without this, late runs of a drill
    would measure a cluster holding fifty more topics than the first run's)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": c.bootstrap, "log_level": 0})
    deadline = time.monotonic() + SETTLE_S
    while topic in c.topics():
        try:
            admin.delete_topics([topic])[topic].result(20)
        except KafkaException as exc:  # between meta leaders, or already gone: look again
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} not deleted in {SETTLE_S} s: {exc}") from exc
        time.sleep(0.05)  # meta applies the deletion on every node; nothing to wait on here


def run_once(c: RealCluster, drill: str, run: int, rng: Any,
             histories: Path | None) -> dict[str, Any]:
    topic = f"{drill}-{run}"
    create_topic(c, topic)
    history = History()
    clients = Clients(c, topic, history, eos_log=None if histories is None else
                      histories / f"{topic}.eos.log")
    time.sleep(0.3 + rng.random() * 0.2)
    part = rng.randrange(PARTITIONS)  # the partition whose leader a partition drill hits
    fault_at = time.monotonic()
    victim = 0
    if drill in ("kill-partition-leader", "power-loss-fsync-never"):
        victim = c.leader_of(topic, part)
        history.add("nemesis", "info", "kill", victim)
        c.signal(victim, signal.SIGKILL)
        time.sleep(1.5)
        c.restart(victim)
    elif drill == "kill-meta-leader":
        victim = c.meta_leader()
        history.add("nemesis", "info", "kill", victim)
        c.signal(victim, signal.SIGKILL)
        time.sleep(1.5)
        c.restart(victim)
    elif drill == "stop-leader":
        victim = c.leader_of(topic, part)
        history.add("nemesis", "info", "stop", victim)
        c.signal(victim, signal.SIGSTOP)
        time.sleep(1.5)
        c.signal(victim, signal.SIGCONT)
        history.add("nemesis", "info", "cont", victim)
    elif drill == "minority-partition":
        victim = c.leader_of(topic, part)
        others = [n for n in sorted(c.nodes) if n != victim]
        history.add("nemesis", "info", "partition", [[victim], others])
        missed = cluster.partition(c.work, [victim], others)
        assert not missed, missed
        time.sleep(2.0)
        assert not cluster.heal(c.work)
        history.add("nemesis", "info", "heal", None)
    elif drill == "rolling-restart":
        for nid in sorted(c.nodes):
            history.add("nemesis", "info", "restart", nid)
            c.signal(nid, signal.SIGTERM)
            c.restart(nid)
            c.wait_settled()
            c.wait_in_sync(topic)
    else:
        raise ValueError(f"unknown drill {drill!r}")
    c.wait_settled()
    c.wait_in_sync(topic)
    time.sleep(0.5)
    clients.close()
    c.wait_in_sync(topic)
    reads = [read_all(c, topic)]
    delete_topic(c, topic)  # each run starts from the same cluster state, not one topic more
    verdict: Verdict = check_kafka(history, reads, {"consumer": clients.polls})
    after = [acked for sent, acked in clients.acked[part] if sent > fault_at]
    failover_ms = (min(after) - fault_at) * 1000 if after else None
    if histories is not None:
        history.dump(histories / f"{topic}.jsonl")
    return {"drill": drill, "run": run, "victim": victim, "partition": part,
            "failover_ms": failover_ms,
            **verdict.summary(),
            "examples": {k: getattr(verdict, k)[:3] for k in
                         ("lost", "duplicates", "inconsistent", "skips", "nonmonotonic")
                         if getattr(verdict, k)}}


def run_drill(drill: str, runs: int, seed: int = 1, histories: Path | None = None,
              work: Path | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 - a seeded schedule, not a secret
    tmp = tempfile.TemporaryDirectory(prefix=f"twinmq-{drill}-") if work is None else None
    c = RealCluster(Path(tmp.name) if tmp is not None else work,  # type: ignore[arg-type]
                    serve_args=SERVE_ARGS.get(drill, ()) + (
                        ("--log-timestamps", "true") if histories is not None else ()))
    results = []
    try:
        for run in range(runs):
            r = run_once(c, drill, run, rng, histories)
            results.append(r)
            log(f"{drill} run {run}: victim {r['victim']}, acked {r['acked']}, lost "
                f"{r['lost']}, dup {r['duplicates']}, skips {r['skips']}, failover "
                f"{r['failover_ms'] and round(r['failover_ms'])} ms, topics left "
                f"{len(c.topics())}" + ("" if r["ok"] else f"  ANOMALY {r['examples']}"))
    finally:
        c.stop()
        if histories is not None and any(
                not r["ok"] or (r["failover_ms"] or 0) > SLOW_FAILOVER_MS for r in results):
            # the nodes' logs of the whole drill, for the anomalous runs' histories beside them
            for n in sorted(c.nodes):
                log_path = Path(c.nodes[n]["log"])
                if log_path.exists():
                    shutil.copyfile(log_path, histories / f"{drill}-n{n}.log")
        if tmp is not None:
            tmp.cleanup()
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["failover_ms"] for r in results if r["failover_ms"] is not None]
    keys = ("acked", "lost", "duplicates", "inconsistent", "skips", "nonmonotonic", "unknown",
            "unseen", "no_offset")
    out: dict[str, Any] = {"runs": len(results), "ok_runs": sum(r["ok"] for r in results)}
    out.update({k: sum(r.get(k, 0) for r in results) for k in keys})
    if times:
        out["failover_ms"] = {"p50": percentile(times, 50), "p99": percentile(times, 99),
                              "max": max(times)}
    return out


def main(argv: list[str] | None = None) -> int:
    from scenarios.provenance import provenance

    ap = argparse.ArgumentParser(prog="python -m scenarios.chaos.drills")
    ap.add_argument("--drill", action="append", choices=DRILLS)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("reports"))
    ap.add_argument("--histories", type=Path)
    ap.add_argument("--resume", action="store_true",
                    help="keep the drills OUT/chaos.json already holds for the same --runs and "
                         "--seed; run the others")
    args = ap.parse_args(argv)
    if args.histories:
        args.histories.mkdir(parents=True, exist_ok=True)
    drills = args.drill or list(DRILLS)
    report: dict[str, Any] = {"provenance": provenance(), "drills": {}}
    saved = args.out / "chaos.json"
    if args.resume and saved.exists():  # drills already run with these settings are kept
        old = json.loads(saved.read_text())
        if old.get("settings") == {"runs": args.runs, "seed": args.seed}:
            report["drills"] = {d: v for d, v in old["drills"].items() if d in drills}
    report["settings"] = {"runs": args.runs, "seed": args.seed}
    for drill in drills:
        if drill in report["drills"]:
            print(f"{drill}: kept from {saved}")
            continue
        started = time.monotonic()
        results = run_drill(drill, args.runs, args.seed, args.histories)
        report["drills"][drill] = {**summarize(results),
                                   "wall_s": round(time.monotonic() - started, 1),
                                   "results": results}
        _write(report, args)  # after every drill: a crash later keeps what ran
    print(_write(report, args))
    return 0 if all(d["ok_runs"] == d["runs"] for d in report["drills"].values()) else 1


def _write(report: dict[str, Any], args: argparse.Namespace) -> str:
    from scenarios.provenance import provenance_md

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    lines = ["# Chaos drills on a real 3-node cluster", "", *provenance_md(report),
             "Each run: a fresh topic (3 partitions, RF 3, min.insync.replicas 2), an "
             "idempotent acks=all confluent-kafka producer and a polling consumer; the fault; "
             "heal; a full read; the history checked (scenarios/chaos/history.py). `no offset`: "
             "acknowledged sends whose delivery report named no offset (checked for presence "
             "only).", "",
             "| drill | runs | runs ok | acked | lost | duplicates | inconsistent | skips | "
             "polls going back | unknown (unseen) | no offset | first ack of a record sent "
             "after the fault p50 / p99 / max (ms) | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for drill, d in report["drills"].items():
        f = d.get("failover_ms")
        ft = f"{f['p50']:.0f} / {f['p99']:.0f} / {f['max']:.0f}" if f else "-"
        lines.append(f"| {drill} | {d['runs']} | {d['ok_runs']} | {d['acked']} | {d['lost']} | "
                     f"{d['duplicates']} | {d['inconsistent']} | {d['skips']} | "
                     f"{d.get('nonmonotonic', 0)} | {d['unknown']} ({d['unseen']}) | "
                     f"{d.get('no_offset', 0)} | {ft} | "
                     f"{d['wall_s']} |")
    lines += ["", "Reproduce: `python -m scenarios.chaos.drills --runs "
              f"{args.runs} --seed {args.seed}`", ""]
    text = "\n".join(lines)
    (args.out / "chaos.md").write_text(text)
    return text


if __name__ == "__main__":
    raise SystemExit(main())
