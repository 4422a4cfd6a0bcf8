"""The Kafka bench: its record ids and tally, the row arithmetic, the round summary, targets and
report, the readiness probe, a broker that does not start, and a tiny end-to-end run against a
real Tansu broker with real confluent-kafka producer and consumer processes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from scenarios.bench.kafka import (
    Broker,
    Scenario,
    _cell_or_skip,
    api_versions_probe,
    consume_fields,
    free_port,
    main,
    markdown,
    parse_args,
    ratio,
    split_counts,
    summarize,
    targets,
)
from scenarios.bench.kafka_loadgen import (
    RECORD_ID,
    ConsumeStats,
    ProduceJob,
    ProduceStats,
    Tally,
    filler_for,
    record_value,
)
from scenarios.bench.tansu import ensure_tansu

CPU = (2.0, 1.0, 3.0)  # wall s, broker CPU s, machine busy s


def test_record_values_carry_producer_and_sequence() -> None:
    filler = filler_for(1024)
    value = record_value(1, 70_000, filler)
    assert len(value) == 1024 and len(filler) == 1024 - RECORD_ID.size
    assert RECORD_ID.unpack_from(value) == (1, 70_000)
    assert record_value(0, 5, filler)[RECORD_ID.size:] == value[RECORD_ID.size:]
    with pytest.raises(ValueError, match="ProduceJob.record_bytes"):
        ProduceJob("b", "t", 1, 0, 10, record_bytes=8)
    with pytest.raises(ValueError, match="ProduceJob.acks"):
        ProduceJob("b", "t", 1, 0, 10, acks="2")


def test_tally_counts_unique_duplicate_unknown_and_missing() -> None:
    filler = filler_for(64)
    tally = Tally((3, 2))
    got = [tally.add(record_value(p, s, filler)) for p, s in [(0, 0), (0, 2), (1, 1), (0, 0)]]
    assert got == [True, True, True, False]
    assert not tally.add(record_value(2, 0, filler))  # no producer 2
    assert not tally.add(record_value(1, 2, filler))  # producer 1 sent only 0 and 1
    assert not tally.add(None) and not tally.add(b"short")
    assert (tally.unique, tally.duplicates, tally.unknown) == (3, 1, 4)
    assert tally.expected - tally.unique == 2  # (0, 1) and (1, 0) never came


def test_split_counts_is_even_and_complete() -> None:
    assert split_counts(10, 3) == [4, 3, 3]
    assert split_counts(2048, 2) == [1024, 1024]
    assert sum(split_counts(131_071, 4)) == 131_071


def test_produce_rate_spans_all_producers() -> None:
    from scenarios.bench.kafka import produce_fields

    a = ProduceStats(sent=1000, delivered=1000, first_send=10.0, last_delivery=11.0, cpu_s=0.5)
    b = ProduceStats(sent=1000, delivered=990, failed=10, first_send=10.5, last_delivery=12.0,
                     cpu_s=0.75, errors=["Local: Message timed out"], capped=True)
    row = produce_fields([a, b], 1000, CPU)
    assert row["produce_s"] == 2.0  # 10.0 -> 12.0
    assert row["produce_records_s"] == 995.0 and row["produce_mb_s"] == 1.0
    assert row["delivered"] == 1990 and row["produce_failed"] == 10 and row["capped"]
    assert row["gen_produce_cpu_pct"] == [50.0, 50.0]
    assert row["broker_cpu_produce_pct"] == 50.0 and row["machine_cpu_produce_pct"] == 150.0
    assert row["produce_errors"] == ["Local: Message timed out"]


def test_consume_missing_records_are_lost_or_unread() -> None:
    stats = ConsumeStats(received=1001, unique=1000, duplicates=1, start=5.0, first_record=5.01,
                         last_new=6.0, ended_by="idle", per_partition=[501, 500], cpu_s=0.25)
    row = consume_fields(stats, 1010, 1000, CPU)
    assert row["consume_records_s"] == 1000.0 and row["consume_mb_s"] == 1.0
    assert row["lost"] == 10 and row["unread"] == 0 and row["loss_pct"] == 0.99
    assert row["duplicates"] == 1 and row["first_record_ms"] == 10.0
    assert row["gen_consume_cpu_pct"] == 25.0
    stats.ended_by = "deadline"
    row = consume_fields(stats, 1010, 1000, CPU)
    assert row["lost"] is None and row["unread"] == 10 and row["loss_pct"] is None


def _row(broker: str, scenario: str, produce: float, consume: float, **more: object) -> dict:
    return {"broker": broker, "scenario": scenario, "produce_mb_s": produce,
            "consume_mb_s": consume, "lost": 0, "duplicates": 0, **more}


def test_summary_takes_medians_and_the_worst_loss() -> None:
    rows = [_row("tansu", "acks-all", 100.0, 90.0, round=0, consume_ended_by="complete",
                 gen_produce_cpu_pct=[90.0]),
            _row("tansu", "acks-all", 120.0, 80.0, round=1, lost=3, consume_ended_by="idle",
                 gen_produce_cpu_pct=[95.0]),
            _row("tansu", "acks-all", 110.0, 85.0, round=2, consume_ended_by="complete",
                 gen_produce_cpu_pct=[99.0]),
            {"broker": "twinmq-file", "scenario": "acks-all", "round": 0, "error": "boom"},
            _row("twinmq-file", "acks-all", 50.0, 60.0, round=1),
            {"broker": "twinmq-memory", "scenario": "acks-all", "round": 0, "error": "no start"},
            {"broker": "twinmq-memory", "scenario": "acks-all", "round": 1, "error": "skipped"}]
    tansu, file_, memory = summarize(rows)
    assert tansu["produce_mb_s"] == 110.0 and tansu["consume_mb_s"] == 85.0
    assert tansu["lost"] == 3  # the worst round, not the median
    assert tansu["consume_ended_by"] == "complete/idle"
    assert tansu["gen_produce_cpu_pct"] == [95.0]
    assert tansu["produce_mb_s_rounds"] == [100.0, 120.0, 110.0] and tansu["rounds_ok"] == 3
    assert file_["produce_mb_s"] == 50.0 and file_["round_errors"] == ["round 0: boom"]
    assert memory == {"scenario": "acks-all", "broker": "twinmq-memory", "error": "no start",
                      "rounds_ok": 0, "rounds": 2}


def test_targets_ratios_and_markdown() -> None:
    chosen = [Scenario("acks-all", "all"), Scenario("acks-all-2p", "all", producers=2)]
    summary = summarize([
        _row("tansu", "acks-all", 100.0, 80.0, round=0),
        _row("twinmq-memory", "acks-all", 150.0, 40.0, round=0),
        {"broker": "twinmq-file", "scenario": "acks-all", "round": 0, "error": "create topic"},
        _row("tansu", "acks-all-2p", 0.0, 80.0, round=0),
        _row("twinmq-memory", "acks-all-2p", 10.0, 80.0, round=0),
        {"broker": "twinmq-file", "scenario": "acks-all-2p", "round": 0, "error": "skipped"},
    ])
    brokers = ["tansu", "twinmq-memory", "twinmq-file"]
    got = {(t["scenario"], t["broker"], t["metric"]): (t["ratio"], t["met"])
           for t in targets(summary, chosen, brokers)}
    assert got[("acks-all", "twinmq-memory", "produce_mb_s")] == (1.5, True)
    assert got[("acks-all", "twinmq-memory", "consume_mb_s")] == (0.5, False)
    assert got[("acks-all", "twinmq-file", "produce_mb_s")] == (None, None)
    assert got[("acks-all-2p", "twinmq-memory", "produce_mb_s")] == (None, None)  # Tansu 0
    assert got[("acks-all-2p", "twinmq-memory", "consume_mb_s")] == (1.0, True)
    assert ratio(2.0, 3.0) == 0.667 and ratio(None, 1.0) is None
    result = {"command": "python -m scenarios.bench.kafka", "machine": {}, "versions": {},
              "config": {"mib": 1, "record_bytes": 1024, "records": 1024, "partitions": 4,
                         "linger_ms": 5, "batch_size": "d", "compression": "none",
                         "consumer": "assign", "phase_max_s": 20.0},
              "brokers": {b: {"status": "ok"} for b in brokers},
              "scenarios": [{"name": sc.name, "acks": sc.acks, "producers": sc.producers}
                            for sc in chosen],
              "summary": summary, "targets": targets(summary, chosen, brokers)}
    text = markdown(result)
    assert ("| metric | tansu | twinmq-memory | twinmq-file | twinmq-memory/tansu "
            "| twinmq-file/tansu |") in text
    assert "| produce MB/s | 100.0 | 150.0 | error | 1.5 |  |" in text
    assert "| records lost | 0 | 0 | error |  |  |" in text  # no ratio for counts
    assert "*twinmq-file: create topic*" in text
    assert "**met**" in text and "**NOT met**" in text and "**not measured**" in text
    assert "## acks-all-2p: acks=all, 2 producer processes, then 1 consumer process" in text
    result["brokers"]["tansu"] = {"status": "not available", "reason": "offline"}
    assert "| produce MB/s | n/a | 150.0 | error | 1.5 |  |" in markdown(result)


def test_options_smoke_and_rejections() -> None:
    cfg = parse_args(["--smoke", "--mib", "500"])
    assert (cfg.mib, cfg.scenarios, cfg.repeat) == (2, "acks-all", 1)
    assert parse_args([]).brokers == "tansu,twinmq-memory,twinmq-file"
    with pytest.raises(SystemExit):
        parse_args(["--partitions", "0"])
    with pytest.raises(SystemExit, match="--brokers: unknown"):
        main(["--brokers", "kafka", "--out", "/nonexistent/x"])
    with pytest.raises(SystemExit, match="--scenarios: unknown"):
        main(["--brokers", "tansu", "--scenarios", "acks-2", "--out", "/nonexistent/x"])


def test_probe_names_why_a_broker_is_not_ready() -> None:
    why = api_versions_probe(free_port(), timeout_s=0.5)
    assert "refused" in why.lower()


def test_a_broker_that_does_not_start_is_an_error_cell_then_skipped(tmp_path: Path) -> None:
    def factory(work: Path) -> Broker:
        argv = [sys.executable, "-c", "print('no kafka here'); raise SystemExit(3)"]
        return Broker("twinmq-memory", argv, free_port(), work, wait_s=10.0)

    cfg = argparse.Namespace(partitions=4, mib=1, record_bytes=1024)
    skip: dict[str, str] = {}
    first = _cell_or_skip(factory, "twinmq-memory", Scenario("acks-all", "all"), cfg, tmp_path,
                          skip)
    assert first["error"].startswith("broker did not start: process exited with status 3")
    assert "no kafka here" in first["error"] and "start_failed" not in first
    second = _cell_or_skip(factory, "twinmq-memory", Scenario("acks-1", "1"), cfg, tmp_path,
                           skip)
    assert second["error"] == f"skipped: {first['error']}"


@pytest.fixture(scope="module")
def tansu_exe() -> Path:
    exe, message = ensure_tansu()
    if exe is None:
        pytest.skip(f"Tansu is not installed and could not be installed: {message}")
    return exe


@pytest.mark.bench
@pytest.mark.smoke
def test_smoke_run_against_tansu(tansu_exe: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench-kafka"
    assert main(["--smoke", "--brokers", "tansu", "--tmp", str(tmp_path),
                 "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["brokers"]["tansu"]["status"] == "ok"
    assert "memory only" in result["brokers"]["tansu"]["storage"]
    assert result["config"]["records"] == 2048 and result["targets"] == []
    (row,) = result["rows"]
    assert "error" not in row, row
    assert row["sent"] == row["delivered"] == row["consumed"] == 2048
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["produce_failed"] == 0
    assert row["unknown_values"] == 0 and row["consume_ended_by"] == "complete"
    assert row["per_partition"] == [512, 512, 512, 512]
    assert row["produce_mb_s"] > 0 and row["consume_mb_s"] > 0
    assert row["broker_peak_rss_mb"] > 0 and row["machine_cpu_produce_pct"] is not None
    text = out.with_suffix(".md").read_text()
    assert "| records consumed (distinct) | 2048 |" in text
    assert "--smoke --brokers tansu" in text


@pytest.mark.bench
@pytest.mark.smoke
def test_smoke_run_against_twinmq_file(tmp_path: Path) -> None:
    """The product through the bench: `twinmq serve` with the file journal, acks=all, every
    record produced is acknowledged, consumed once, in its partition."""
    out = tmp_path / "bench-kafka"
    assert main(["--smoke", "--brokers", "twinmq-file", "--tmp", str(tmp_path),
                 "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["brokers"]["twinmq-file"]["status"] == "ok", result["brokers"]
    assert result["config"]["records"] == 2048
    (row,) = result["rows"]
    assert "error" not in row, row
    assert row["broker"] == "twinmq-file" and row["scenario"] == "acks-all"
    assert row["sent"] == row["delivered"] == row["consumed"] == 2048
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["produce_failed"] == 0
    assert row["unknown_values"] == 0 and row["consume_ended_by"] == "complete"
    assert row["per_partition"] == [512, 512, 512, 512]
    assert row["produce_mb_s"] > 0 and row["consume_mb_s"] > 0
    # No Tansu in this run: every target is "not measured", none is claimed met or missed.
    assert result["targets"] and all(t["met"] is None for t in result["targets"])
    text = out.with_suffix(".md").read_text()
    assert "| records consumed (distinct) | 2048 |" in text
    assert result["provenance"]["commit"][:12] in text
