"""The replication bench: its cells and their interleaving, the per-node CPU split, the
per-round rf3/rf1 ratios and targets, the verification of a cell, the report, and a tiny
end-to-end run against a real 3-node cluster with real confluent-kafka workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenarios.bench.cluster import (
    PRODUCE_TARGET,
    cells,
    main,
    markdown,
    node_cpu_fields,
    other_load,
    pair_ratios,
    parse_args,
    round_order,
    targets,
    verified,
)
from scenarios.bench.kafka import summarize


def test_cells_pair_rf1_with_rf3_and_alternate_which_goes_first() -> None:
    chosen = cells(3)
    assert [(c.name, c.rf, c.partitions, c.pair) for c in chosen] == [
        ("rf1-3p", 1, 3, "3p"), ("rf3-3p", 3, 3, "3p"), ("rf1-1p", 1, 1, "1p"),
        ("rf3-1p", 3, 1, "1p")]
    assert [c.name for c in round_order(chosen, 0)] == ["rf1-3p", "rf3-3p", "rf1-1p", "rf3-1p"]
    assert [c.name for c in round_order(chosen, 1)] == ["rf3-3p", "rf1-3p", "rf3-1p", "rf1-1p"]
    assert [c.name for c in cells(1)] == ["rf1-1p", "rf3-1p"]  # one pair only


def test_node_cpu_splits_leaders_from_the_others() -> None:
    got = node_cpu_fields("produce", (2.0, {1: 1.0, 2: 0.5, 3: 0.25}, 3.0), [1, 1])
    assert got == {"node_cpu_produce_pct": [50.0, 25.0, 12.5],
                   "leaders_cpu_produce_pct": 50.0, "others_cpu_produce_pct": 37.5}
    spread = node_cpu_fields("consume", (1.0, {1: 0.1, 2: 0.2, 3: 0.3}, 1.0), [2, 3, 1])
    assert spread["leaders_cpu_consume_pct"] == 60.0 and spread["others_cpu_consume_pct"] == 0.0


def _row(rnd: int, scenario: str, produce: float, consume: float, **more: object) -> dict:
    return {"broker": "twinmq-file-3n", "scenario": scenario, "round": rnd,
            "produce_mb_s": produce, "consume_mb_s": consume, "leaders": "1", "lost": 0,
            "duplicates": 0, "verified": True, **more}


def test_ratios_are_per_round_then_the_median_and_targets_judge_them() -> None:
    chosen = cells(1)
    rows = [_row(0, "rf1-1p", 100.0, 200.0), _row(0, "rf3-1p", 50.0, 190.0, leaders="1"),
            _row(1, "rf3-1p", 30.0, 150.0, leaders="2"), _row(1, "rf1-1p", 100.0, 200.0),
            _row(2, "rf1-1p", 80.0, 100.0),
            {"broker": "twinmq-file-3n", "scenario": "rf3-1p", "round": 2, "error": "boom"}]
    (pair,) = pair_ratios(rows, chosen, 3)
    assert pair["produce_mb_s_ratio_rounds"] == [0.5, 0.3, None]
    assert pair["produce_mb_s_ratio"] == 0.3  # median_low of [0.3, 0.5]: an observed round
    assert pair["consume_mb_s_ratio_rounds"] == [0.95, 0.75, None]
    assert pair["leaders_rf3"] == ["1", "2", None]
    got = {t["metric"]: (t["ratio"], t["met"]) for t in targets([pair])}
    assert got == {"produce_mb_s": (0.3, 0.3 >= PRODUCE_TARGET), "consume_mb_s": (0.75, False)}
    empty = pair_ratios([], chosen, 1)[0]
    assert empty["produce_mb_s_ratio"] is None
    assert all(t["met"] is None for t in targets([empty]))


def test_other_load_is_what_the_nodes_and_the_generator_did_not_use() -> None:
    row = {"machine_cpu_produce_pct": 190.0, "broker_cpu_produce_pct": 100.0,
           "gen_produce_cpu_pct": [30.0, 20.0], "machine_cpu_consume_pct": 80.0,
           "broker_cpu_consume_pct": 30.0, "gen_consume_cpu_pct": 45.5}
    assert other_load(row) == {"other_cpu_produce_pct": 40.0, "other_cpu_consume_pct": 4.5}
    assert other_load({}) == {"other_cpu_produce_pct": None, "other_cpu_consume_pct": None}


def test_a_cell_is_verified_only_when_every_record_came_once() -> None:
    good = {"lost": 0, "unread": 0, "duplicates": 0, "unknown_values": 0, "produce_failed": 0,
            "delivered": 10, "consumed": 10}
    assert verified(good)
    for key, bad in (("lost", 1), ("unread", 2), ("duplicates", 1), ("unknown_values", 1),
                     ("produce_failed", 1), ("consumed", 9), ("lost", None)):
        assert not verified({**good, key: bad}), key
    assert not verified({**good, "delivered": 0, "consumed": 0})


def test_markdown_carries_the_result_table_and_the_cells() -> None:
    chosen = cells(1)
    rows = [_row(0, "rf1-1p", 100.0, 200.0, ack_p50_ms=2.0, ack_p99_ms=4.0,
                 nodes_cpu_ms_per_mb_produce=5.0),
            _row(0, "rf3-1p", 50.0, 190.0, ack_p50_ms=5.0, ack_p99_ms=9.0,
                 node_cpu_produce_pct=[80.0, 20.0, 20.0], nodes_cpu_ms_per_mb_produce=20.0)]
    pairs = pair_ratios(rows, chosen, 1)
    result = {"command": "python -m scenarios.bench.cluster", "machine": {}, "versions": {},
              "config": {"nodes": 3, "storage": "file", "fsync": "group", "mib": 1,
                         "record_bytes": 1024, "records": 1024, "producers": 1,
                         "linger_ms": 5, "min_insync_replicas": 2, "repeat": 1},
              "cells": [{"name": c.name} for c in chosen], "summary": summarize(rows),
              "pairs": pairs, "targets": targets(pairs), "nodes": {}}
    text = markdown(result)
    assert ("| 1 partition, same leader node | 1 | 100.0 | 50.0 | **0.5** | 200.0 | 190.0 | "
            "**0.95** | 2.0/4.0 | 5.0/9.0 | 5.0 / 20.0 | yes |") in text
    assert "- 1p: [0.5]; [0.95]; [4.0]" in text
    assert "- produce MB/s rf3-1p/rf1-1p: 0.5 (goal >= 0.4x): **met**" in text
    assert "- consume MB/s rf3-1p/rf1-1p: 0.95 (goal >= 0.9x): **met**" in text
    assert "| CPU % per node 1, 2, 3 (produce) |  | 80.0, 20.0, 20.0 |" in text
    rows[1].update(duplicates=967, verified=False)
    text = markdown({**result, "summary": summarize(rows)})
    assert "| NO (duplicates 0 / 967, worst round) |" in text


def test_options_smoke_and_rejections() -> None:
    cfg = parse_args(["--smoke", "--mib", "500"])
    assert (cfg.mib, cfg.repeat, cfg.latency_records) == (2, 1, 20)
    assert (parse_args([]).partitions, parse_args([]).fsync) == (3, None)
    with pytest.raises(SystemExit):
        parse_args(["--partitions", "0"])


@pytest.mark.bench
@pytest.mark.smoke
def test_smoke_run_against_a_three_node_cluster(tmp_path: Path) -> None:
    """Three `twinmq serve` nodes, every cell once: each acks=all record is acknowledged and
    consumed once, the RF 1 topics live on the node they were created through, the RF 3
    1-partition topic and its RF 1 partner share their leader."""
    out = tmp_path / "bench-cluster"
    assert main(["--smoke", "--tmp", str(tmp_path), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {r["scenario"]: r for r in result["rows"]}
    assert sorted(rows) == ["rf1-1p", "rf1-3p", "rf3-1p", "rf3-3p"]
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        assert row["verified"] and row["delivered"] == row["consumed"] == 2048, (name, row)
        assert row["produce_mb_s"] > 0 and row["consume_mb_s"] > 0
        assert row["ack_samples"] == 20 and row["ack_p50_ms"] > 0
        assert len(row["node_cpu_produce_pct"]) == 3
        assert row["nodes_cpu_ms_per_mb_produce"] >= 0 and "isr_shrinks_produce" in row
        assert row["other_cpu_produce_pct"] is not None
    assert rows["rf1-3p"]["leaders"] == "1,1,1"
    assert rows["rf1-3p"]["records_replicated_produce"] == 0  # round 0 runs it first
    assert rows["rf3-3p"]["records_replicated_produce"] > 0
    assert sorted(rows["rf3-3p"]["leaders"].split(",")) == ["1", "2", "3"]
    assert rows["rf1-1p"]["leaders"] == rows["rf3-1p"]["leaders"]
    assert rows["rf1-1p"]["bootstrap_node"] == rows["rf3-1p"]["leaders"]
    assert [p["pair"] for p in result["pairs"]] == ["3p", "1p"]
    assert all(p["produce_mb_s_ratio"] is not None for p in result["pairs"])
    assert result["nodes"]["alive_at_end"] == [1, 2, 3]
    text = out.with_suffix(".md").read_text()
    assert "## Result" in text and "1 partition, same leader node" in text
    assert result["provenance"]["commit"][:12] in text
