"""`scenarios.provenance`: reports name the commit and say when the tree was dirty."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scenarios.provenance import markdown_line, provenance, provenance_md

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "old.md").write_text("old\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    return tmp_path


def test_clean_tree_names_the_commit(repo: Path) -> None:
    prov = provenance(repo)
    assert prov["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert prov["dirty"] is False and prov["changed"] == [] and prov["changed_count"] == 0
    assert markdown_line(prov) == f"Made from commit `{prov['commit'][:12]}` (clean tree)."


def test_modified_and_untracked_files_mark_the_tree_dirty(repo: Path) -> None:
    (repo / "code.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 1\n")
    prov = provenance(repo)
    assert prov["dirty"] is True and prov["changed_count"] == 2
    assert sorted(prov["changed"]) == ["code.py", "new.py"]
    line = markdown_line(prov)
    assert "**plus uncommitted changes** (2 paths" in line and "code.py" in line


def test_reports_written_by_the_run_do_not_make_it_dirty(repo: Path) -> None:
    (repo / "reports" / "old.md").write_text("rewritten\n")
    (repo / "reports" / "new.json").write_text("{}\n")
    assert provenance(repo)["dirty"] is False


def test_outside_a_checkout_the_state_is_unknown_not_clean(tmp_path: Path) -> None:
    prov = provenance(tmp_path)
    assert prov["commit"] == "unknown" and prov["dirty"] is None
    assert "uncommitted changes unknown" in markdown_line(prov)
    assert provenance_md({"provenance": prov}) == [markdown_line(prov), ""]
    assert provenance_md({}) == []
