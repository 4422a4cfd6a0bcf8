"""The simulated world: SimPy environment, nodes, network, disks, clocks, client, nemesis,
checkers and trace, built from a `Scenario` and a seed. `World(scenario, seed).run()` returns a
`RunResult` whose outcome is `ok | safety | liveness | crash`.

RNG streams are derived in this fixed order: clock-drift; per node ascending: disk-N (the node's
`SimFileSystem`, which holds its real Raft log), node-N; per link (src, dst ascending): link-S-D;
client; nemesis. Appending a stream at the end keeps every
existing one (and so old traces) unchanged; inserting one in the middle does not.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import simpy

from model.checkers import OUTCOME_CODES, Checkers, SafetyViolation
from model.clock import NodeClock, now_us
from model.faults import Nemesis
from model.fs import SimFileSystem
from model.net import Network
from model.node import SimNode
from model.rng import SeedTree
from model.scenario import Scenario
from model.trace import Trace
from model.workload import Client
from real.raft.types import Bug, Entry, RaftConfig, Role

US_PER_MS = 1000
ROOT = Path(__file__).resolve().parent.parent


class LivenessViolation(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: str
    detail: str
    trace_hash: str
    sim_us: int
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return OUTCOME_CODES[self.outcome]


def default_raft_factory() -> Callable[..., Any]:
    from real.raft import RaftNode

    def make(node_id: int, config: RaftConfig, rng: Any, durable: Any, peers: tuple) -> Any:
        return RaftNode(node_id, config, rng, durable, peers)

    return make


def encode_proposal(pid: int, value_bytes: int) -> bytes:
    from real.meta import encode_command

    value = f"p{pid}".ljust(value_bytes, ".")
    return encode_command("config.put", key=f"k{pid % 64}", value=value)


def raft_config(s: Scenario) -> RaftConfig:
    c = s.cluster
    return RaftConfig(election_tick_min=c.election_tick_min, election_tick_max=c.election_tick_max,
                      heartbeat_tick=c.heartbeat_tick, pre_vote=c.pre_vote,
                      check_quorum=c.check_quorum, max_size_per_msg=c.max_size_per_msg,
                      max_inflight_msgs=c.max_inflight_msgs,
                      bugs=frozenset(Bug(b) for b in c.bugs))


class World:
    def __init__(self, scenario: Scenario, seed: int, trace_out: IO[str] | None = None,
                 keep_trace: bool = False, raft_factory: Callable[..., Any] | None = None) -> None:
        from real.meta import MetaStateMachine

        self.scenario = scenario
        self.seed = seed
        self.env = simpy.Environment()
        self.trace = Trace(trace_out, keep=keep_trace)
        self.checkers = Checkers()
        self.raft_factory = raft_factory or default_raft_factory()
        self.sm_restore: Callable[[int, bytes], Any] = MetaStateMachine.at_snapshot
        self.node_ids = list(range(1, scenario.cluster.nodes + 1))
        self.seeds = SeedTree(seed)
        self._build()
        self.heal_us = round(scenario.faults.heal_ms * US_PER_MS) if scenario.faults.enabled else 0
        self.pending_at_heal: list[int] = []
        self.first_leader_after_heal_us = -1
        self.stop = self.env.event()
        self.verdict = ""

    def _build(self) -> None:
        s, seeds = self.scenario, self.seeds
        drift_rng = seeds.derive("clock-drift")
        config = raft_config(s)
        fs_config = s.disk.fs_config()
        self.nodes: dict[int, SimNode] = {}
        for nid in self.node_ids:
            drift = NodeClock.random_drift(drift_rng, s.clock.drift_ppm)
            clock = NodeClock(s.cluster.tick_ms, drift)
            fs = SimFileSystem(seeds.derive(f"disk-{nid}"), fs_config)
            self.nodes[nid] = SimNode(self, nid, config, clock, fs, seeds.derive(f"node-{nid}"))
        self.net = Network(self.env, self.node_ids, s.network, seeds.derive, self._deliver)
        self.client = Client(self, s.workload, seeds.derive("client"), encode_proposal)
        self.nemesis = Nemesis(self, s.faults, seeds.derive("nemesis"))

    def _deliver(self, dst: int, msg: object) -> None:
        self.nodes[dst].deliver(msg)  # type: ignore[arg-type]

    # -- queries and callbacks used by nodes, client, nemesis -----------------------------------

    def find_leader(self) -> int | None:
        """The live, unpaused node that believes it leads, in the highest term (a client's view
        after asking around)."""
        best: tuple[int, int] | None = None
        for nid in self.node_ids:
            node = self.nodes[nid]
            if not node.alive or node.paused or node.raft.role is not Role.LEADER:
                continue
            if best is None or node.raft.term > best[0]:
                best = (node.raft.term, nid)
        return best[1] if best is not None else None

    def self_declared_leaders(self) -> list[int]:
        """Every live, unpaused node that believes it leads (stale leaders included)."""
        nodes = self.nodes
        return [nid for nid in self.node_ids if nodes[nid].alive and not nodes[nid].paused
                and nodes[nid].raft.role is Role.LEADER]

    def on_role(self, node: int, term: int, role: Role, leader: int) -> None:
        self.trace.emit(now_us(self.env), node, "role", role=role.value, term=term, leader=leader)
        if role is Role.LEADER and self.heal_us and self.env.now >= self.heal_us:
            if self.first_leader_after_heal_us < 0:
                self.first_leader_after_heal_us = now_us(self.env)
            self._maybe_live()

    def on_committed(self, node: int, entry: Entry) -> None:
        pid = self.client.on_committed(entry.data, entry.index)
        if pid is None:
            return
        p = self.client.proposals[pid]
        self.trace.emit(now_us(self.env), node, "commit", pid=pid, index=entry.index,
                        latency_us=self.env.now - p.created_us, attempts=p.attempt)
        if self.heal_us and self.env.now >= self.heal_us:
            self._maybe_live()

    # -- heal and liveness ----------------------------------------------------------------------

    def heal(self) -> None:
        """Undo every fault; from now on none occurs. Then liveness is judged."""
        self.net.heal()
        for nid in self.node_ids:
            node = self.nodes[nid]
            node.set_skew(0.0)
            if not node.alive:
                node.start()
            elif node.paused:
                node.resume()
        self.pending_at_heal = self.client.pending()
        if self.scenario.workload.stop_at_heal:
            self.client.stopped = True
        self.trace.emit(now_us(self.env), 0, "heal", pending=len(self.pending_at_heal))
        budget = round(self.scenario.liveness_budget_ms * US_PER_MS)
        deadline = self.env.timeout(budget)
        deadline.callbacks.append(lambda _ev: self._liveness_deadline())
        self._maybe_live()

    def _is_live(self) -> bool:
        if self.find_leader() is None:
            return False
        proposals = self.client.proposals
        return all(proposals[pid].committed_us >= 0 for pid in self.pending_at_heal)

    def _maybe_live(self) -> None:
        if self.verdict or self.env.now < self.heal_us or not self._is_live():
            return
        self.verdict = "ok"
        self.trace.emit(now_us(self.env), 0, "verdict", outcome="ok",
                        after_heal_us=self.env.now - self.heal_us)
        self.stop.succeed()

    def _liveness_deadline(self) -> None:
        if self.verdict:
            return
        proposals = self.client.proposals
        missing = [pid for pid in self.pending_at_heal if proposals[pid].committed_us < 0]
        leader = self.find_leader()
        raise LivenessViolation(
            f"{self.scenario.liveness_budget_ms:g} ms after heal: leader={leader}, "
            f"{len(missing)} of {len(self.pending_at_heal)} proposals pending at heal not "
            f"committed (first: {missing[:5]})")

    # -- run --------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        s = self.scenario
        for nid in self.node_ids:
            self.nodes[nid].start()
        self.env.process(self.client.run())
        self.nemesis.start()
        end = self.env.timeout(round(s.duration_ms * US_PER_MS))
        outcome, detail = "ok", ""
        try:
            self.env.run(until=self.env.any_of([end, self.stop]))
            if self.heal_us and not self.verdict:
                self._liveness_deadline()
        except SafetyViolation as exc:
            outcome, detail = "safety", str(exc)
        except LivenessViolation as exc:
            outcome, detail = "liveness", str(exc)
        except Exception as exc:  # an exception in the core (or the shell): a crash
            outcome, detail = "crash", crash_detail(exc)
        if outcome != "ok" or not self.verdict:
            self.trace.emit(now_us(self.env), 0, "verdict", outcome=outcome, detail=detail)
        return RunResult(outcome, detail, self.trace.hexdigest(), int(self.env.now), self.stats())

    def _node_totals(self) -> dict[str, int]:
        rows = [dataclasses.asdict(self.nodes[nid].stats) for nid in self.node_ids]
        totals = _sum_stats(rows)
        fs_stats = [self.nodes[n].fs.stats for n in self.node_ids]
        totals["disk_bytes_lost"] = sum(st.bytes_lost for st in fs_stats)
        totals["disk_torn_bytes_kept"] = sum(st.torn_bytes_kept for st in fs_stats)
        return totals

    def stats(self) -> dict[str, Any]:
        p = self.client.proposals
        committed = [q for q in p.values() if q.committed_us >= 0]
        return {
            "proposals": len(p),
            "committed": len(committed),
            "abandoned": sum(1 for q in p.values() if q.abandoned),
            "client_rejected": self.client.rejected_full,
            "trace_events": self.trace.count,
            "faults": self.nemesis.count,
            "net": self.net.stats.as_dict(),
            "nodes": self._node_totals(),
            "leaders": len(self.checkers.election.leaders),
        }


def _sum_stats(rows: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in rows:
        for key in sorted(row):
            total[key] = total.get(key, 0) + row[key]
    return total


def crash_detail(exc: BaseException) -> str:
    """Exception type, first message line and the innermost frame, repo-relative (the detail is
    traced, so it must not depend on where the checkout lives)."""
    cause = exc.__cause__
    if cause is not None and type(cause) is type(exc):
        exc = cause  # SimPy re-raises a failed process's exception as a copy
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    if frames:
        path = Path(frames[-1].filename)
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)
        where = f"{rel.as_posix()}:{frames[-1].lineno}"
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg} at {where}"
