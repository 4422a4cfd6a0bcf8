"""real/meta is pure: no I/O, clock, threads or randomness; digests ignore PYTHONHASHSEED."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"asyncio", "socket", "ssl", "time", "threading", "simpy", "random", "os", "uuid",
             "model", "real.node", "datetime"}


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def test_meta_imports_nothing_impure() -> None:
    files = sorted((ROOT / "real" / "meta").glob("*.py"))
    assert files
    for path in files:
        for name in imports(path):
            root = name.split(".")[0]
            assert root not in FORBIDDEN and name not in FORBIDDEN, f"{path.name}: {name}"


SCRIPT = """
from real.meta import MetaStateMachine, encode_command
sm = MetaStateMachine()
cmds = [encode_command("node.register", node_id=i, addr=f"h:{i}") for i in range(9, 0, -1)]
cmds += [encode_command("topic.create", name=f"t{i}", shards=2, engine="file",
                        config={"z": i, "a": str(i)}) for i in range(20)]
cmds += [encode_command("config.put", key=k, value=k) for k in ("q", "b", "x", "a")]
for i, c in enumerate(cmds, 1):
    assert sm.apply(i, c).ok
print(sm.digest())
"""


def test_digest_ignores_hash_seed() -> None:
    digests = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        digests.add(out)
    assert len(digests) == 1, digests
