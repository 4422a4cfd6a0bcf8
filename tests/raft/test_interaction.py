"""Golden interaction traces: tests/raft/testdata/*.txt.

Regenerate with `pytest tests/raft --rewrite`, then review the diff by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.raft.interaction import run_script

SCRIPTS = sorted((Path(__file__).parent / "testdata").glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_interaction(path: Path, rewrite: bool) -> None:
    expected, actual = run_script(path, rewrite)
    if not rewrite:
        assert actual == expected
