from __future__ import annotations

import pytest

from scenarios.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "serve" in out
    assert "sim run" in out
    assert "sim mqtt" in out and "sim kafka" in out  # aliases of sim run (model/__main__.py)


def test_unknown_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["srve"]) == 2
    err = capsys.readouterr().err
    assert "'srve'" in err
    assert main([]) == 2
