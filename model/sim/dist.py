"""Latency distributions (parameters in ms, samples in integer microseconds).

    {dist = "fixed", ms = 2}
    {dist = "uniform", low_ms = 1, high_ms = 5}
    {dist = "lognormal", median_ms = 2, sigma = 0.5, max_ms = 200}
    {dist = "normal", mean_ms = 3, stddev_ms = 1, min_ms = 0.1}      # clipped at min_ms
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

_PARAMS: dict[str, tuple[str, ...]] = {
    "fixed": ("ms",),
    "uniform": ("low_ms", "high_ms"),
    "lognormal": ("median_ms", "sigma", "max_ms"),
    "normal": ("mean_ms", "stddev_ms", "min_ms"),
}
_OPTIONAL = {"max_ms": 60_000.0, "min_ms": 0.0}


class DistError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Dist:
    kind: str
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0

    @staticmethod
    def parse(spec: object, where: str) -> Dist:
        """Build from a TOML table; errors name `where` and the offending key."""
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return Dist("fixed", float(spec))
        if not isinstance(spec, dict):
            raise DistError(f"{where}: expected a table like {{dist = \"uniform\", ...}}")
        kind = spec.get("dist")
        if kind not in _PARAMS:
            raise DistError(f"{where}: unknown dist {kind!r}, expected one of {sorted(_PARAMS)}")
        names = _PARAMS[kind]
        for key in sorted(spec):
            if key != "dist" and key not in names:
                raise DistError(f"{where}: unknown key {key!r} for dist {kind!r}")
        values = []
        for name in names:
            if name not in spec and name not in _OPTIONAL:
                raise DistError(f"{where}: dist {kind!r} needs key {name!r}")
            value = spec.get(name, _OPTIONAL.get(name))
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise DistError(f"{where}: {name} must be a number >= 0, got {value!r}")
            values.append(float(value))
        dist = Dist(kind, *values)
        if kind == "uniform" and dist.a > dist.b:
            raise DistError(f"{where}: low_ms {dist.a} > high_ms {dist.b}")
        return dist

    def sample_us(self, rng: random.Random) -> int:
        """One sample in integer microseconds (>= 0)."""
        if self.kind == "fixed":
            ms = self.a
        elif self.kind == "uniform":
            ms = rng.uniform(self.a, self.b)
        elif self.kind == "lognormal":
            ms = min(self.c, self.a * math.exp(rng.gauss(0.0, self.b)))
        else:
            ms = max(self.c, rng.gauss(self.a, self.b))
        us = round(ms * 1000)
        assert us >= 0, (self, us)
        return us

    def mean_ms(self) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "lognormal":
            return self.a * math.exp(self.b * self.b / 2)
        return self.a
