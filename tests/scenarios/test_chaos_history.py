"""The Kafka-log checker of the real-cluster chaos drills: each anomaly it names, from
hand-made histories (and a clean one that must pass)."""

from __future__ import annotations

import json
from pathlib import Path

from scenarios.chaos.history import History, check_kafka


def sends(h: History, *items: tuple[str, str, int, int]) -> None:
    for value, outcome, p, off in items:
        h.add("producer", "invoke", "send", {"value": value, "partition": p})
        op = {"value": value, "partition": p}
        if outcome == "ok":
            op["offset"] = off
        h.add("producer", outcome, "send", op)


def test_a_clean_history_passes_and_dumps_as_json_lines(tmp_path: Path) -> None:
    h = History()
    sends(h, ("a", "ok", 0, 0), ("b", "ok", 0, 1), ("c", "info", 1, -1), ("d", "fail", 1, -1))
    v = check_kafka(h, [[(0, 0, b"a"), (0, 1, b"b"), (1, 0, b"c")]],
                    {"c1": [(0, 0), (0, 1), (1, 0)]})
    assert v.ok and v.summary()["acked"] == 2 and v.unknown == 1 and v.failed == 1
    assert v.unseen == 0 and v.polled == 3
    h.dump(tmp_path / "h.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["invoke", "ok", "invoke", "ok", "invoke", "info",
                                          "invoke", "fail"]


def test_each_anomaly_is_named() -> None:
    h = History()
    sends(h, ("a", "ok", 0, 0), ("lost", "ok", 0, 1), ("moved", "ok", 0, 2), ("u", "info", 0, -1))
    reads = [[(0, 0, b"a"), (0, 3, b"moved"), (0, 4, b"a")], [(0, 0, b"other")]]
    v = check_kafka(h, reads, {"c": [(0, 0), (0, 4), (0, 3)]})
    assert not v.ok
    assert [x["value"] for x in v.lost] == ["lost"]
    assert [x["value"] for x in v.duplicates] == [b"a"]
    assert any("values" in x for x in v.inconsistent)  # offset 0 read as two values
    assert any("acked" in x for x in v.inconsistent)  # acked at 2, read at 3
    assert v.skips and v.skips[0]["skipped"] == [3]
    assert v.nonmonotonic and v.nonmonotonic[0]["got"] == 3
    assert v.unseen == 1


def test_an_ack_without_an_offset_is_checked_for_presence_only() -> None:
    """librdkafka may report a delivered record with no offset (None): it must still be read
    somewhere (else lost), and it is counted, not compared with a place."""
    h = History()
    h.add("producer", "ok", "send", {"value": "a", "partition": 0, "offset": None})
    h.add("producer", "ok", "send", {"value": "gone", "partition": 0, "offset": None})
    v = check_kafka(h, [[(0, 5, b"a")]], {})
    assert v.no_offset == 1 and v.summary()["no_offset"] == 1
    assert [op["value"] for op in v.lost] == ["gone"] and not v.inconsistent
