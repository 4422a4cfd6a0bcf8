"""The core stays pure: the rule that lets one component run in both worlds.

Nothing under real/ outside the asyncio shell (real/node/) and the CLI imports asyncio, socket, ssl,
time, threading or simpy, and real/ never imports model/. Checked on the AST (not by grep) so that
`import time as t`, `from asyncio import x` and imports nested in functions are all caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = {"asyncio", "socket", "ssl", "time", "threading", "simpy", "selectors"}
SHELL_PREFIXES = ("real/node/", "real/__main__.py", "real/cli")


def imported_roots(source: str, filename: str) -> list[tuple[int, str]]:
    tree = ast.parse(source, filename=filename)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return sorted(found)


def core_violations(root: Path) -> list[str]:
    problems = []
    for path in sorted((root / "real").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for lineno, module in imported_roots(path.read_text(), rel):
            if module == "model":
                problems.append(f"{rel}:{lineno} imports model (real must never import model)")
            elif module in FORBIDDEN_IN_CORE and not rel.startswith(SHELL_PREFIXES):
                problems.append(f"{rel}:{lineno} imports {module} outside the shell")
    return problems


def test_core_is_pure() -> None:
    assert (ROOT / "real").is_dir()
    assert core_violations(ROOT) == []


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        ("real/raft/x.py", "import time\n", "imports time"),
        ("real/meta/x.py", "def f():\n    from asyncio import sleep\n", "imports asyncio"),
        ("real/raft/x.py", "import socket as s\n", "imports socket"),
        ("real/node/x.py", "import model.world\n", "imports model"),
        ("real/storage/x.py", "import simpy\n", "imports simpy"),
    ],
)
def test_checker_catches_violations(tmp_path: Path, rel: str, source: str, expected: str) -> None:
    target = tmp_path / rel
    target.parent.mkdir(parents=True)
    target.write_text(source)
    problems = core_violations(tmp_path)
    assert len(problems) == 1
    assert expected in problems[0]


def test_shell_may_use_io(tmp_path: Path) -> None:
    target = tmp_path / "real/node/server.py"
    target.parent.mkdir(parents=True)
    target.write_text("import asyncio\nimport socket\nimport time\n")
    assert core_violations(tmp_path) == []
    roots = imported_roots("import a.b, c\nfrom d.e import f\n", "t")
    assert roots == [(1, "a"), (1, "c"), (2, "d")]


# ---- one node type, hosted twice ---------------------------------------------------------------

PARTS = ("RaftNode", "MetaStateMachine", "Broker", "KafkaBroker", "ShardStore", "MetaReplica")
RETIRED_DRIVERS = ("SimBroker", "SimKafkaBroker", "SimMeta", "SimDisk", "SimNode")
"""The drivers of the three simulated worlds before `NodeCore`: each drove a slice of the node."""


def constructed_names(source: str, filename: str) -> list[tuple[int, str]]:
    """Names called as constructors (`X(...)`, `mod.X(...)`) and classes defined, with lines."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            found.append((node.lineno, name))
        elif isinstance(node, ast.ClassDef):
            found.append((node.lineno, f"class {node.name}"))
    return sorted(found)


def host_violations(root: Path) -> list[str]:
    problems = []
    for path in sorted((root / "model").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for lineno, name in constructed_names(path.read_text(), rel):
            if name in PARTS:
                problems.append(f"{rel}:{lineno} builds {name} (only NodeCore may, via SimHost)")
            elif name.removeprefix("class ") in RETIRED_DRIVERS:
                problems.append(f"{rel}:{lineno} defines {name} (retired: use SimHost)")
    return problems


def node_core_builders(root: Path) -> list[str]:
    found = []
    for top in ("real", "model", "scenarios"):
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if any(name == "NodeCore" for _, name in constructed_names(path.read_text(), rel)):
                found.append(rel)
    return found


def test_model_hosts_the_node_instead_of_building_its_parts() -> None:
    assert host_violations(ROOT) == []


def test_node_core_is_built_by_the_two_hosts_only() -> None:
    assert sorted(node_core_builders(ROOT)) == ["model/host.py", "real/node/server.py"]


@pytest.mark.parametrize(("source", "expected"), [
    ("from real.mqtt.broker import Broker\nb = Broker(cfg, clock)\n", "builds Broker"),
    ("import real.storage as s\nx = s.ShardStore({})\n", "builds ShardStore"),
    ("class SimKafkaBroker:\n    pass\n", "defines class SimKafkaBroker"),
    ("class SimNode:\n    pass\n", "defines class SimNode"),
    ("from real.raft import RaftNode\nr = RaftNode(1, c, rng, d, (1,))\n", "builds RaftNode"),
])
def test_host_rule_catches_violations(tmp_path: Path, source: str, expected: str) -> None:
    target = tmp_path / "model" / "x.py"
    target.parent.mkdir(parents=True)
    target.write_text(source)
    problems = host_violations(tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems
