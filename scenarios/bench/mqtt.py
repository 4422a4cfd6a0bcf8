"""MQTT benchmark: the project's own load generator against TwinMQ, Mosquitto and amqtt, one run.

    python -m scenarios.bench.mqtt [--quick] [--brokers twinmq,mosquitto,amqtt]
                                   [--scenarios fan-in-qos0,...] [--seconds S] [--warmup S]
                                   [--connections N] [--out reports/bench-mqtt]

Brokers (each a subprocess on free loopback ports, started fresh for every scenario so no backlog
or memory of one scenario leaks into the next, and stopped after it):

* mosquitto: `/usr/sbin/mosquitto -c <generated conf>`: `listener <port> 127.0.0.1`,
  `allow_anonymous true`, `persistence false`, logging cut to errors and warnings; queue limits
  at their defaults (`max_queued_messages 1000`, `max_inflight_messages 20`) unless
  `--mosquitto-max-queued N` says otherwise (the report records the value used).
* amqtt 0.12.1: installed on first use into its own venv `.bench/amqtt-venv` (its pins clash with
  ours), run as `amqtt -c <generated yaml>` with one TCP listener and only the anonymous-auth
  plugin (the default config's packet logger and $SYS plugin are left out). An install failure is
  recorded in the report and the bench goes on.
* twinmq: `python -m real serve --data-dir <tmp> --mqtt-port P --ws-port 0 --admin-port A
  --kafka-port K`. If it does not answer CONNECT with CONNACK within `--twinmq-wait` seconds it is
  reported as "not available" (with the reason) and the bench goes on.

Readiness of every broker = a TCP connect plus CONNECT -> CONNACK(0), polled until a deadline.
Broker RSS comes from /proc/<pid>/status (VmRSS, VmHWM) and CPU time from /proc/<pid>/stat
(utime + stime), sampled by this process at the start and end of each measured window.

Scenarios and the generator: see `scenarios/bench/mqtt_loadgen.py` (`Scenario` holds the
parameters). Throughput scenarios run the publishers in one worker process and the subscribers in
another; latency runs publisher and subscriber in one process (one clock); idle runs one process
holding all connections. Each worker reports its CPU time over the measured window, so the report
shows whether the generator, not the broker, was the bottleneck (the machine has 2 cores).

Results: `<out>.json` (everything) and `<out>.md` (a table per scenario: a column per broker, the
ratios twinmq/mosquitto and twinmq/amqtt, and one verdict line per target of issue 4).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from scenarios.bench.mqtt_loadgen import Scenario, Stats, connect_bytes, run_worker
from scenarios.provenance import provenance, provenance_md

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
BROKERS = ("twinmq", "mosquitto", "amqtt", "twinmq-cluster", "twinmq-cluster-x")
CLUSTER_BROKERS = ("twinmq-cluster", "twinmq-cluster-x")
"""A 3-node `twinmq cluster up -- --mqtt-cluster true` (MQTT across the cluster): clients all on
node 1 (`twinmq-cluster`), or publishers on node 1 and subscribers on node 2
(`twinmq-cluster-x`, every message crosses nodes). Broker CPU and memory are the three nodes'
sums."""
MOSQUITTO = "/usr/sbin/mosquitto"
AMQTT_VERSION = "0.12.1"
AMQTT_VENV = ROOT / ".bench" / "amqtt-venv"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def scenarios(quick: bool) -> list[Scenario]:
    """The scenario list of issue 4 (or its `--quick` miniature, for the smoke test)."""
    full = [
        Scenario("fan-in-qos0", "fan-in", qos=0, publishers=16),
        Scenario("fan-in-qos1", "fan-in", qos=1, publishers=16),
        Scenario("fan-out-qos0", "fan-out", qos=0, subscribers=16),
        Scenario("fan-out-qos1", "fan-out", qos=1, subscribers=16),
        Scenario("latency-qos0", "latency", qos=0, rate=5000),
        Scenario("latency-qos1", "latency", qos=1, rate=5000),
        Scenario("idle", "idle", connections=10_000, timeout_s=30.0),
    ]
    if not quick:
        return full
    small = {"publishers": 4, "subscribers": 4, "warmup_s": 0.2, "seconds": 1.0, "rate": 1000,
             "connections": 200, "drain_max_s": 3.0, "drain_quiet_s": 0.5}
    return [replace(sc, **small) for sc in full]


# ---------------------------------------------------------------------------------- processes

def free_port() -> int:
    """A free port outside the ephemeral range (real/node/ports.py)."""
    from real.node.ports import free_port as pick

    return pick(HOST)


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def proc_mem_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of `pid` in MB (10^6 bytes), from /proc/<pid>/status."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) * 1024 / 1e6, 2)
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of `pid` in seconds, from /proc/<pid>/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mqtt_ready(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> str:
    """Poll CONNECT -> CONNACK(0) on HOST:port until `deadline`; "" when ready, else why not."""
    why = "no attempt"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return f"process exited with status {proc.returncode}"
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as sock:
                sock.settimeout(max(0.2, min(2.0, deadline - time.monotonic())))
                sock.sendall(connect_bytes("bench-probe", keep_alive=10))
                got = b""
                while len(got) < 4:
                    more = sock.recv(4 - len(got))
                    if not more:
                        break
                    got += more
                if got == b"\x20\x02\x00\x00":
                    return ""
                why = f"CONNECT answered with {got.hex() or 'a close'}"
        except OSError as exc:
            why = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)  # polling a server that is starting: there is no event to wait on
    return f"no CONNACK before the deadline ({why})"


class Broker:
    """A broker subprocess: `start()` waits for MQTT readiness, `stop()` leaves nothing behind."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path,
                 wait_s: float, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.cwd = cwd or workdir
        self.wait_s = wait_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"

    def start(self) -> str:
        """Start and wait until ready; "" on success, else the reason (the process is stopped)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd,
                                         start_new_session=True)
        why = mqtt_ready(self.port, time.monotonic() + self.wait_s, self.proc)
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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.poll() is not None


class ClusterBroker(Broker):
    """Three TwinMQ nodes (real/node/cluster.py) with MQTT across the cluster; `port` is node 1's
    MQTT port, `sub_port` the subscribers' (node 1's, or node 2's when `cross`)."""

    def __init__(self, name: str, workdir: Path, wait_s: float, cross: bool) -> None:
        super().__init__(name, [], 0, workdir, wait_s)
        self.cross = cross
        self.sub_port = 0
        self.pids: list[int] = []

    def start(self) -> str:
        from real.node import cluster

        work = self.cwd / "cluster"
        with open(self.log_path, "a") as out:
            code = cluster.up(3, work, ["--mqtt-cluster", "true"], out=out)
        if code != 0:
            self.stop()
            return f"twinmq cluster up exited {code}; log: {self.log_tail()}"
        nodes = json.loads((work / "cluster.json").read_text())["nodes"]
        self.pids = [n["pid"] for n in nodes]
        self.port = nodes[0]["mqtt"]
        self.sub_port = nodes[1]["mqtt"] if self.cross else self.port
        for port in {self.port, self.sub_port}:
            why = mqtt_ready(port, time.monotonic() + self.wait_s)
            if why:
                self.stop()
                return why
        return ""

    @property
    def pid(self) -> int:
        return self.pids[0]

    def alive(self) -> bool:
        from real.node import cluster

        return bool(self.pids) and all(cluster._alive(p) for p in self.pids)

    def stop(self) -> None:
        from real.node import cluster

        if (self.cwd / "cluster" / "cluster.json").exists():
            with open(self.log_path, "a") as out:
                cluster.down(self.cwd / "cluster", out=out)


def mosquitto_broker(work: Path, max_queued: int | None, extra: list[str]) -> Broker:
    port = free_port()
    lines = [f"listener {port} {HOST}", "allow_anonymous true", "persistence false",
             "log_dest stderr", "log_type error", "log_type warning"]
    if max_queued is not None:
        lines.append(f"max_queued_messages {max_queued}")
    lines += extra
    conf = work / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return Broker("mosquitto", [MOSQUITTO, "-c", str(conf)], port, work, 10.0)


def amqtt_broker(work: Path, venv: Path) -> Broker:
    port = free_port()
    conf = work / "amqtt.yaml"
    conf.write_text(
        "listeners:\n  default:\n    type: tcp\n"
        f"    bind: {HOST}:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n")
    return Broker("amqtt", [str(venv / "bin" / "amqtt"), "-c", str(conf)], port, work, 20.0)


def twinmq_broker(work: Path, wait_s: float, ws_flag: bool = True) -> Broker:
    port = free_port()
    argv = [sys.executable, "-m", "real", "serve", "--data-dir", str(work / "twinmq-data"),
            "--mqtt-port", str(port), "--admin-port", str(free_port()),
            "--kafka-port", str(free_port())]
    if ws_flag:
        argv[argv.index("--admin-port"):argv.index("--admin-port")] = ["--ws-port", "0"]
    return Broker("twinmq", argv, port, work, wait_s, cwd=ROOT)  # `-m real` from the repo root


def _mosquitto_version() -> str:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    first = out.decode(errors="replace").splitlines()[:1]
    return first[0].replace("mosquitto version ", "") if first else "unknown"


def ensure_amqtt(venv: Path) -> tuple[Path | None, str]:
    """amqtt==AMQTT_VERSION in its own venv (skipped when present); (venv or None, message)."""
    exe = venv / "bin" / "amqtt"
    if exe.exists():
        return venv, "present"
    python = shutil.which("python3") or sys.executable
    try:
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True,
                       timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"amqtt=={AMQTT_VERSION}"],
                       check=True, capture_output=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return None, f"amqtt install failed: {exc}; {detail.decode(errors='replace')[-300:]}"
    if not exe.exists():
        return None, f"amqtt install left no {exe}"
    return venv, "installed"


# ---------------------------------------------------------------------------------- one scenario

class ScenarioError(Exception):
    """A worker failed, died or did not answer in time (the message says which and why)."""


class Workers:
    """Worker processes (forked) of one scenario, each with a pipe to this process."""

    def __init__(self, scenario: Scenario, port: int, sub_port: int = 0) -> None:
        self.scenario = scenario
        self.port = port
        self.sub_port = sub_port
        self.ctx = multiprocessing.get_context("fork")
        self.procs: dict[str, Any] = {}
        self.conns: dict[str, Any] = {}

    def spawn(self, role: str) -> None:
        mine, theirs = self.ctx.Pipe()
        proc = self.ctx.Process(target=run_worker, name=f"loadgen-{role}",
                                args=(role, theirs, self.scenario, HOST, self.port,
                                      self.sub_port), daemon=True)
        proc.start()
        theirs.close()
        self.procs[role], self.conns[role] = proc, mine

    def expect(self, role: str, kind: str, timeout: float) -> Any:
        conn = self.conns[role]
        if not conn.poll(timeout):
            raise ScenarioError(f"{role}: no {kind!r} within {timeout:.0f} s")
        try:
            got, payload = conn.recv()
        except EOFError as exc:
            raise ScenarioError(f"{role}: exited before {kind!r}") from exc
        if got != kind:
            raise ScenarioError(f"{role}: expected {kind!r}, got {got!r}: {payload}")
        return payload

    def send(self, role: str, kind: str, payload: Any) -> None:
        self.conns[role].send((kind, payload))

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
        time.sleep(delay)  # the bench's own schedule (measurement window), not a sync


def _window_probe(broker: Broker, sc: Scenario, t0: float) -> dict[str, Any]:
    """Broker CPU over the measured window and its memory at the window's end (a cluster's:
    the sum over its nodes)."""
    pids = broker.pids if isinstance(broker, ClusterBroker) else [broker.pid]
    _sleep_until(t0 + sc.warmup_s)
    cpu0 = sum(proc_cpu_s(p) for p in pids)
    _sleep_until(t0 + sc.warmup_s + sc.seconds)
    cpu1 = sum(proc_cpu_s(p) for p in pids)
    mems = [proc_mem_mb(p) for p in pids]
    rss = [m.get("VmRSS") for m in mems]
    peak = [m.get("VmHWM") for m in mems]
    return {"broker_cpu_pct": round(100 * (cpu1 - cpu0) / sc.seconds, 1),
            "broker_rss_mb": round(sum(r for r in rss if r), 1) if any(rss) else None,
            "broker_peak_rss_mb": round(sum(r for r in peak if r), 1) if any(peak) else None}


def _pct(cpu_s: float, seconds: float) -> float:
    return round(100 * cpu_s / seconds, 1)


def _sub_port(broker: Broker) -> int:
    return broker.sub_port if isinstance(broker, ClusterBroker) else 0


def run_throughput(broker: Broker, sc: Scenario) -> dict[str, Any]:
    workers = Workers(sc, broker.port, _sub_port(broker))
    try:
        workers.spawn("subscribers")
        workers.expect("subscribers", "ready", 60)
        workers.spawn("publishers")
        workers.expect("publishers", "ready", 60)
        t0 = time.monotonic() + 0.2
        workers.send("subscribers", "go", t0)
        workers.send("publishers", "go", t0)
        probe = _window_probe(broker, sc, t0)
        pub: Stats = workers.expect("publishers", "done", sc.drain_max_s + 60)
        fanout = sc.subscribers if sc.kind == "fan-out" else 1
        expected = pub.sent * fanout
        workers.send("subscribers", "drain", expected)
        sub: Stats = workers.expect("subscribers", "done", sc.drain_max_s + 60)
    finally:
        workers.close()
    lost = expected - sub.delivered
    return {
        "delivered_per_s": round(sub.delivered_in_window / sc.seconds, 1),
        "published_per_s": round(pub.sent_in_window / sc.seconds, 1),
        "published": pub.sent, "expected_deliveries": expected, "delivered": sub.delivered,
        "lost": lost, "loss_pct": round(100 * lost / expected, 3) if expected else None,
        "drain": sub.extra["drain"],
        "acked": pub.acked if sc.qos else None,
        "gen_pub_cpu_pct": _pct(pub.cpu_s_in_window, sc.seconds),
        "gen_sub_cpu_pct": _pct(sub.cpu_s_in_window, sc.seconds),
        **probe, "publisher_extra": pub.extra,
        "subscriber_extra": {k: v for k, v in sub.extra.items() if k != "per_subscriber"},
        "per_subscriber": sub.extra["per_subscriber"],
    }


def run_latency(broker: Broker, sc: Scenario) -> dict[str, Any]:
    workers = Workers(sc, broker.port, _sub_port(broker))
    try:
        workers.spawn("latency")
        workers.expect("latency", "ready", 60)
        t0 = time.monotonic() + 0.2
        workers.send("latency", "go", t0)
        probe = _window_probe(broker, sc, t0)
        got: Stats = workers.expect("latency", "done", sc.drain_max_s + 60)
    finally:
        workers.close()
    extra = dict(got.extra)
    return {"p50_ms": extra.pop("p50_ms"), "p99_ms": extra.pop("p99_ms"),
            "max_ms": extra.pop("max_ms"), "rate": sc.rate,
            "delivered_per_s": extra.pop("delivered_per_s"), "published": got.sent,
            "delivered": got.delivered, "lost": got.sent - got.delivered,
            "gen_cpu_pct": _pct(got.cpu_s_in_window, sc.seconds), **probe, **extra}


def run_idle(broker: Broker, sc: Scenario) -> dict[str, Any]:
    before = proc_mem_mb(broker.pid)["VmRSS"]
    workers = Workers(sc, broker.port)
    try:
        workers.spawn("idle")
        ready = workers.expect("idle", "ready", sc.connections / 20 + 120)
        after = proc_mem_mb(broker.pid)
        workers.send("idle", "close", None)
        done: Stats = workers.expect("idle", "done", 120)
    finally:
        workers.close()
    per_conn_kb = ((after["VmRSS"] - before) * 1000 / ready["connected"]
                   if ready["connected"] else None)
    return {"connections": sc.connections, **ready, "rss_before_mb": before,
            "rss_after_mb": after["VmRSS"], "broker_peak_rss_mb": after["VmHWM"],
            "rss_per_connection_kb": round(per_conn_kb, 2) if per_conn_kb is not None else None,
            "lost_before_close": done.extra["lost_before_close"]}


RUNNERS = {"fan-in": run_throughput, "fan-out": run_throughput, "latency": run_latency,
           "idle": run_idle}


# ---------------------------------------------------------------------------------- the run

def prepare_brokers(names: list[str], tmp: Path, args: argparse.Namespace
                    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(factory per usable broker: work dir -> Broker, status per broker for the report)."""
    factories: dict[str, Any] = {}
    status: dict[str, dict[str, Any]] = {}
    if "mosquitto" in names:
        if os.access(MOSQUITTO, os.X_OK):
            factories["mosquitto"] = lambda w: mosquitto_broker(
                w, args.mosquitto_max_queued, args.mosquitto_option)
            status["mosquitto"] = {"status": "ok", "version": _mosquitto_version(),
                                   "max_queued_messages":
                                   args.mosquitto_max_queued or "default (1000)",
                                   "extra_options": args.mosquitto_option}
        else:
            status["mosquitto"] = {"status": "not available", "reason": f"no {MOSQUITTO}"}
    if "amqtt" in names:
        venv, message = ensure_amqtt(args.amqtt_venv)
        if venv is None:
            status["amqtt"] = {"status": "not available", "reason": message}
        else:
            factories["amqtt"] = lambda w: amqtt_broker(w, venv)
            status["amqtt"] = {"status": "ok", "version": AMQTT_VERSION, "venv": message}
    if "twinmq" in names:
        status["twinmq"] = _probe_twinmq(tmp, args.twinmq_wait, factories)
    for name in CLUSTER_BROKERS:
        if name in names:
            factories[name] = lambda w, n=name: ClusterBroker(n, w, args.twinmq_wait,
                                                              cross=n.endswith("-x"))
            status[name] = {"status": "ok", "nodes": 3,
                            "clients": ("publishers on node 1, subscribers on node 2"
                                        if name.endswith("-x") else "all on node 1")}
    for name, info in status.items():
        print(f"broker {name}: {info}", flush=True)
    return factories, status


def _probe_twinmq(tmp: Path, wait_s: float, factories: dict[str, Any]) -> dict[str, Any]:
    """Start twinmq once; usable when it answers CONNECT. Retries without `--ws-port` when the
    CLI does not know that flag yet (the WebSocket listener is being built in parallel)."""
    work = tmp / "twinmq-probe"
    work.mkdir()
    broker = twinmq_broker(work, wait_s)
    why = broker.start()
    ws_flag = True
    if why and "--ws-port" in broker.log_tail(10):
        ws_flag = False
        broker = twinmq_broker(work, wait_s, ws_flag=False)
        why = broker.start()
    broker.stop()
    if why:
        return {"status": "not available", "reason": why}
    factories["twinmq"] = lambda w: twinmq_broker(w, wait_s, ws_flag=ws_flag)
    return {"status": "ok", "ws_port_flag": ws_flag}


def run_one(factory: Any, name: str, sc: Scenario, tmp: Path) -> dict[str, Any]:
    work = tmp / f"{name}-{sc.name}"
    work.mkdir()
    broker: Broker = factory(work)
    row: dict[str, Any] = {"scenario": sc.name, "broker": name}
    why = broker.start()
    if why:
        row["error"] = f"broker did not start: {why}"
        return row
    try:
        row.update(RUNNERS[sc.kind](broker, sc))
    except ScenarioError as exc:
        row["error"] = str(exc)
    finally:
        if isinstance(broker, ClusterBroker):
            alive = broker.alive()
        else:
            alive = broker.proc is not None and broker.proc.poll() is None
        broker.stop()
    if not alive:
        row["error"] = row.get("error", "") + f" broker died: {broker.log_tail()}"
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = raise_nofile()
    chosen = _chosen_scenarios(args)
    names = [b for b in args.brokers.split(",") if b]
    unknown = sorted(set(names) - set(BROKERS))
    if unknown:
        raise SystemExit(f"--brokers: unknown {unknown}; expected some of {list(BROKERS)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="twinmq-bench-mqtt-", dir=args.tmp) as tmp_s:
        tmp = Path(tmp_s)
        factories, status = prepare_brokers(names, tmp, args)
        for name in names:
            if name not in factories:
                continue
            for sc in chosen:
                if name in CLUSTER_BROKERS and sc.kind == "idle":
                    continue  # the cluster rows are about crossing nodes, not idle memory
                row = run_one(factories[name], name, sc, tmp)
                rows.append(row)
                print(_line(row), flush=True)
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2), "nofile": [soft, hard]},
        "generator": GENERATOR_SETUP, "brokers": status,
        "scenarios": [asdict(sc) for sc in chosen], "rows": rows,
        "targets": targets(rows, chosen),
    }


def _chosen_scenarios(args: argparse.Namespace) -> list[Scenario]:
    every = scenarios(args.quick)
    wanted = [s for s in args.scenarios.split(",") if s] or [sc.name for sc in every]
    by_name = {sc.name: sc for sc in every}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise SystemExit(f"--scenarios: unknown {unknown}; expected some of {list(by_name)}")
    out = []
    for name in wanted:
        sc = by_name[name]
        if args.seconds is not None:
            sc = replace(sc, seconds=args.seconds)
        if args.warmup is not None:
            sc = replace(sc, warmup_s=args.warmup)
        if args.connections is not None:
            sc = replace(sc, connections=args.connections)
        out.append(sc)
    return out


GENERATOR_SETUP = (
    "asyncio Protocols; packets encoded once (real.mqtt.encode) at setup; QoS 0 publishers write a "
    "pre-built 64-frame chunk until the transport pauses; QoS 1 publishers send slices of a "
    "pre-built ring of 1024 frames with a window of 64 unacked; subscribers count PUBLISH frames "
    "by walking fixed headers and answer QoS 1 with pre-built PUBACKs. Throughput: publishers in "
    "one process, subscribers in another (fork); latency: publisher and subscriber in one "
    "process; idle: one process. Generator CPU is each worker's process time over the window.")


def _line(row: dict[str, Any]) -> str:
    keys = ("delivered_per_s", "published_per_s", "loss_pct", "p50_ms", "p99_ms",
            "connected", "rss_after_mb", "broker_cpu_pct", "gen_pub_cpu_pct", "gen_sub_cpu_pct",
            "gen_cpu_pct", "error")
    shown = " ".join(f"{k}={row[k]}" for k in keys if k in row)
    return f"{row['broker']:9} {row['scenario']:13} {shown}"


# ---------------------------------------------------------------------------------- report

def _value(rows: list[dict[str, Any]], broker: str, scenario: str, key: str) -> float | None:
    for row in rows:
        if row["broker"] == broker and row["scenario"] == scenario and "error" not in row:
            value = row.get(key)
            return value if isinstance(value, int | float) else None
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return float(f"{a / b:.3g}")  # three significant digits: 0.000213, 0.658, 436


def targets(rows: list[dict[str, Any]], chosen: list[Scenario]) -> list[dict[str, Any]]:
    """The issue-4 targets, each with its measured ratio/value and met = True|False|None."""
    names = {sc.name for sc in chosen}
    out: list[dict[str, Any]] = []

    def ratio_target(scenario: str, key: str, other: str, goal: float, at_least: bool,
                     what: str, mine: str = "twinmq") -> None:
        if scenario not in names:
            return
        ratio = _ratio(_value(rows, mine, scenario, key), _value(rows, other, scenario, key))
        met = None if ratio is None else (ratio >= goal if at_least else ratio <= goal)
        out.append({"what": what, "scenario": scenario, "metric": key,
                    "ratio": ratio, "goal": f"{'>=' if at_least else '<='} {goal}x {other}",
                    "met": met})

    for sc in ("fan-in-qos0", "fan-out-qos0"):
        ratio_target(sc, "delivered_per_s", "mosquitto", 0.5, True,
                     f"QoS 0 throughput ({sc}) at least 0.5x Mosquitto's")
        ratio_target(sc, "delivered_per_s", "amqtt", 5.0, True,
                     f"QoS 0 throughput ({sc}) at least 5x amqtt's")
    for sc in ("latency-qos0", "latency-qos1"):
        ratio_target(sc, "p99_ms", "mosquitto", 2.0, False,
                     f"p99 at the fixed rate ({sc}) no worse than 2x Mosquitto's")
    idle = next((sc for sc in chosen if sc.kind == "idle"), None)
    if idle is not None:
        rss = _value(rows, "twinmq", idle.name, "rss_after_mb")
        connected = _value(rows, "twinmq", idle.name, "connected")
        met = None if rss is None else (rss <= 150 and connected == idle.connections)
        out.append({"what": f"{idle.connections} idle connections in at most 150 MB RSS",
                    "scenario": idle.name, "metric": "rss_after_mb", "value": rss,
                    "goal": "<= 150 MB", "met": met})
    if any(r["broker"] == "twinmq-cluster-x" for r in rows):  # issue 12's cluster targets
        ratio_target("fan-in-qos0", "delivered_per_s", "twinmq-cluster", 0.5, True,
                     "cluster: cross-node QoS 0 fan-in at least 0.5x same-node",
                     mine="twinmq-cluster-x")
        ratio_target("latency-qos1", "p99_ms", "twinmq-cluster", 2.0, False,
                     "cluster: cross-node QoS 1 p99 at 5,000 msg/s at most 2x same-node",
                     mine="twinmq-cluster-x")
    return out


METRICS = {
    "fan-in": [("delivered_per_s", "delivered msg/s (subscriber)"),
               ("published_per_s", "published msg/s"), ("loss_pct", "undelivered % after drain"),
               ("drain", "drain ended by"),
               ("broker_cpu_pct", "broker CPU %"), ("broker_peak_rss_mb", "broker peak RSS MB"),
               ("gen_pub_cpu_pct", "generator CPU % (publishers)"),
               ("gen_sub_cpu_pct", "generator CPU % (subscribers)")],
    "latency": [("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
                ("delivered_per_s", "delivered msg/s"), ("lost", "undelivered messages"),
                ("window_full_ticks", "1 ms ticks cut short by the QoS 1 window"),
                ("behind_schedule_max", "most messages behind schedule"),
                ("broker_cpu_pct", "broker CPU %"), ("gen_cpu_pct", "generator CPU %")],
    "idle": [("connected", "connections accepted"), ("connects_per_s", "connects/s"),
             ("rss_before_mb", "broker RSS before, MB"), ("rss_after_mb", "broker RSS after, MB"),
             ("rss_per_connection_kb", "RSS per connection, kB")],
}
METRICS["fan-out"] = [("delivered_per_s", "deliveries/s (all subscribers)"), *METRICS["fan-in"][1:]]


def _describe(sc: dict[str, Any]) -> str:
    timing = f"{sc['seconds']} s after {sc['warmup_s']} s warmup"
    if sc["kind"] == "fan-in":
        return (f"{sc['publishers']} publishers -> 1 subscriber, QoS {sc['qos']}, "
                f"{sc['payload_bytes']} B, {timing}")
    if sc["kind"] == "fan-out":
        return (f"1 publisher -> {sc['subscribers']} subscribers, QoS {sc['qos']}, "
                f"{sc['payload_bytes']} B, {timing}")
    if sc["kind"] == "latency":
        return (f"1 publisher -> 1 subscriber, QoS {sc['qos']}, {sc['rate']} msg/s, "
                f"{sc['payload_bytes']} B, {timing}")
    return f"{sc['connections']} connections, keep-alive {sc['keep_alive_s']} s, clean session"


READING = [
    "- Each broker is started fresh for each scenario; `n/a` = broker not available (see above).",
    "- delivered msg/s counts PUBLISH frames arriving at the subscriber(s) during the measured "
    "window; published msg/s counts frames the publishers handed to their sockets in the window "
    "(QoS 0 publishers write as fast as the sockets take data, so a slow broker shows up as "
    "published > delivered and as socket backlog).",
    "- undelivered % = (published x subscribers - delivered) / expected, after the drain: "
    "`complete` (all arrived), `quiet` (nothing arrived for the quiet period: the rest was "
    "dropped by the broker) or `deadline` (still arriving when the drain cap ran out: backlog, "
    "not necessarily loss).",
    "- broker CPU % is utime + stime over the window (100 = one core); generator CPU % is each "
    "worker process's own CPU time over the window: if it nears 100, the generator, not the "
    "broker, was the bottleneck.",
    "- latency = subscriber receive time - send stamp in the payload (perf_counter_ns, one "
    "process), over the messages sent during the window.",
]


def markdown(result: dict[str, Any]) -> str:
    brokers = list(result["brokers"])
    ratios = [("twinmq", o, f"twinmq/{o}") for o in ("mosquitto", "amqtt") if o in brokers]
    if all(b in brokers for b in CLUSTER_BROKERS):
        ratios.append(("twinmq-cluster-x", "twinmq-cluster", "cross/same node"))
    out = ["# MQTT broker benchmark", "",
           "Generated by `python -m scenarios.bench.mqtt` (own load generator, loopback, one "
           f"run). Machine: {result['machine']}.", "", *provenance_md(result),
           f"Generator: {result['generator']}", "",
           "## Brokers", ""]
    out += [f"- **{name}**: {info}" for name, info in result["brokers"].items()]
    out += ["", "## How to read", "", *READING, "", "## Targets (issues 4 and 12)", ""]
    for t in result["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        shown = t.get("ratio", t.get("value"))
        out.append(f"- {t['what']}: {shown} (goal {t['goal']}): **{verdict}**")
    for sc in result["scenarios"]:
        out += ["", f"## {sc['name']}: {_describe(sc)}", "",
                "| metric | " + " | ".join(brokers + [r for _, _, r in ratios]) + " |",
                "|---" * (1 + len(brokers) + len(ratios)) + "|"]
        for key, label in METRICS[sc["kind"]]:
            cells = [_cell(result, b, sc["name"], key) for b in brokers]
            for mine, other, _ in ratios:
                ratio = _ratio(_value(result["rows"], mine, sc["name"], key),
                               _value(result["rows"], other, sc["name"], key))
                cells.append("" if ratio is None else str(ratio))
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        errors = [r for r in result["rows"] if r["scenario"] == sc["name"] and "error" in r]
        out += [f"\n*{r['broker']}: {r['error']}*" for r in errors]
    return "\n".join(out) + "\n"


def _cell(result: dict[str, Any], broker: str, scenario: str, key: str) -> str:
    if result["brokers"][broker]["status"] != "ok":
        return "n/a"
    for row in result["rows"]:
        if row["broker"] == broker and row["scenario"] == scenario:
            return "error" if "error" in row else str(row.get(key, ""))
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="miniature scenarios (smoke)")
    parser.add_argument("--brokers", default=",".join(BROKERS))
    parser.add_argument("--scenarios", default="", help="comma-separated names (default: all)")
    parser.add_argument("--seconds", type=float, default=None, help="override measured seconds")
    parser.add_argument("--warmup", type=float, default=None, help="override warmup seconds")
    parser.add_argument("--connections", type=int, default=None, help="override idle count")
    parser.add_argument("--mosquitto-max-queued", type=int, default=None,
                        help="max_queued_messages (default: mosquitto's own, 1000)")
    parser.add_argument("--mosquitto-option", action="append", default=[], metavar="LINE",
                        help="an extra mosquitto.conf line (repeatable), e.g. "
                             "'set_tcp_nodelay true'")
    parser.add_argument("--twinmq-wait", type=float, default=10.0,
                        help="seconds to wait for twinmq's CONNACK before 'not available'")
    parser.add_argument("--amqtt-venv", type=Path, default=AMQTT_VENV)
    parser.add_argument("--tmp", default=None, help="directory for broker data and logs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-mqtt")
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
