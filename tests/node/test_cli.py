"""real.__main__.main(argv): usage errors name the culprit and return 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from real.__main__ import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


def test_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(capsys, "serve", "--admin-prot", "1")
    assert status == 2
    assert "unknown argument '--admin-prot'" in err and "--admin-port" in err


def test_bad_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(capsys, "serve", "--admin-port", "eighty")
    assert status == 2 and "argument --admin-port: invalid int value: 'eighty'" in err
    status, err = run(capsys, "serve", "--storage", "tape")
    assert status == 2 and "command line: --storage must be one of memory, file" in err
    status, err = run(capsys, "serve", "--mqtt-port", "-1")
    assert status == 2 and "--mqtt-port must be in [0, 65535], got -1" in err


def test_unknown_config_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[listeners]\nadmin_prot = 8080\n")
    status, err = run(capsys, "serve", "--config", str(path))
    assert status == 2
    assert f"twinmq: error: {path}: unknown key 'listeners.admin_prot' (known:" in err


def test_no_or_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(capsys, )
    assert status == 2 and "a command is required" in err
    status, err = run(capsys, "srve")
    assert status == 2 and "invalid choice: 'srve'" in err


def test_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--admin-port" in out and "--storage" in out and "--config" in out


def test_data_dir_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from real.node.disk import RaftDisk

    disk = RaftDisk(tmp_path / "meta")
    try:
        status, err = run(capsys, "serve", "--data-dir", str(tmp_path), "--admin-port", "0")
    finally:
        disk.close()
    assert status == 1 and "in use by another process" in err


def test_admin_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, err = run(capsys, "serve", "--data-dir", str(tmp_path), "--admin-port", str(port))
    assert status == 1 and f"('127.0.0.1', {port})" in err and "in use" in err
