"""Every notebook under notebooks/ runs top to bottom on a fresh kernel (`make notebooks`).

A notebook is a document that imports the project, so it rots silently when an API moves; this
executes each one with nbclient (the project's venv Python, `ipykernel`) and fails on the first
cell that raises, naming the notebook and the cell. Notebooks assert what they show, so a cell
that computes the wrong thing fails too. `notebooks/` must not be empty: a target that runs no
notebook would pass whatever happened to them.

The notebooks that finish within SMOKE_SECONDS also run in the default suite (`smoke`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMOKE = frozenset({"raft-elections.ipynb"})  # about 5-10 s on 2 loaded cores
CELL_TIMEOUT_S = 300

pytestmark = pytest.mark.notebooks


@pytest.mark.smoke
def test_notebooks_exist() -> None:
    assert NOTEBOOKS, f"no notebooks/*.ipynb under {ROOT}: `make notebooks` would test nothing"
    assert SMOKE <= {nb.name for nb in NOTEBOOKS}, SMOKE


@pytest.mark.parametrize("path", [
    pytest.param(nb, id=nb.name, marks=[pytest.mark.smoke] if nb.name in SMOKE else [])
    for nb in NOTEBOOKS])
def test_notebook_executes(path: Path) -> None:
    import nbformat  # dev dependencies: a venv without them fails here, loudly
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cell"
    # The kernel is this interpreter (its venv holds the project), started in the repo root with
    # this process's PYTHONPATH, so a worktree's code wins as it does for the rest of the suite.
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    client.kernel_manager_class = _this_python_kernel_manager()
    try:
        client.execute(env={**os.environ, "MPLBACKEND": "Agg"})
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed:\n{exc}", pytrace=False)
    errors = [o for c in code_cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    assert all(c.get("execution_count") for c in code_cells), "a code cell did not run"


def _this_python_kernel_manager() -> type:
    """A KernelManager that always starts `sys.executable -m ipykernel_launcher`, whatever
    kernelspecs the machine has installed (a system `python3` spec would lack the project)."""
    from jupyter_client.manager import KernelManager

    class ThisPythonKernelManager(KernelManager):
        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, *cmd[1:]] if cmd and "ipykernel" in " ".join(cmd) else cmd

    return ThisPythonKernelManager
