"""The CLI as a function: `model.__main__.main(argv) -> int`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.__main__ import main
from model.sim.trace import hash_lines

ROOT = Path(__file__).resolve().parents[2]
ELECTION = str(ROOT / "scenarios/sim/raft-election.toml")


def _lines(out: str, prefix: str) -> list[str]:
    return [ln[len(prefix):] for ln in out.splitlines() if ln.startswith(prefix)]


def test_run_prints_hash_outcome_and_reproduce(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    assert main(["run", ELECTION, "--seed", "3", "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert _lines(out, "outcome: ") == ["ok"]
    assert _lines(out, "reproduce: ") == [f"twinmq sim run {ELECTION} --seed 3"]
    (digest,) = _lines(out, "trace-hash: ")
    lines = trace.read_text().splitlines()
    assert hash_lines(lines) == digest
    first = json.loads(lines[0])
    assert list(first)[:3] == ["t", "node", "kind"]
    assert any(json.loads(ln)["kind"] == "heal" for ln in lines)


def test_run_with_planted_bug_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    for seed in range(1, 21):  # the first seed that catches the bug
        code = main(["run", ELECTION, "--seed", str(seed), "--bug", "vote-without-log-check"])
        out = capsys.readouterr().out
        if code != 0:
            break
    assert code == 1, out
    assert _lines(out, "outcome: ") == ["safety"]
    assert _lines(out, "reproduce: ")[0].endswith(f"--seed {seed} --bug vote-without-log-check")


def test_scenario_and_usage_errors_exit_4(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "scenario.toml"
    bad.write_text("netwrok = 1\n")
    assert main(["run", str(bad), "--seed", "1"]) == 4
    assert "unknown key 'netwrok' in scenario.toml" in capsys.readouterr().err
    assert main(["run"]) == 4  # FILE missing
    assert main(["mqtt"]) == 4 and main(["kafka", ELECTION, "--seeds", "x"]) == 4
    assert main(["run", ELECTION, "--seed", "1", "--bug", "nope"]) == 4
    assert "unknown bug 'nope'" in capsys.readouterr().err
    assert main(["sweep", ELECTION, "--seeds", "5-1"]) == 4
    assert main(["--help"]) == 0


def test_sweep_writes_results_in_seed_order(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.jsonl"
    assert main(["sweep", ELECTION, "--seeds", "1-4", "--jobs", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [1, 2, 3, 4]
    assert {r["outcome"] for r in rows} == {"ok"}
    assert list(rows[0]) == ["seed", "outcome", "hash", "sim_ms", "wall_s", "detail"]
    assert "ok: 4" in captured.out
    assert "4/4" in captured.err  # the progress bar


def test_sweep_reports_failures_and_stops_on_first(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.jsonl"
    code = main(["sweep", ELECTION, "--seeds", "1-6", "--jobs", "1", "--bug",
                 "vote-without-log-check", "--stop-on-first", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 1
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert rows[-1]["outcome"] == "safety"
    assert all(r["outcome"] == "ok" for r in rows[:-1])
    assert f"reproduce: twinmq sim run {ELECTION} --seed {rows[-1]['seed']} --bug " in text


def test_twinmq_cli_dispatches_to_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    from scenarios.cli import main as twinmq

    assert twinmq(["sim", "run", ELECTION, "--seed", "2"]) == 0
    assert _lines(capsys.readouterr().out, "outcome: ") == ["ok"]


@pytest.mark.chaos
@pytest.mark.smoke
def test_raft_election_sweep_smoke(tmp_path: Path) -> None:
    """The default run's slice of the chaos suite: a few seeds through the parallel sweep."""
    out = tmp_path / "results.jsonl"
    assert main(["sweep", ELECTION, "--seeds", "1-4", "--jobs", "2", "--out", str(out)]) == 0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [1, 2, 3, 4]
    assert {r["outcome"] for r in rows} == {"ok"}


@pytest.mark.chaos
def test_raft_election_1000_seeds_all_ok(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    assert main(["sweep", ELECTION, "--seeds", "1-1000", "--jobs", "2", "--out", str(out)]) == 0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(rows) == 1000
    assert {r["outcome"] for r in rows} == {"ok"}


def test_sweep_writes_results_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", ELECTION, "--seeds", "3,5", "--jobs", "1"]) == 0
    path = tmp_path / "results" / "raft-election-seeds-3_5.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [3, 5]
    assert f"results: {Path('results') / path.name}" in capsys.readouterr().out


def test_run_without_seed_uses_the_scenarios_seed(capsys: pytest.CaptureFixture[str]) -> None:
    from model.scenario import load

    seed = load(ELECTION).seed
    assert main(["run", ELECTION]) == 0
    out = capsys.readouterr().out
    assert _lines(out, "reproduce: ") == [f"twinmq sim run {ELECTION} --seed {seed}"]
    assert main(["run", ELECTION, "--seed", str(seed)]) == 0
    assert _lines(capsys.readouterr().out, "trace-hash: ") == _lines(out, "trace-hash: ")


def test_one_cli_runs_every_scenario_in_the_one_world(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """MQTT, Kafka and Raft scenarios all go through `run` and `sweep`; `mqtt` and `kafka` are
    aliases of `run` (with --seeds: of `sweep`) for any scenario."""
    root = Path(__file__).resolve().parents[2] / "scenarios" / "sim"
    mqtt, kafka = str(root / "mqtt-sim.toml"), str(root / "kafka-sim.toml")
    assert main(["run", mqtt, "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert f"scenario: mqtt-sim ({mqtt}) seed 2" in out
    (stats,) = _lines(out, "stats: ")
    assert json.loads(stats)["mqtt"]["outcome"] == "ok" and "kafka" not in json.loads(stats)
    monkeypatch.chdir(tmp_path)
    assert main(["kafka", kafka, "--seeds", "1-2", "--jobs", "1"]) == 0
    assert "seeds: 2 of 2  ok: 2" in capsys.readouterr().out
    rows = [json.loads(ln) for ln in
            (tmp_path / "results" / "kafka-sim-seeds-1-2.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["outcome"]) for r in rows] == [(1, "ok"), (2, "ok")]
    assert main(["run", mqtt, "--seed", "1", "--bug", "x"]) == 4
    assert main(["run", ELECTION, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert main(["mqtt", ELECTION, "--seed", "3"]) == 0  # an alias: the same run, any scenario
    alias = capsys.readouterr().out
    assert _lines(alias, "trace-hash: ") == _lines(out, "trace-hash: ")
    assert _lines(alias, "reproduce: ") == [f"twinmq sim run {ELECTION} --seed 3"]


def test_kafka_broker_bug_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """--bug takes the planted Kafka broker bugs too: the checker fails the run (exit 1) and
    the reproduce line carries the bug."""
    kafka = str(Path(__file__).resolve().parents[2] / "scenarios" / "sim" / "kafka-sim.toml")
    assert main(["kafka", kafka, "--seed", "1", "--bug", "drop-acked-batch"]) == 1
    out = capsys.readouterr().out
    assert _lines(out, "outcome: ") == ["safety"]
    assert _lines(out, "detail: ")[0].startswith("kafka: ")
    assert _lines(out, "reproduce: ") == [
        f"twinmq sim run {kafka} --seed 1 --bug drop-acked-batch"]
