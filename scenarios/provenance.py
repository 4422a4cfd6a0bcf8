"""Which tree made a report: the git commit, and whether the work tree differed from it.

Every writer of `reports/*.md|json` records `provenance()` in its JSON (key `provenance`) and
`markdown_line()` in its Markdown, so a figure can be traced to the code that produced it:

    {"commit": "3a85ca0...", "dirty": true, "changed": ["real/mqtt/broker.py", ...]}

`dirty` means `git status --porcelain` listed changes (tracked or untracked) outside `reports/`
(the writers' own output does not make the code that measured it different). Outside a git
checkout (an sdist, a copied tree) `commit` is "unknown" and `dirty` is None: unknown, not clean.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHANGED_LISTED_MAX = 20  # paths named in a report; the count is always exact
GIT_TIMEOUT_S = 10


def _git(*args: str, root: Path) -> str | None:
    """stdout of `git args` in `root`, or None when git is missing or the tree is no checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def provenance(root: Path = ROOT) -> dict[str, Any]:
    """{"commit", "dirty", "changed_count", "changed"} of the tree at `root` (see module doc)."""
    head = _git("rev-parse", "HEAD", root=root)
    status = _git("status", "--porcelain", "--untracked-files=normal", "--", ".",
                  ":(exclude)reports", root=root)
    if head is None or status is None:
        return {"commit": "unknown", "dirty": None, "changed_count": 0, "changed": []}
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": head.strip(), "dirty": bool(changed), "changed_count": len(changed),
            "changed": changed[:CHANGED_LISTED_MAX]}


def markdown_line(prov: dict[str, Any]) -> str:
    """One Markdown line naming the commit, and saying loudly when the tree was dirty."""
    commit = prov["commit"]
    short = commit[:12] if commit != "unknown" else commit
    if prov["dirty"] is None:
        return f"Made from commit `{short}` (not a git checkout: uncommitted changes unknown)."
    if prov["dirty"]:
        return (f"Made from commit `{short}` **plus uncommitted changes** "
                f"({prov['changed_count']} paths, e.g. {', '.join(prov['changed'][:3])}).")
    return f"Made from commit `{short}` (clean tree)."


def provenance_md(result: dict[str, Any]) -> list[str]:
    """The Markdown lines (line, blank) for a report whose result carries `provenance`; none for
    a result built without it (tests render hand-made results)."""
    prov = result.get("provenance")
    return [markdown_line(prov), ""] if prov is not None else []
