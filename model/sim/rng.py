"""Seed derivation: one master `random.Random(seed)` hands out one stream per component.

Streams are derived in the order components register (a fixed order, the world builds them in a
fixed order), never from `hash(str)`, so `PYTHONHASHSEED` cannot change a run. Registering a name
twice is an error: two components silently sharing a stream would couple their behaviour.
"""

from __future__ import annotations

import random


class SeedTree:
    """`derive(name)` returns a fresh `random.Random` seeded from the master stream."""

    def __init__(self, seed: int) -> None:
        assert isinstance(seed, int), f"seed must be an int, got {type(seed).__name__}"
        self.seed = seed
        self._master = random.Random(seed)  # noqa: S311 (simulation, not crypto)
        self._names: dict[str, int] = {}

    def derive(self, name: str) -> random.Random:
        assert name not in self._names, f"rng stream {name!r} derived twice"
        child_seed = self._master.getrandbits(64)
        self._names[name] = child_seed
        assert len(self._names) >= 1
        return random.Random(child_seed)  # noqa: S311

    def names(self) -> list[str]:
        """Stream names in derivation order (for debugging a divergence)."""
        return list(self._names)
