"""Suite-wide settings.

Hypothesis' default `deadline` (200 ms per example) is a wall-clock assertion: on a loaded
2-core machine it fails examples that are correct. Timing belongs in benchmarks (`-m bench`), so
the suite turns it off for every property test, including those without their own `@settings`.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("twinmq", deadline=None)
settings.load_profile("twinmq")
