"""Mutation testing of the boundaries that make promises (STYLE habit 24).

Two halves, both on a temporary copy of the tree (the working tree is never touched):

- `named`: the six mutations issue 10 names (an early PUBACK at the durable point, a Raft vote
  without the log check, a journal that keeps a torn tail, `durable_end` moved before the
  fdatasync, a QoS 1 PUBACK not held at all, a queued message not logged) plus the Kafka and
  bridge boundaries, each a text patch. Each must make the default test selection (pyproject
  `addopts`) fail on the listed tests. `tests/test_mutations.py` runs these.
- `cosmic` (`make mutate`): cosmic-ray over the durability and acknowledgement functions listed in
  `[tool.twinmq-mutate]` of pyproject.toml, each group against its own fast test files, and a
  report (reports/mutate.md) listing every surviving mutant with file:line and the mutated text.
  The report's hand-written `## Dispositions` section (why each survivor is harmless, or which
  test now kills it) is kept across runs.

    python -m scenarios.mutate named [--only a,b]
    python -m scenarios.mutate cosmic [--group mqtt] [--jobs 2] [--out reports/mutate.md]

The cosmic-ray session databases stay in `.mutate/<group>.sqlite` (git-ignored) for inspection.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutate"  # cosmic-ray session databases, one per group (git-ignored)
COPIED = ("real", "model", "scenarios", "tests", "pyproject.toml")
# -x: a mutant is killed by its first failure; xdist and hypothesis's pytest plugin only cost
# start-up time here (tests that use hypothesis still import and run it).
PYTEST = ("-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist",
          "-p", "no:hypothesispytest")
TEST_TIMEOUT_S = 600


@dataclass(frozen=True, slots=True)
class Mutation:
    """One hand-written mutant: replace `old` (exactly once in `path`) by `new`."""

    key: str
    title: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


NAMED: tuple[Mutation, ...] = (
    Mutation(
        "a", "MQTT acks released AT the durable point (< becomes <=)",
        "real/mqtt/broker.py",
        "while pending and pending[0][0] < durable and (",
        "while pending and pending[0][0] <= durable and (",
        ("tests/mqtt/test_durable_boundaries.py", "tests/mqtt/test_broker.py")),
    Mutation(
        "b", "Raft vote granted without the log up-to-date check",
        "real/raft/node.py",
        "if can_vote and (Bug.VOTE_WITHOUT_LOG_CHECK in self._bugs or log_ok):",
        "if can_vote:",
        ("tests/raft/test_vote_boundaries.py", "tests/raft/test_node.py")),
    Mutation(
        "c", "journal recovery keeps a torn tail",
        "real/storage/journal.py",
        "if result.valid_bytes < size:  # a torn tail: cut it off, durably",
        "if result.valid_bytes < 0:  # mutant: the torn tail stays",
        ("tests/storage/test_journal_recovery.py",)),
    Mutation(
        "d", "durable_end moved before the fdatasync (background group commit)",
        "real/storage/journal.py",
        "        self._unsynced_since_ms = None\n        self._job = SyncJob(",
        "        self._unsynced_since_ms = None\n        self._durable_end = self.end_offset()\n"
        "        self._job = SyncJob(",
        ("tests/storage/test_journal_background.py", "tests/storage/test_sync_boundaries.py")),
    Mutation(
        "d2", "durable_end moved before the fdatasync (group commit in place)",
        "real/storage/journal.py",
        "            self.fs.sync(self._segments[-1].path)\n"
        "            self._durable_end = self.end_offset()",
        "            self._durable_end = self.end_offset()\n"
        "            self.fs.sync(self._segments[-1].path)",
        ("tests/storage/test_journal_recovery.py", "tests/storage/test_sync_boundaries.py")),
    Mutation(
        "e", "a QoS 1 PUBACK not held for durability",
        "real/mqtt/broker.py",
        "and offset >= self._durable_end()) or (",
        "and offset >= self._durable_end() and qos == 2) or (",
        ("tests/mqtt/test_durable_boundaries.py", "tests/mqtt/test_broker.py")),
    Mutation(
        "f", "a message queued for an offline persistent session not logged",
        "real/mqtt/broker.py",
        "if s.persistent and (d.qos or",
        "if s.persistent and s.conn_id is not None and (d.qos or",
        ("tests/mqtt/test_durable_boundaries.py", "tests/mqtt/test_broker.py")),
    # Beyond issue 10's list: the other acknowledgement boundaries, off by one the unsafe way.
    Mutation(
        "g", "Kafka produce replies one shard record early",
        "real/kafka/broker.py",
        "            if have < end:",
        "            if have < end - 1:",
        ("tests/kafka/test_produce_boundaries.py", "tests/kafka/test_broker.py")),
    Mutation(
        "h", "the bridge does not wait for the Kafka copy before the MQTT ack",
        "real/kafka/bridge.py",
        "return self.kafka._durable(token)",
        "return True",
        ("tests/kafka/test_produce_boundaries.py", "tests/kafka/test_broker.py")),
)


# ------------------------------------------------------------------------------------ the copy


def copy_tree(dest: Path, src: Path = ROOT) -> Path:
    """The parts of the tree tests import, without caches; returns `dest`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in COPIED:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=ignore)
        else:
            shutil.copy2(path, dest / name)
    return dest


def test_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def run_tests(tree: Path, tests: Sequence[str], python: str = sys.executable) -> tuple[int, str]:
    """pytest (the default marker selection from pyproject) on `tests` inside `tree`."""
    proc = subprocess.run([python, *PYTEST, *tests], cwd=tree, env=test_env(tree),
                          capture_output=True, text=True, timeout=TEST_TIMEOUT_S, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def patch(tree: Path, m: Mutation) -> str:
    """Applies `m` inside `tree`; returns the original text (for `restore`)."""
    path = tree / m.path
    text = path.read_text()
    count = text.count(m.old)
    if count != 1:
        raise SystemExit(f"mutation {m.key} ({m.title}): expected the text {m.old!r} exactly once "
                         f"in {m.path}, found it {count} times; update NAMED in "
                         f"scenarios/mutate.py to the code as it is now")
    path.write_text(text.replace(m.old, m.new))
    return text


@dataclass(slots=True)
class NamedResult:
    mutation: Mutation
    returncode: int
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def killed(self) -> bool:
        return self.returncode == 1 and bool(self.failed)


def failed_tests(output: str) -> list[str]:
    return [line.split(" ", 2)[1] for line in output.splitlines()
            if line.startswith(("FAILED ", "ERROR ")) and len(line.split(" ")) > 1]


def run_named(keys: Sequence[str] | None = None, python: str = sys.executable,
              src: Path = ROOT) -> list[NamedResult]:
    """Each named mutation on one temporary copy (patched, tested, restored in turn)."""
    chosen = [m for m in NAMED if keys is None or m.key in keys]
    assert chosen, f"no named mutation among {keys}; known: {[m.key for m in NAMED]}"
    results = []
    with tempfile.TemporaryDirectory(prefix="twinmq-mutate-") as tmp:
        tree = copy_tree(Path(tmp), src)
        for m in chosen:
            original = patch(tree, m)
            started = time.monotonic()
            try:
                code, out = run_tests(tree, m.tests, python)
            finally:
                (tree / m.path).write_text(original)
            results.append(NamedResult(m, code, failed_tests(out), time.monotonic() - started))
    return results


# ------------------------------------------------------------------------------- cosmic-ray run


@dataclass(frozen=True, slots=True)
class Group:
    """Functions (`path::name`, the innermost def enclosing a mutation) and their tests."""

    name: str
    targets: tuple[str, ...]
    tests: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Settings:
    operators: tuple[str, ...]
    timeout_s: float
    groups: tuple[Group, ...]


def load_settings(pyproject: Path = ROOT / "pyproject.toml") -> Settings:
    data = tomllib.loads(pyproject.read_text()).get("tool", {}).get("twinmq-mutate")
    if data is None:
        raise SystemExit(f"{pyproject}: no [tool.twinmq-mutate] table")
    groups = []
    for i, g in enumerate(data.get("group", [])):
        for key in ("name", "targets", "tests"):
            if key not in g:
                raise SystemExit(f"{pyproject}: tool.twinmq-mutate.group[{i}] lacks '{key}'")
        groups.append(Group(g["name"], tuple(g["targets"]), tuple(g["tests"])))
    for g in groups:
        for target in g.targets:
            path, sep, name = target.partition("::")
            if not sep or not (ROOT / path).is_file():
                raise SystemExit(f"{pyproject}: group {g.name!r}: target {target!r} must be "
                                 f"'path/to/file.py::function' with an existing file")
            if name not in defined_names(ROOT / path):
                raise SystemExit(f"{pyproject}: group {g.name!r}: no def {name!r} in {path}")
    return Settings(tuple(data.get("operators", [])), float(data.get("timeout_s", 120)),
                    tuple(groups))


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


@dataclass(frozen=True, slots=True)
class Mutant:
    group: str
    path: str
    line: int
    function: str
    operator: str
    outcome: str  # killed | survived | incompetent (or the worker outcome if no test ran)
    before: str
    after: str


def cosmic_config(group: Group, settings: Settings, python: str) -> str:
    paths = sorted({t.partition("::")[0] for t in group.targets})
    tests = " ".join(group.tests)
    command = f"{python} {' '.join(PYTEST)} {tests}"
    quoted = ", ".join(f'"{p}"' for p in paths)
    return (f'[cosmic-ray]\nmodule-path = [{quoted}]\ntimeout = {settings.timeout_s}\n'
            f'excluded-modules = []\ntest-command = "{command}"\n\n'
            f'[cosmic-ray.distributor]\nname = "local"\n')


def keep_only_targets(session: Path, group: Group, operators: Sequence[str]) -> int:
    """Drops the work items outside the group's functions and operators; returns how many stay."""
    wanted = {(t.partition("::")[0], t.partition("::")[2]) for t in group.targets}
    db = sqlite3.connect(session)
    try:
        rows = db.execute("SELECT job_id, module_path, definition_name, operator_name "
                          "FROM mutation_specs").fetchall()
        allowed = re.compile("|".join(f"(?:{o})" for o in operators))
        drop = [job for job, path, name, op in rows
                if (path, name) not in wanted or not allowed.fullmatch(op)]
        db.executemany("DELETE FROM mutation_specs WHERE job_id = ?", [(j,) for j in drop])
        db.executemany("DELETE FROM work_items WHERE job_id = ?", [(j,) for j in drop])
        db.commit()
        (left,) = db.execute("SELECT COUNT(*) FROM work_items").fetchone()
    finally:
        db.close()
    return left


def read_mutants(session: Path, group: Group, tree: Path) -> list[Mutant]:
    db = sqlite3.connect(session)
    try:
        rows = db.execute(
            "SELECT m.module_path, m.start_pos_row, m.definition_name, m.operator_name, "
            "r.test_outcome, r.worker_outcome, r.diff FROM mutation_specs m "
            "JOIN work_results r ON r.job_id = m.job_id").fetchall()
    finally:
        db.close()
    out = []
    for path, line, name, op, test_outcome, worker_outcome, diff in rows:
        before, after = changed_lines(diff or "", tree / path, line)
        # stored as enum names (SURVIVED, KILLED, INCOMPETENT; worker: NORMAL, EXCEPTION, ...)
        outcome = (test_outcome or worker_outcome or "unknown").lower()
        out.append(Mutant(group.name, path, line, name, op.removeprefix("core/"), outcome,
                          before, after))
    return sorted(out, key=lambda m: (m.path, m.line, m.operator))


def changed_lines(diff: str, path: Path, line: int) -> tuple[str, str]:
    minus = [x[1:].strip() for x in diff.splitlines()
             if x.startswith("-") and not x.startswith("---")]
    plus = [x[1:].strip() for x in diff.splitlines()
            if x.startswith("+") and not x.startswith("+++")]
    if not minus:
        source = path.read_text().splitlines()
        minus = [source[line - 1].strip()] if 0 < line <= len(source) else []
    return " / ".join(minus), " / ".join(plus)


def run_group(group: Group, settings: Settings, python: str, log: Callable[[str], None] = print,
              count_only: bool = False) -> tuple[list[Mutant], float, str]:
    """cosmic-ray init, the target filter and exec for one group, on its own temporary copy;
    returns the mutants, the wall time and the revision the copy was taken from."""
    cosmic = [python, "-m", "cosmic_ray.cli"]
    with tempfile.TemporaryDirectory(prefix=f"twinmq-mutate-{group.name}-") as tmp:
        revision = git_revision()
        tree = copy_tree(Path(tmp))
        WORK.mkdir(exist_ok=True)  # sessions outlive the copy: inspect or resume them there
        config, session = tree / "cosmic-ray.toml", WORK / f"{group.name}.sqlite"
        session.unlink(missing_ok=True)
        config.write_text(cosmic_config(group, settings, python))
        env = test_env(tree)
        started = time.monotonic()
        code, out = (0, "") if count_only else run_tests(tree, group.tests, python)
        if code != 0:
            raise SystemExit(f"group {group.name}: the tests fail without a mutation:\n{out}")
        subprocess.run([*cosmic, "init", str(config), str(session)], cwd=tree, env=env,
                       check=True, capture_output=True)
        left = keep_only_targets(session, group, settings.operators)
        log(f"mutate: group {group.name}: {left} mutants in {len(group.targets)} functions")
        if count_only:
            return [], 0.0, revision
        subprocess.run([*cosmic, "exec", str(config), str(session)], cwd=tree, env=env,
                       check=True, capture_output=True)
        found = read_mutants(session, group, tree)
        seconds = time.monotonic() - started
        survived = sum(m.outcome == "survived" for m in found)
        log(f"mutate: group {group.name}: {len(found)} run, {survived} survived, {seconds:.0f} s")
        return found, seconds, revision


def run_cosmic(settings: Settings, groups: Sequence[str] | None, python: str,
               log: Callable[[str], None] = print,
               count_only: bool = False, jobs: int = 1,
               ) -> tuple[list[Mutant], dict[str, float], dict[str, str]]:
    """Every selected group, `jobs` groups at a time (each runs its mutants one by one)."""
    chosen = [g for g in settings.groups if not groups or g.name in groups]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = list(pool.map(lambda g: run_group(g, settings, python, log, count_only), chosen))
    mutants = [m for found, _, _ in done for m in found]
    seconds = {g.name: secs for g, (_, secs, _) in zip(chosen, done, strict=True)}
    trees = {g.name: rev for g, (_, _, rev) in zip(chosen, done, strict=True)}
    return mutants, seconds, trees


# ------------------------------------------------------------------------------------ reports

DISPOSITIONS = "## Dispositions"


def render_report(mutants: Sequence[Mutant], seconds: dict[str, float], settings: Settings,
                  previous: str, trees: dict[str, str]) -> str:
    lines = ["# Mutation testing of the durability and acknowledgement paths", "",
             "Made by `make mutate` (`python -m scenarios.mutate cosmic`, cosmic-ray). Each group "
             "mutates only the functions listed in `[tool.twinmq-mutate]` of pyproject.toml and "
             "runs only its own tests (default selection) on a copy of the tree taken when the "
             f"group started (column tree); operators: {', '.join(settings.operators)}.", "",
             "| group | tree | functions | mutants | killed | survived | incompetent | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    kept_groups, kept_survivors = _previous_rows(previous, set(seconds), settings)
    for group in settings.groups:
        if group.name not in seconds:
            lines += kept_groups.get(group.name, [])
            continue
        mine = [m for m in mutants if m.group == group.name]
        count = {k: sum(m.outcome == k for m in mine) for k in ("survived", "incompetent")}
        killed = len(mine) - count["survived"] - count["incompetent"]
        lines.append(f"| {group.name} | {trees.get(group.name, '?')} | {len(group.targets)} | "
                     f"{len(mine)} | {killed} | "
                     f"{count['survived']} | {count['incompetent']} | "
                     f"{seconds[group.name]:.0f} |")
    lines += ["", f"Sum of the groups' wall times: {sum(seconds.values()):.0f} s.", "",
              "## Survivors", ""]
    survivors = [m for m in mutants if m.outcome == "survived"]
    rows = [[f"{m.path}:{m.line}", m.function, m.operator, f"`{_cell(m.before)}`",
             f"`{_cell(m.after)}`"] for m in survivors] + kept_survivors
    if not rows:
        lines.append("None.")
    else:
        lines += ["| # | where | function | operator | original | mutated |",
                  "|---:|---|---|---|---|---|"]
        for i, cells in enumerate(rows, 1):
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
    kept = previous.partition(DISPOSITIONS)
    tail = (DISPOSITIONS + kept[2]) if kept[1] else (
        f"{DISPOSITIONS}\n\n(For each survivor above: the test that now kills it, or why it "
        f"is equivalent or harmless.)\n")
    return "\n".join(lines) + "\n\n" + tail.rstrip("\n") + "\n"


def _previous_rows(previous: str, rerun: set[str], settings: Settings
                   ) -> tuple[dict[str, list[str]], list[list[str]]]:
    """From the previous report: the table rows of the groups not run this time, and their
    survivors (without their numbers), so a run of some groups keeps the others' results."""
    files = {g.name: {t.partition("::")[0] for t in g.targets} for g in settings.groups}
    groups: dict[str, list[str]] = {}
    survivors: list[list[str]] = []
    for line in previous.partition(DISPOSITIONS)[0].splitlines():
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 8 and cells[0] in files and cells[0] not in rerun:
            groups.setdefault(cells[0], []).append(line)
        elif len(cells) == 6 and cells[0].isdigit():
            path = cells[1].rpartition(":")[0]
            owners = [name for name, paths in files.items() if path in paths]
            if owners and not set(owners) & rerun:
                survivors.append(cells[1:])
    return groups, survivors


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")[:110]


def git_revision(root: Path = ROOT) -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=False)
        return proc.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--", "real", "tests", "pyproject.toml")
    return f"commit {commit}" + (" (dirty tree: uncommitted changes)" if dirty else "")


# ------------------------------------------------------------------------------------ the CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.mutate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    named = sub.add_parser("named", help="the six named mutations must each fail a test")
    named.add_argument("--only", default="", help="comma-separated keys (default: all)")
    cosmic = sub.add_parser("cosmic", help="cosmic-ray over [tool.twinmq-mutate] groups")
    cosmic.add_argument("--group", action="append", help="run only this group (repeatable)")
    cosmic.add_argument("--out", default="reports/mutate.md")
    cosmic.add_argument("--count", action="store_true", help="only count the mutants")
    cosmic.add_argument("--jobs", type=int, default=1, help="groups run at once (default 1)")
    args = parser.parse_args(argv)
    if args.command == "named":
        keys = [k for k in args.only.split(",") if k] or None
        results = run_named(keys)
        for r in results:
            verdict = "killed" if r.killed else f"SURVIVED (pytest exit {r.returncode})"
            print(f"{r.mutation.key}: {r.mutation.title}: {verdict} in {r.seconds:.1f} s"
                  + (f" by {r.failed[0]}" if r.failed else ""))
        return 0 if all(r.killed for r in results) else 1
    settings = load_settings()
    mutants, seconds, trees = run_cosmic(settings, args.group, sys.executable,
                                         count_only=args.count, jobs=args.jobs)
    if args.count:
        return 0
    out = ROOT / args.out
    previous = out.read_text() if out.exists() else ""
    out.write_text(render_report(mutants, seconds, settings, previous, trees))
    survived = sum(m.outcome == "survived" for m in mutants)
    print(f"mutate: {len(mutants)} mutants, {survived} survived; report in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
