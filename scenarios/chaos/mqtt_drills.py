"""MQTT chaos drills against a real 3-node cluster (`--mqtt-cluster true`), paho-mqtt clients,
each run checked from its client history.

    python -m scenarios.chaos.mqtt_drills [--drill NAME ...] [--runs 50] [--out reports/]

A drill reuses one cluster for all its runs. A run uses fresh client ids and topics: a QoS 1
publisher (three topics, round robin) and a QoS 2 publisher, both persistent sessions (clean
session 0) on one node, and one persistent subscriber (QoS 1 on the first topics, QoS 2 on
the last) on another node. Every client that loses its connection reconnects to the next node
(its session follows its client id, real/mqtt/claims.py). The drill's fault hits while they
run; then the publishers stop, every message they sent must be acknowledged, and the
subscriber must hold every acknowledged one. Drills:

- `kill-subscriber-node`: SIGKILL the subscriber's node; it restarts 1.5 s later (the
  subscriber's claim on another node waits for its hand-over);
- `kill-publisher-node`: SIGKILL the publishers' node mid-stream; restart it 1.5 s later;
- `partition-node`: cut the subscriber's node off from both others (client links stay) for
  2 s, then heal;
- `stop-node`: SIGSTOP the subscriber's node (holding its session) for 1.5 s, then SIGCONT;
- `rolling-restart`: SIGTERM and restart every node in turn;
- `power-loss`: the nodes run with fsync "never" over the power-loss layer (unsynced writes are
  lost with the process); the subscriber's node loses power and restarts.

The checks (`check`): no acknowledged QoS 1/2 message missing at the persistent subscriber
(lost), no QoS 2 message delivered twice, first receipts in publish order per topic, and
every sent message acknowledged by the end. Writes reports/chaos-mqtt.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from real.node import cluster
from scenarios.chaos.drills import RealCluster, percentile

DRILLS = ("kill-subscriber-node", "kill-publisher-node", "partition-node", "stop-node",
          "rolling-restart", "power-loss")
SERVE_ARGS = ("--mqtt-cluster", "true")
POWER_LOSS_ARGS = ("--fsync", "never", "--hold-unsynced", "true")
SEND_INTERVAL_S = 0.005
TOPICS = 3
DRAIN_S = 60.0


class Roamer:
    """A paho client that, when its connection drops, reconnects to the next node (its session
    follows the client id through the cluster)."""

    def __init__(self, c: RealCluster, client_id: str, node: int, history: list[Any]) -> None:
        import paho.mqtt.client as mqtt

        self.c, self.node, self.history = c, node, history
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        self.client.max_inflight_messages_set(20)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = threading.Event()
        self.connects = 0
        deadline = time.monotonic() + 30
        while True:  # a node starts its MQTT listeners once it serves the cluster log
            try:
                self.client.connect("127.0.0.1", c.nodes[node]["mqtt"], keepalive=10)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.connects += 1
        self.history.append(("connack", self.node, reason.value, flags.session_present,
                             time.monotonic()))
        if reason.value == 0:
            self.connected.set()

    def _on_disconnect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        self.history.append(("closed", self.node, reason.value, None, time.monotonic()))
        nodes = sorted(self.c.nodes)
        self.node = nodes[(nodes.index(self.node) + 1) % len(nodes)]
        # paho reconnects to `_port`; its `port` setter refuses while the socket is still
        # being torn down, which is when this callback runs
        client._port = self.c.nodes[self.node]["mqtt"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Run:
    """One run's clients and what they saw."""

    def __init__(self, c: RealCluster, tag: str, pub_node: int, sub_node: int) -> None:
        self.tag = tag
        self.events: list[Any] = []
        self.received: list[tuple[str, int, int]] = []  # (topic, seq, qos)
        self.sent: dict[tuple[str, int], int] = {}  # (topic, seq) -> qos
        self.acked: set[tuple[str, int]] = set()
        self._mids: dict[tuple[int, int], tuple[str, int]] = {}
        self._early_acks: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self.sub = Roamer(c, f"{tag}-sub", sub_node, self.events)
        self.sub.client.on_message = self._on_message
        subscribed = threading.Event()
        self.sub.client.on_subscribe = lambda *_a: subscribed.set()
        assert self.sub.connected.wait(30), "subscriber never connected"
        self.sub.client.subscribe([(f"{tag}/a/#", 1), (f"{tag}/q2", 2)])
        assert subscribed.wait(30), "no SUBACK"
        self.pubs = [Roamer(c, f"{tag}-pub{q}", pub_node, self.events) for q in (1, 2)]
        for index, pub in enumerate(self.pubs):
            pub.client.on_publish = self._on_publish(index)
            assert pub.connected.wait(30), "publisher never connected"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, daemon=True)
        self._thread.start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        seq = int(msg.payload)
        with self._lock:
            self.received.append((msg.topic, seq, msg.qos))

    def _on_publish(self, index: int) -> Any:
        def acked(_c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
            with self._lock:
                key = self._mids.pop((index, mid), None)
                if key is None:
                    self._early_acks.add((index, mid))  # before publish() returned
                else:
                    self.acked.add(key)
        return acked

    def _publish(self) -> None:
        seq = 0
        while not self._stop.is_set():
            qos = 2 if seq % 4 == 3 else 1
            topic = f"{self.tag}/q2" if qos == 2 else f"{self.tag}/a/{seq % TOPICS}"
            # not under self._lock: paho calls on_publish holding its own lock, which
            # publish() takes too (the two orders would deadlock)
            info = self.pubs[qos - 1].client.publish(topic, str(seq).encode(), qos=qos)
            with self._lock:
                self.sent[(topic, seq)] = qos
                if (qos - 1, info.mid) in self._early_acks:
                    self._early_acks.discard((qos - 1, info.mid))
                    self.acked.add((topic, seq))
                else:
                    self._mids[(qos - 1, info.mid)] = (topic, seq)
            seq += 1
            time.sleep(SEND_INTERVAL_S)

    def finish(self) -> None:
        """Stop publishing; wait until everything sent is acknowledged and every acknowledged
        message received (or the drain time is up)."""
        self._stop.set()
        self._thread.join(10)
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            with self._lock:
                got = {(t, s) for t, s, _q in self.received}
                if len(self.acked) == len(self.sent) and self.acked <= got:
                    break
            time.sleep(0.1)
        time.sleep(0.5)  # late duplicates, if any
        for client in (self.sub, *self.pubs):
            client.close()


def check(run: Run) -> dict[str, Any]:
    """The verdict on one run's history."""
    firsts: dict[tuple[str, int], int] = {}
    dup_qos2 = dup_qos1 = 0
    order = 0
    last: dict[str, int] = {}
    for topic, seq, qos in run.received:
        key = (topic, seq)
        if key in firsts:
            if qos == 2:
                dup_qos2 += 1
            else:
                dup_qos1 += 1
            continue
        firsts[key] = qos
        if seq < last.get(topic, -1):
            order += 1
        last[topic] = max(last.get(topic, -1), seq)
    lost = sorted(k for k in run.acked if k not in firsts)
    unacked = len(run.sent) - len(run.acked)
    return {"sent": len(run.sent), "acked": len(run.acked), "received": len(firsts),
            "lost": len(lost), "lost_examples": [list(k) for k in lost[:3]],
            "duplicates_qos2": dup_qos2, "duplicates_qos1": dup_qos1,
            "order_violations": order, "unacked": unacked,
            "ok": not lost and not dup_qos2 and not order and not unacked}


def run_once(c: RealCluster, drill: str, run: int, rng: random.Random) -> dict[str, Any]:
    nodes = sorted(c.nodes)
    sub_node = nodes[run % len(nodes)]
    pub_node = nodes[(run + 1) % len(nodes)]
    r = Run(c, f"{drill}-{run}", pub_node, sub_node)
    time.sleep(0.5 + rng.random() * 0.5)
    victim = sub_node if drill != "kill-publisher-node" else pub_node
    fault_at = time.monotonic()
    if drill in ("kill-subscriber-node", "kill-publisher-node", "power-loss"):
        c.signal(victim, signal.SIGKILL)
        time.sleep(1.5)
        c.restart(victim)
    elif drill == "partition-node":
        others = [n for n in nodes if n != victim]
        assert not cluster.partition(c.work, [victim], others)
        time.sleep(2.0)
        assert not cluster.heal(c.work)
    elif drill == "stop-node":
        c.signal(victim, signal.SIGSTOP)
        time.sleep(1.5)
        c.signal(victim, signal.SIGCONT)
    elif drill == "rolling-restart":
        for nid in nodes:
            c.signal(nid, signal.SIGTERM)
            c.restart(nid)
            c.wait_settled()
    else:
        raise ValueError(f"unknown drill {drill!r}")
    c.wait_settled()
    time.sleep(1.0)
    r.finish()
    verdict = check(r)
    back = [t for kind, _n, code, _p, t in r.events if kind == "connack" and code == 0
            and t > fault_at]
    return {"drill": drill, "run": run, "victim": victim, "sub_node": sub_node,
            "pub_node": pub_node, **verdict,
            "reconnect_ms": round((min(back) - fault_at) * 1000) if back else None,
            "sessions_back": sum(1 for kind, _n, code, present, t in r.events
                                 if kind == "connack" and code == 0 and present
                                 and t > fault_at)}


def _say(line: str) -> None:
    print(line, flush=True)


def run_drill(drill: str, runs: int, seed: int = 1, log: Any = _say) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 - a seeded schedule, not a secret
    args = SERVE_ARGS + (POWER_LOSS_ARGS if drill == "power-loss" else ())
    with tempfile.TemporaryDirectory(prefix=f"twinmq-mqtt-{drill}-") as tmp:
        c = RealCluster(Path(tmp), serve_args=args)
        results = []
        try:
            for run in range(runs):
                res = run_once(c, drill, run, rng)
                results.append(res)
                log(f"{drill} run {run}: victim {res['victim']}, acked {res['acked']}, lost "
                    f"{res['lost']}, qos2 dup {res['duplicates_qos2']}, order "
                    f"{res['order_violations']}, unacked {res['unacked']}, reconnect "
                    f"{res['reconnect_ms']} ms" + ("" if res["ok"] else "  ANOMALY"))
        finally:
            c.stop()
    return results


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("sent", "acked", "received", "lost", "duplicates_qos2", "duplicates_qos1",
            "order_violations", "unacked")
    out: dict[str, Any] = {"runs": len(results), "ok_runs": sum(r["ok"] for r in results)}
    out.update({k: sum(r[k] for r in results) for k in keys})
    times = [r["reconnect_ms"] for r in results if r["reconnect_ms"] is not None]
    if times:
        out["reconnect_ms"] = {"p50": percentile(times, 50), "max": max(times)}
    return out


def main(argv: list[str] | None = None) -> int:
    from scenarios.provenance import provenance, provenance_md

    ap = argparse.ArgumentParser(prog="python -m scenarios.chaos.mqtt_drills")
    ap.add_argument("--drill", action="append", choices=DRILLS)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("reports"))
    args = ap.parse_args(argv)
    report: dict[str, Any] = {"provenance": provenance(),
                              "settings": {"runs": args.runs, "seed": args.seed}, "drills": {}}
    for drill in args.drill or list(DRILLS):
        started = time.monotonic()
        results = run_drill(drill, args.runs, args.seed)
        report["drills"][drill] = {**summarize(results),
                                   "wall_s": round(time.monotonic() - started, 1),
                                   "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos-mqtt.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# MQTT chaos drills on a real 3-node cluster", "", *provenance_md(report),
             "Each run: a QoS 1 and a QoS 2 paho publisher (persistent sessions) on one node, a "
             "persistent paho subscriber on another, every client reconnecting to the next node "
             "when its connection drops; the fault; then every sent message must be "
             "acknowledged and every acknowledged one received (scenarios/chaos/mqtt_drills.py)."
             "", "",
             "| drill | runs | runs ok | acked | lost | QoS 2 duplicates | QoS 1 duplicates | "
             "order violations | unacknowledged | first CONNACK after the fault p50 / max (ms) "
             "| wall (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for drill, d in report["drills"].items():
        rt = d.get("reconnect_ms")
        back = f"{rt['p50']:.0f} / {rt['max']:.0f}" if rt else "-"
        lines.append(f"| {drill} | {d['runs']} | {d['ok_runs']} | {d['acked']} | {d['lost']} | "
                     f"{d['duplicates_qos2']} | {d['duplicates_qos1']} | "
                     f"{d['order_violations']} | {d['unacked']} | "
                     f"{back} | {d['wall_s']} |")
    lines += ["", f"Reproduce: `python -m scenarios.chaos.mqtt_drills --runs {args.runs} "
              f"--seed {args.seed}`", ""]
    (args.out / "chaos-mqtt.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all(d["ok_runs"] == d["runs"] for d in report["drills"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
