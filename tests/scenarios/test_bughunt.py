"""Plant-and-find: each planted Raft bug fails its bug-hunt scenario on a recorded seed, and the
same seed without the bug is ok (so the checker caught the bug, not the scenario breaking Raft). The
seeds come from `python -m scenarios.studies.bughunt` (reports/bughunt.md); the chaos test repeats
the hunt from seed 1. Recorded seeds depend on real/raft, real/server and model/: re-run the hunt
after changing them."""

from __future__ import annotations

import pytest

from model.scenario import load, with_bugs
from model.world import World
from scenarios.studies import bughunt

# bug -> (first seed the hunt found failing with a safety outcome, that outcome, a word of the
# checker detail). A bug may stall the cluster (liveness) on an earlier seed: the hunt reports
# both (no-epoch-truncate: liveness at seed 3, safety at 8).
KNOWN: dict[str, tuple[int, str, str]] = {
    "vote-without-log-check": (1, "safety", "leader-completeness"),
    "commit-old-term-by-count": (7, "safety", "leader-completeness"),
    "vote-not-persisted": (15, "safety", "election-safety"),
    "accept-stale-term-append": (2, "safety", "state-machine-safety"),
    "no-truncate-on-conflict": (5, "safety", "log-matching"),
    "commit-beyond-match": (2, "safety", "state-machine-safety"),
    "no-epoch-truncate": (8, "safety", "divergent committed prefixes"),
    "hw-before-isr": (4, "safety", "acknowledged records lost"),
    "isr-not-recorded": (35, "safety", "replication"),
    "unclean-election": (3, "safety", "acknowledged records lost"),
    "acks-downgrade": (4, "safety", "acknowledged record(s) lost"),
    "mqtt-ack-on-append": (1, "safety", "never reached a persistent subscriber"),
    "mqtt-forget-position": (3, "safety", "never reached a persistent subscriber"),
    "mqtt-no-idempotence": (9, "safety", "stored in the cluster log more often"),
    "mqtt-claim-no-wait": (1, "safety", "never reached a persistent subscriber"),
    "mqtt-handover-no-gap": (1, "safety", "never reached a persistent subscriber"),
}


def _run(bug: str, seed: int, planted: bool) -> object:
    scenario = load(bughunt.ROOT / bughunt.HUNTS[bug])
    if planted:
        scenario = with_bugs(scenario, [bug])
    return World(scenario, seed).run()


def test_every_bug_has_a_hunt_and_a_verdict() -> None:
    assert set(bughunt.HUNTS) == set(KNOWN)


@pytest.mark.parametrize("bug", sorted(KNOWN))
def test_recorded_seed_fails_with_the_bug_and_passes_without(bug: str) -> None:
    seed, outcome, word = KNOWN[bug]
    with_bug = _run(bug, seed, planted=True)
    assert with_bug.outcome == outcome, (bug, seed, with_bug.outcome, with_bug.detail)
    assert word in with_bug.detail
    without = _run(bug, seed, planted=False)
    assert without.outcome == "ok", (bug, seed, without.outcome, without.detail)


@pytest.mark.chaos
@pytest.mark.parametrize("bug", sorted(KNOWN))
def test_hunt_from_seed_one_finds_the_bug(bug: str) -> None:
    budget = max(300, 2 * KNOWN[bug][0])
    h = bughunt.hunt(bug, budget, jobs=2)
    assert h.found, f"{bug}: not found in {budget} seeds"
    assert h.safety_seed == KNOWN[bug][0], h
