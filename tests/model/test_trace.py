from __future__ import annotations

import io
import json

from model.sim.trace import Trace, TraceEvent, hash_lines


def test_line_is_plain_compact_json_with_header_first() -> None:
    fields = {"b": True, "a": 3, "s": 'q"u\u00e9', "l": [1, 2], "f": 0.5, "n": None, "z": False}
    ev = TraceEvent(12, 3, "role", tuple(sorted(fields.items())))
    record = {"t": 12, "node": 3, "kind": "role", **dict(sorted(fields.items()))}
    assert ev.to_line() == json.dumps(record, separators=(",", ":"))
    keys = list(json.loads(ev.to_line()))
    assert keys == ["t", "node", "kind", "a", "b", "f", "l", "n", "s", "z"]


def test_hash_covers_lines_and_file_matches() -> None:
    out = io.StringIO()
    t = Trace(out, keep=True)
    t.emit(0, 1, "start", term=0)
    t.emit(5, 0, "heal", pending=2)
    assert t.lines is not None and len(t.lines) == 2
    assert out.getvalue().splitlines() == t.lines
    assert hash_lines(t.lines) == t.hexdigest()
    assert t.kinds == {"start": 1, "heal": 1}
    other = Trace()
    other.emit(0, 1, "start", term=1)
    assert other.hexdigest() != Trace().hexdigest()
