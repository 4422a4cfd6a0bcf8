"""The boundaries that make promises stay guarded (STYLE habit 24, issue 10).

Each named mutation of scenarios/mutate.py (an early PUBACK at the durable point, a Raft vote
without the log check, a torn tail kept, `durable_end` moved before the fdatasync, a QoS 1 PUBACK
not held, a queued message not logged, and the Kafka/bridge boundaries) is applied as a text patch
to a temporary copy of the tree; the default test selection of its listed test files must fail.
"""

from __future__ import annotations

import pytest

from scenarios.mutate import NAMED, ROOT, run_named

FAST = "a"  # the smoke slice: the MQTT `<` -> `<=` mutation, a few seconds


def test_every_named_mutation_still_applies_to_the_code() -> None:
    """A refactor that moves a guarded line must update NAMED, not silently retire the guard."""
    for m in NAMED:
        text = (ROOT / m.path).read_text()
        assert text.count(m.old) == 1, (
            f"mutation {m.key} ({m.title}): {m.old!r} occurs {text.count(m.old)} times in "
            f"{m.path}; update NAMED in scenarios/mutate.py")
        for test in m.tests:
            assert (ROOT / test).is_file(), (m.key, test)


@pytest.mark.slow
@pytest.mark.parametrize("key", [pytest.param(m.key, marks=[pytest.mark.smoke]) if m.key == FAST
                                 else m.key for m in NAMED])
def test_named_mutation_fails_a_default_test(key: str) -> None:
    (result,) = run_named([key])
    assert result.killed, (
        f"mutation {key} ({result.mutation.title}) survived: pytest exit {result.returncode} on "
        f"{', '.join(result.mutation.tests)}")
