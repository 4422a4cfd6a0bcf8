"""Storage-engine benchmark: the same append workload on real devices and in the simulator.

    python -m scenarios.bench.storage [--seconds 1.5] [--engines memory,file,rocksdb,s3] [--no-sim]
                                      [--sizes 100,1024,65536] [--out reports/bench-storage]

For each engine x durability policy x batch size, one producer appends batches back to back with a
bounded window of unacknowledged bytes (like a pipelined Kafka producer) and records, per batch,
the time from calling `append` to its acknowledgement: `durable_end()` passing it for `always`
and `group` (and S3's PUT), `append` returning for `never` and memory. Throughput counts payload
bytes acknowledged per second.

Batches: 100 B and 1 KiB are one record of that payload; 64 KiB is 64 records of 1 KiB. Each
cell builds its batch once and appends it over and over (records are immutable), so the figures
are the engine's cost, not the producer's.

The physical limit is measured in the same run: sequential 1 MiB writes each followed by fdatasync
(`raw-1MiB`, the limit for a durable stream in 1 MiB commit groups, which is what group commit
writes) and 64 KiB writes each followed by fdatasync (`raw-64KiB`, the limit for `always`).

The simulated half runs the *same driver* on the same engine code over model/ devices whose
parameters come from this run's measurements (fdatasync latency and bandwidth from the raw runs;
the CPU cost per append from the real memory-engine runs; the object store's seaweedfs-loopback
profile, plus the aws-s3-standard profile for cost). Time in the simulator advances by what the
devices charge plus the calibrated CPU time, so the two tables can be compared row by row.

Results: reports/bench-storage.json (every row) and reports/bench-storage.md (the tables).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from real.storage import Record
from scenarios.provenance import provenance, provenance_md

ROOT = Path(__file__).resolve().parents[2]
SIZES = (100, 1024, 65536)
POLICIES = {"memory": ("-",), "file": ("always", "group", "never"),
            "rocksdb": ("always", "group", "never"), "s3": ("put-per-append", "linger-20ms")}
INFLIGHT_BYTES_MAX = 8 << 20
GROUP_COMMIT_MS = 2
BYTES_PER_CELL_MAX = 512 << 20


def make_batch(size: int, ts: int) -> list[Record]:
    if size <= 1024:
        return [Record(-1, ts, None, b"x" * size)]
    return [Record(-1, ts, None, b"x" * 1024) for _ in range(size // 1024)]


# --------------------------------------------------------------------------------- environments

class RealEnv:
    """Wall time; devices do real I/O (their time is spent, not charged)."""

    sim = False

    def __init__(self) -> None:
        self._t0 = time.perf_counter_ns()

    def now_us(self) -> int:
        return (time.perf_counter_ns() - self._t0) // 1000

    def clock_ms(self) -> int:
        return self.now_us() // 1000

    def charge(self, cpu_us: int = 0) -> None:
        pass

    def wait_until_ms(self, due_ms: int) -> None:
        delay = due_ms - self.now_us() / 1000
        if delay > 0:
            time.sleep(delay / 1000)


class SimEnv:
    """Simulated time: advances by what the devices charge plus a calibrated CPU cost."""

    sim = True

    def __init__(self, devices: list[Any]) -> None:
        self._now_us = 0
        self.devices = devices

    def now_us(self) -> int:
        return self._now_us

    def clock_ms(self) -> int:
        return self._now_us // 1000

    def charge(self, cpu_us: int = 0) -> None:
        self._now_us += cpu_us + sum(dev.take_elapsed_us() for dev in self.devices)

    def wait_until_ms(self, due_ms: int) -> None:
        self._now_us = max(self._now_us, due_ms * 1000)


# --------------------------------------------------------------------------------- the driver

@dataclass
class CellResult:
    world: str
    engine: str
    policy: str
    batch_bytes: int
    batches: int
    seconds: float
    mb_s: float
    batches_s: float
    p50_ms: float
    p99_ms: float
    usd_per_gb: dict[str, float] | None = None
    requests: dict[str, int] | None = None


def drive(engine: Any, env: Any, batch_bytes: int, seconds: float, acks_on_append: bool,
          cpu_us_per_append: int = 0) -> tuple[int, float, list[int]]:
    """Append for `seconds` (of env time); returns (batches acked, elapsed s, latencies in us)."""
    pending: deque[tuple[int, int, int]] = deque()  # (end offset, start us, bytes)
    latencies: list[int] = []
    inflight = 0
    start = env.now_us()
    deadline = start + int(seconds * 1e6)
    total = 0

    def ack(durable_end: int) -> None:
        nonlocal inflight
        now = env.now_us()
        while pending and pending[0][0] <= durable_end:
            _end, t0, size = pending.popleft()
            latencies.append(now - t0)
            inflight -= size

    batch = make_batch(batch_bytes, env.clock_ms())  # built once: the engine is what is measured
    while env.now_us() < deadline and total < BYTES_PER_CELL_MAX:
        t0 = env.now_us()
        base = engine.append(batch)
        env.charge(cpu_us_per_append)
        total += batch_bytes
        if acks_on_append:
            latencies.append(env.now_us() - t0)
            continue
        pending.append((base + len(batch), t0, batch_bytes))
        inflight += batch_bytes
        due = engine.next_flush_ms()
        if due is not None and due <= env.clock_ms():
            engine.poll(env.clock_ms())
            env.charge()
        ack(engine.durable_end())
        while inflight > INFLIGHT_BYTES_MAX:
            due = engine.next_flush_ms()
            if due is None:
                engine.sync()
            else:
                env.wait_until_ms(due)
                engine.poll(env.clock_ms())
            env.charge()
            ack(engine.durable_end())
    if pending:
        engine.sync()
        env.charge()
        ack(engine.durable_end())
    assert not pending, "every appended batch must be acknowledged by the end"
    elapsed = (env.now_us() - start) / 1e6
    return len(latencies), elapsed, latencies


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index] / 1000.0


def cell(world: str, engine_name: str, policy: str, batch_bytes: int, batches: int,
         elapsed: float, latencies: list[int], meter: Any = None) -> CellResult:
    mb = batches * batch_bytes / 1e6
    result = CellResult(
        world=world, engine=engine_name, policy=policy, batch_bytes=batch_bytes, batches=batches,
        seconds=round(elapsed, 3), mb_s=round(mb / elapsed, 2) if elapsed else 0.0,
        batches_s=round(batches / elapsed) if elapsed else 0.0,
        p50_ms=round(percentile(latencies, 0.5), 3), p99_ms=round(percentile(latencies, 0.99), 3),
    )
    if meter is not None and mb:
        report = meter.report()  # requests and transfer; storage time is not part of a cell
        result.requests = {op: n for op, n in sorted(report.requests.items()) if n}
        gb = batches * batch_bytes / (1 << 30)
        result.usd_per_gb = {name: round(usd / gb, 4) for name, usd in report.dollars.items()}
    return result


# --------------------------------------------------------------------------------- engines

def engine_configs(engine: str, policy: str) -> dict[str, Any]:
    if engine in ("file", "rocksdb"):
        return {"fsync": policy, "group_commit_ms": GROUP_COMMIT_MS}
    if engine == "s3":
        return {"linger_ms": 0 if policy == "put-per-append" else 20}
    return {}


def open_real(engine: str, policy: str, tmp: Path, s3: Any,
              monotonic_ms: Callable[[], int]) -> tuple[Any, Callable[[], None], Any]:
    opts = engine_configs(engine, policy)
    if engine == "memory":
        from real.storage import MemoryEngine

        eng = MemoryEngine(bytes_max_total=BYTES_PER_CELL_MAX * 2, records_max_per_append=1024)
        return eng, eng.close, None
    if engine == "file":
        from real.node.osfs import OsFileSystem
        from real.storage.journal import JournalConfig, JournalEngine

        fs = OsFileSystem(str(tmp / "journal"))
        eng = JournalEngine(fs, "bench", monotonic_ms, JournalConfig(**opts))
        return eng, lambda: (eng.close(), fs.close_all()), None
    if engine == "rocksdb":
        from real.node.rocks import RocksKeyValue
        from real.storage.kvengine import KvEngine, KvEngineConfig

        kv = RocksKeyValue(str(tmp / "rocksdb"))
        eng = KvEngine(kv, "bench", monotonic_ms, KvEngineConfig(**opts))
        return eng, lambda: (eng.close(), kv.close()), None
    from real.node.s3 import S3ObjectStore
    from real.node.seaweed import DUMMY_KEY
    from real.storage.pricing import S3Meter
    from real.storage.s3engine import S3Engine, S3EngineConfig

    meter = S3Meter()
    store = S3ObjectStore("bench", s3, meter=meter, access_key=DUMMY_KEY, secret_key=DUMMY_KEY)
    prefix = f"{policy}-{tmp.name}"
    eng = S3Engine(store, prefix, monotonic_ms, S3EngineConfig(**opts))
    return eng, eng.close, meter


def open_sim(engine: str, policy: str, seed: int, calib: dict[str, Any]) -> tuple[Any, Any, Any]:
    rng = random.Random(seed)  # noqa: S311 - seeded by design
    env_devices: list[Any] = []
    env = SimEnv(env_devices)
    opts = engine_configs(engine, policy)
    meter = None
    if engine == "memory":
        from real.storage import MemoryEngine

        eng: Any = MemoryEngine(bytes_max_total=BYTES_PER_CELL_MAX * 2,
                                records_max_per_append=1024)
    elif engine == "file":
        from model.devices.fs import SimFileSystem
        from real.storage.journal import JournalConfig, JournalEngine

        fs = SimFileSystem(rng, calib["sim_fs_config"])
        env_devices.append(fs)
        eng = JournalEngine(fs, "bench", env.clock_ms, JournalConfig(**opts))
    elif engine == "rocksdb":
        from model.devices.kv import SimKeyValue
        from real.storage.kvengine import KvEngine, KvEngineConfig

        kv = SimKeyValue(rng, calib["sim_kv_config"])
        env_devices.append(kv)
        eng = KvEngine(kv, "bench", env.clock_ms, KvEngineConfig(**opts))
    else:
        from model.devices.objstore import SimObjectStore, SimObjectStoreConfig
        from real.storage.s3engine import S3Engine, S3EngineConfig

        store = SimObjectStore(rng, SimObjectStoreConfig.seaweedfs_loopback())
        env_devices.append(store)
        meter = store.meter
        eng = S3Engine(store, "bench", env.clock_ms, S3EngineConfig(**opts))
    env.charge()
    return eng, env, meter


# --------------------------------------------------------------------------------- raw limit

def raw_fdatasync(directory: Path, block: int, seconds: float) -> dict[str, Any]:
    path = directory / f"raw-{block}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    buf = os.urandom(block)
    written = 0
    syncs: list[int] = []
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds and written < BYTES_PER_CELL_MAX:
            os.write(fd, buf)
            s0 = time.perf_counter_ns()
            os.fdatasync(fd)
            syncs.append((time.perf_counter_ns() - s0) // 1000)
            written += block
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.remove(path)
    return {"block_bytes": block, "mb_s": round(written / elapsed / 1e6, 2),
            "fdatasync_p50_ms": percentile(syncs, 0.5), "fdatasync_p99_ms": percentile(syncs, 0.99),
            "syncs": len(syncs)}


def calibrate(raw: dict[str, dict[str, Any]], cpu: dict[int, int]) -> dict[str, Any]:
    """SimFsConfig from the raw runs: sync = fixed part + bytes at the measured bandwidth."""
    from model.devices.fs import SimFsConfig
    from model.devices.kv import SimKvConfig
    from model.sim.dist import Dist

    small, big = raw["raw-64KiB"], raw["raw-1MiB"]
    # Two points (64 KiB, 1 MiB) of sync latency vs bytes give bandwidth and a fixed part.
    per_byte_ms = max(1e-9, (big["fdatasync_p50_ms"] - small["fdatasync_p50_ms"]) / (960 << 10))
    fixed_ms = max(0.01, small["fdatasync_p50_ms"] - per_byte_ms * (64 << 10))
    sigma = max(0.05, math.log(max(small["fdatasync_p99_ms"], 1e-3) /
                               max(small["fdatasync_p50_ms"], 1e-3)) / 2.326)
    bandwidth = 1 / per_byte_ms / 1000  # bytes per ms -> MB/s
    config = SimFsConfig(
        sync_latency=Dist("lognormal", fixed_ms, sigma, 200.0),
        sync_bandwidth_mb_s=round(bandwidth, 1),
    )
    # RocksDB's WAL sync is an fdatasync of a small append: the fixed part of the same fit.
    kv_config = SimKvConfig(sync_latency=Dist("lognormal", fixed_ms, sigma, 200.0))
    return {"sim_fs_config": config, "sim_kv_config": kv_config, "cpu_us_per_append": cpu,
            "sync_fixed_ms": round(fixed_ms, 3), "sync_sigma": round(sigma, 3),
            "sync_bandwidth_mb_s": round(bandwidth, 1)}


# --------------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> dict[str, Any]:
    engines = args.engines.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[CellResult] = []
    raw: dict[str, dict[str, Any]] = {}
    cpu: dict[int, int] = {}
    seaweed = None
    s3 = None
    with tempfile.TemporaryDirectory(prefix="twinmq-bench-", dir=args.tmp) as tmp_s:
        tmp = Path(tmp_s)
        raw["raw-64KiB"] = raw_fdatasync(tmp, 64 << 10, args.seconds)
        raw["raw-1MiB"] = raw_fdatasync(tmp, 1 << 20, args.seconds)
        print(f"raw fdatasync: {raw}", flush=True)
        try:
            if "s3" in engines:
                from real.node.seaweed import SeaweedServer

                seaweed = SeaweedServer(data_dir=str(tmp / "seaweedfs"))
                seaweed.start()
                s3 = seaweed.endpoint_url
            for engine in engines:
                for policy in POLICIES[engine]:
                    for size in sizes:
                        cell_dir = tmp / f"{engine}-{policy}-{size}"
                        env = RealEnv()
                        eng, close, meter = open_real(engine, policy, cell_dir, s3,
                                                      env.clock_ms)
                        acks_on_append = engine == "memory" or policy == "never"
                        n, elapsed, lat = drive(eng, env, size, args.seconds, acks_on_append)
                        close()
                        row = cell("real", engine, policy, size, n, elapsed, lat, meter)
                        if engine == "memory":
                            cpu[size] = max(1, int(elapsed * 1e6 / max(n, 1)))
                        rows.append(row)
                        print(_line(row), flush=True)
        finally:
            if seaweed is not None:
                seaweed.stop()
    calib: dict[str, Any] = {}
    if not args.no_sim:
        calib = calibrate(raw, cpu)
        for engine in engines:
            for policy in POLICIES[engine]:
                for size in sizes:
                    eng, env, meter = open_sim(engine, policy, args.seed, calib)
                    acks_on_append = engine == "memory" or policy == "never"
                    n, elapsed, lat = drive(eng, env, size, args.seconds, acks_on_append,
                                            cpu.get(size, 0))
                    row = cell("sim", engine, policy, size, n, elapsed, lat, meter)
                    rows.append(row)
                    print(_line(row), flush=True)
    calib.pop("sim_fs_config", None)
    calib.pop("sim_kv_config", None)
    target = _target(rows, raw)
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
        "seconds_per_cell": args.seconds, "inflight_bytes_max": INFLIGHT_BYTES_MAX,
        "group_commit_ms": GROUP_COMMIT_MS, "raw": raw, "calibration": calib,
        "target": target, "rows": [row.__dict__ for row in rows],
    }


def _target(rows: list[CellResult], raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    hits = [r for r in rows if (r.world, r.engine, r.policy, r.batch_bytes)
            == ("real", "file", "group", 65536)]
    if not hits:
        return {}
    ratio = hits[0].mb_s / raw["raw-1MiB"]["mb_s"]
    return {"what": "file engine, group commit, 64 KiB batches vs raw-1MiB fdatasync bandwidth",
            "ratio": round(ratio, 3), "goal": 0.5, "met": ratio >= 0.5}


def _line(row: CellResult) -> str:
    cost = "" if row.usd_per_gb is None else f" $/GB {row.usd_per_gb}"
    return (f"{row.world:4} {row.engine:8} {row.policy:15} {row.batch_bytes:6} B "
            f"{row.mb_s:9.2f} MB/s {row.batches_s:8} b/s p50 {row.p50_ms:8.3f} ms "
            f"p99 {row.p99_ms:8.3f} ms{cost}")


def markdown(result: dict[str, Any]) -> str:
    out = ["# Storage engine benchmark", "",
           f"Generated by `make bench-storage` (`python -m scenarios.bench.storage`); "
           f"{result['seconds_per_cell']} s per cell, one pipelined producer, at most "
           f"{result['inflight_bytes_max'] >> 20} MiB unacknowledged, group commit "
           f"{result['group_commit_ms']} ms. Machine: {result['machine']}.", "",
           *provenance_md(result),
           "## Physical limit (same run)", "",
           "| raw sequential writes | MB/s | fdatasync p50 ms | p99 ms |", "|---|---|---|---|"]
    for name, raw in result["raw"].items():
        out.append(f"| {name} + fdatasync each | {raw['mb_s']} | {raw['fdatasync_p50_ms']} | "
                   f"{raw['fdatasync_p99_ms']} |")
    target = result["target"]
    if target:
        out += ["", f"**Target** ({target['what']}): ratio {target['ratio']} "
                    f"(goal >= {target['goal']}: {'met' if target['met'] else 'NOT met'})."]
    for world in ("real", "sim"):
        rows = [r for r in result["rows"] if r["world"] == world]
        if not rows:
            continue
        title = "Real devices" if world == "real" else "Simulator (same driver, calibrated devices)"
        out += ["", f"## {title}", "",
                "| engine | policy | batch B | MB/s | batches/s | ack p50 ms | ack p99 ms | "
                "S3 requests | $/GB S3 Standard | $/GB S3 Express |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            reqs = "" if not r["requests"] else ", ".join(f"{k} {v}" for k, v in
                                                          sorted(r["requests"].items()))
            usd = r["usd_per_gb"] or {}
            std = usd.get("s3-standard-us-east-1", "")
            express = usd.get("s3-express-one-zone", "")
            out.append(f"| {r['engine']} | {r['policy']} | {r['batch_bytes']} | {r['mb_s']} | "
                       f"{r['batches_s']} | {r['p50_ms']} | {r['p99_ms']} | {reqs} | {std} | "
                       f"{express} |")
    if result["calibration"]:
        out += ["", f"Simulator calibration from this run: {result['calibration']}."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--engines", default="memory,file,rocksdb,s3")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-sim", action="store_true")
    parser.add_argument("--tmp", default=None, help="directory for the data (default: $TMPDIR)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-storage")
    args = parser.parse_args(argv)
    prov = provenance()  # the tree as the run starts
    result = run(args)
    result["provenance"] = prov
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
