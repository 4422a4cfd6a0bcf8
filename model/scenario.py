"""Scenario files (TOML) -> frozen config dataclasses. Unknown keys fail fast, naming the key.

Sections: top level (name, duration_ms, ...), [cluster], [network], [disk], [clock], [workload],
[faults] (with [faults.weights]), [liveness]. See scenarios/raft-election.toml for every key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.dist import Dist, DistError
from model.fs import SimFsConfig
from model.net import NetConfig
from real.raft.types import Bug

FAULT_KINDS = ("crash_leader", "crash_random", "pause", "partition", "partition_asym",
               "loss", "delay", "skew", "isolate_leader")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    nodes: int = 5
    tick_ms: float = 10.0
    election_tick_min: int = 10
    election_tick_max: int = 20
    heartbeat_tick: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    bugs: tuple[str, ...] = ()
    snapshot_every: int = 0
    """Compact the log every N applied entries (0: never)."""
    inbox_max: int = 4096
    tick_skipping: bool = True
    """Sleep across idle ticks (`ticks_until_due`); False ticks one by one (same trace)."""
    check_invariants: bool = True
    max_size_per_msg: int = 1 << 20
    """Bytes of entries per APPEND (RaftConfig; at least one entry is always sent)."""
    max_inflight_msgs: int = 256
    """Unacknowledged APPENDs per follower in replicate state (RaftConfig)."""


@dataclass(frozen=True, slots=True)
class DiskConfig:
    """[disk]: each node's simulated filesystem (`model.fs.SimFsConfig`), which holds the node's
    real Raft log (`real.server.raftlog.RaftLog`); the other SimFsConfig fields keep their
    defaults (µs page-cache writes, 1000 MB/s device writes)."""

    fsync: Dist = Dist("uniform", 0.2, 1.0)
    """fdatasync latency (SimFsConfig.sync_latency); a directory sync costs the same."""
    torn_writes: bool = True
    """A power loss may keep a byte prefix of the first lost append (SimFsConfig.torn_writes)."""

    def fs_config(self) -> SimFsConfig:
        return SimFsConfig(torn_writes=self.torn_writes, sync_latency=self.fsync)


@dataclass(frozen=True, slots=True)
class ClockConfig:
    drift_ppm: float = 0.0
    """Each node's drift is drawn uniformly from [-drift_ppm, +drift_ppm]."""


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    rate_per_s: float = 10.0
    proposal_timeout_ms: float = 1000.0
    retry_ms: float = 50.0
    """When no leader is known, look again after this long."""
    max_attempts: int = 1000
    outstanding_max: int = 10_000
    value_bytes: int = 16
    stop_at_heal: bool = False
    leader_choice: str = "highest"
    """"highest": propose to the leader of the highest term; "any": to any node that believes
    it leads (stale leaders too)."""


@dataclass(frozen=True, slots=True)
class FaultConfig:
    enabled: bool = False
    start_ms: float = 1000.0
    heal_ms: float = 0.0
    """From this sim time on no fault occurs and every fault is undone (0: no heal phase)."""
    interval_ms: tuple[float, float] = (500.0, 2000.0)
    weights: dict[str, float] = field(default_factory=dict)
    downtime_ms: tuple[float, float] = (200.0, 3000.0)
    pause_ms: tuple[float, float] = (200.0, 2000.0)
    partition_ms: tuple[float, float] = (200.0, 3000.0)
    loss: tuple[float, float] = (0.1, 0.5)
    loss_ms: tuple[float, float] = (200.0, 2000.0)
    delay_extra_ms: tuple[float, float] = (5.0, 100.0)
    delay_ms: tuple[float, float] = (200.0, 2000.0)
    skew_ppm: tuple[float, float] = (-50_000.0, 50_000.0)
    skew_ms: tuple[float, float] = (500.0, 5000.0)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "scenario"
    duration_ms: float = 10_000.0
    liveness_budget_ms: float = 10_000.0
    """After heal: a leader and a commit of every proposal pending at heal within this budget."""
    trace_messages: bool = False
    cluster: ClusterConfig = ClusterConfig()
    network: NetConfig = NetConfig()
    disk: DiskConfig = DiskConfig()
    clock: ClockConfig = ClockConfig()
    workload: WorkloadConfig = WorkloadConfig()
    faults: FaultConfig = FaultConfig()
    source: str = "<memory>"


_SECTIONS: dict[str, type] = {
    "cluster": ClusterConfig, "network": NetConfig, "disk": DiskConfig, "clock": ClockConfig,
    "workload": WorkloadConfig, "faults": FaultConfig,
}
_DIST_FIELDS = {("network", "latency"), ("disk", "fsync")}


def read_toml(path: str | Path, error: type[Exception] = ScenarioError) -> dict[str, Any]:
    """A scenario file's TOML; `error` names the file if it is missing or not valid TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"scenario file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path.name}: invalid TOML: {exc}") from None


def load(path: str | Path) -> Scenario:
    return from_dict(read_toml(path), source=str(path))


def from_dict(raw: dict[str, Any], source: str = "<memory>") -> Scenario:
    fname = Path(source).name if source != "<memory>" else "scenario.toml"
    values: dict[str, Any] = {"source": source}
    top = [f.name for f in dataclasses.fields(Scenario) if f.name != "source"]
    for key in raw:
        if key not in top:
            raise ScenarioError(f"unknown key {key!r} in {fname} (expected one of {sorted(top)})")
        if key in _SECTIONS:
            values[key] = _section(key, raw[key], fname)
        else:
            values[key] = _coerce(Scenario, key, raw[key], f"{key!r} in {fname}")
    scenario = Scenario(**values)
    _validate(scenario, fname)
    return scenario


def _section(name: str, raw: object, fname: str) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ScenarioError(f"[{name}] in {fname} must be a table")
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key in raw:
        where = f"{key!r} in [{name}] of {fname}"
        if key not in names:
            raise ScenarioError(f"unknown key {where} (expected one of {sorted(names)})")
        if (name, key) in _DIST_FIELDS:
            try:
                values[key] = Dist.parse(raw[key], f"{name}.{key} in {fname}")
            except DistError as exc:
                raise ScenarioError(str(exc)) from None
        else:
            values[key] = _coerce(cls, key, raw[key], where)
    try:
        return cls(**values)
    except AssertionError as exc:
        raise ScenarioError(f"[{name}] in {fname}: {exc}") from None


def coerce_scalar(default: Any, value: Any) -> tuple[bool, Any]:
    """(ok, value) for a TOML value standing in for a bool/int/float/str default: bools are not
    ints, ints become floats where a float is expected. (False, value) for other defaults."""
    if isinstance(default, bool):
        return isinstance(value, bool), value
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if isinstance(default, str):
        return isinstance(value, str), value
    return False, value


def _coerce(cls: type, key: str, value: Any, where: str) -> Any:
    default = _default(cls, key)
    if isinstance(default, (bool, int, float, str)):
        ok, value = coerce_scalar(default, value)
    elif isinstance(default, tuple):
        ok = isinstance(value, list)
        value = _tuple(default, value, where) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ScenarioError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def _default(cls: type, key: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(cls)}[key]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _tuple(default: tuple, value: list, where: str) -> tuple:
    if len(default) == 2 and all(isinstance(v, float) for v in default):
        if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
            raise ScenarioError(f"{where}: expected [low, high], got {value!r}")
        if value[0] > value[1]:
            raise ScenarioError(f"{where}: low {value[0]} > high {value[1]}")
        return (float(value[0]), float(value[1]))
    return tuple(value)


def _validate(s: Scenario, fname: str) -> None:
    known_bugs = [b.value for b in Bug]
    for bug in s.cluster.bugs:
        if bug not in known_bugs:
            raise ScenarioError(f"unknown bug {bug!r} in [cluster] bugs of {fname} "
                                f"(expected one of {known_bugs})")
    for kind in s.faults.weights:
        if kind not in FAULT_KINDS:
            raise ScenarioError(f"unknown fault kind {kind!r} in [faults] weights of {fname} "
                                f"(expected one of {list(FAULT_KINDS)})")
    if s.workload.leader_choice not in ("highest", "any"):
        raise ScenarioError(f"[workload] leader_choice in {fname} must be 'highest' or 'any', "
                            f"got {s.workload.leader_choice!r}")
    if s.cluster.max_size_per_msg < 1 or s.cluster.max_inflight_msgs < 1:
        raise ScenarioError(f"[cluster] max_size_per_msg and max_inflight_msgs in {fname} "
                            "must be >= 1")
    if s.cluster.nodes < 1:
        raise ScenarioError(f"[cluster] nodes in {fname} must be >= 1")
    if s.duration_ms <= 0:
        raise ScenarioError(f"duration_ms in {fname} must be > 0")
    if s.faults.enabled and s.faults.heal_ms + s.liveness_budget_ms > s.duration_ms:
        raise ScenarioError(f"{fname}: duration_ms {s.duration_ms} < faults.heal_ms + "
                            f"liveness_budget_ms ({s.faults.heal_ms + s.liveness_budget_ms})")


def with_bugs(s: Scenario, bugs: list[str]) -> Scenario:
    """The scenario with extra planted bugs (from `--bug NAME`)."""
    merged = tuple(dict.fromkeys(list(s.cluster.bugs) + list(bugs)))
    out = dataclasses.replace(s, cluster=dataclasses.replace(s.cluster, bugs=merged))
    _validate(out, Path(s.source).name)
    return out
