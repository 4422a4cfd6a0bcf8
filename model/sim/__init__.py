"""The simulator's building blocks: seeded random streams (rng.py), latency distributions
(dist.py), machine clocks with drift and skew (clock.py), the JSONL trace (trace.py) and the
multi-process seed sweep (sweep.py).
"""
