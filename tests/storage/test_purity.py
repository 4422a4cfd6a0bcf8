"""real/storage stays pure: beyond tests/test_architecture.py, no file, OS or random access."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "real" / "storage"
FORBIDDEN = sorted(["asyncio", "io", "os", "pathlib", "random", "selectors", "shutil", "simpy"])
FORBIDDEN += sorted(["socket", "ssl", "tempfile", "threading", "time", "uuid"])
FORBIDDEN_CALLS = sorted(["open", "input", "print"])


def problems_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=path.name)
    found = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module.split(".")[0]]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                found.append(f"{path.name}:{node.lineno} calls {node.func.id}()")
        found += [f"{path.name}:{node.lineno} imports {m}" for m in modules if m in FORBIDDEN]
    return found


def test_storage_package_is_pure() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 6, files
    assert [p for f in files for p in problems_in(f)] == []
