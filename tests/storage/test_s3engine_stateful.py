"""The reusable engine machine (tests/storage/stateful.py) over `S3Engine`.

Over `SimObjectStore` in the default run: immediate PUTs with tiny objects and batches (many
objects, many batches per object), a lingering buffer driven by a fake clock with a tiny footer
cache and footer read size (LRU misses, second footer GETs), and a store that fails 20% of
requests transiently; manifests written every 1-3 objects (so opens trust them between
truncates, retention and crashes). Every variant also crashes: a crash abandons the engine (its
buffer is lost) and opens a new one on the same store, which keeps every completed PUT.
Over a real SeaweedFS (`integration`; a short run is also `smoke`).
"""

from __future__ import annotations

import itertools
import random

import pytest

from model.devices.objstore import SimObjectStore, SimObjectStoreConfig
from real.storage.s3engine import S3Engine, S3EngineConfig
from tests.storage.stateful import FakeClock, make_engine_machine


def crash(engine: S3Engine) -> S3Engine:
    """A machine crash: the engine object (and its buffer) is gone; the store keeps its objects."""
    crash_store = getattr(engine.store, "crash", None)
    if crash_store is not None:
        crash_store()
    return S3Engine(engine.store, engine.prefix, engine.clock, engine.config)


TINY = S3EngineConfig(flush_bytes=120, index_interval_bytes=50, records_max_per_append=4)
TestS3Immediate = make_engine_machine(
    lambda: S3Engine(SimObjectStore(random.Random(1)), "t/shard-0", config=TINY),
    max_examples=40,
    crash=crash,
)

LINGER_CLOCK = FakeClock()
LINGER = S3EngineConfig(
    linger_ms=5,
    flush_bytes=300,
    index_interval_bytes=60,
    footer_cache_max=1,
    footer_read_bytes=40,
)
TestS3Linger = make_engine_machine(
    lambda: S3Engine(SimObjectStore(random.Random(2)), "p", LINGER_CLOCK, LINGER),
    max_examples=40,
    crash=crash,
    clock=LINGER_CLOCK,
)

# Manifests every 2 objects: opens (reopen and crash) trust manifests written between truncates
# and retention; a footer cache of 1 makes reads cross-check the trusted summaries.
MANIFEST = S3EngineConfig(
    flush_bytes=120,
    index_interval_bytes=50,
    records_max_per_append=4,
    footer_cache_max=1,
    manifest_every_objects=2,
)
TestS3Manifest = make_engine_machine(
    lambda: S3Engine(SimObjectStore(random.Random(4)), "m", config=MANIFEST),
    max_examples=40,
    crash=crash,
)
MANIFEST_LINGER_CLOCK = FakeClock()
TestS3ManifestLinger = make_engine_machine(
    lambda: S3Engine(
        SimObjectStore(random.Random(5)),
        "ml",
        MANIFEST_LINGER_CLOCK,
        S3EngineConfig(linger_ms=5, flush_bytes=150, index_interval_bytes=60,
                       manifest_every_objects=1),
    ),
    max_examples=30,
    crash=crash,
    clock=MANIFEST_LINGER_CLOCK,
)

FLAKY = SimObjectStoreConfig(transient_error_p=0.2)
TestS3Flaky = make_engine_machine(
    lambda: S3Engine(
        SimObjectStore(random.Random(3), FLAKY),
        "flaky",
        config=S3EngineConfig(
            flush_bytes=200, index_interval_bytes=40, retries=15, manifest_every_objects=3
        ),
    ),
    max_examples=25,
    crash=crash,
)

# ------------------------------------------------------------------------- real SeaweedFS

_PREFIXES = itertools.count()


_STORES: list[object] = []


def _real_engine() -> S3Engine:
    from real.node.s3 import S3ObjectStore
    from real.node.seaweed import shared_server

    if not _STORES:
        url = shared_server().endpoint_url
        _STORES.append(S3ObjectStore("twinmq-stateful", url, access_key="k", secret_key="k"))
    store = _STORES[0]
    config = S3EngineConfig(
        flush_bytes=150, index_interval_bytes=60, records_max_per_append=5,
        manifest_every_objects=2,
    )
    return S3Engine(store, f"run-{next(_PREFIXES)}", config=config)


TestS3Seaweed = pytest.mark.integration(
    make_engine_machine(_real_engine, max_examples=25, steps=30, crash=crash)
)
TestS3SeaweedSmoke = make_engine_machine(_real_engine, max_examples=2, steps=15, crash=crash)
TestS3SeaweedSmoke = pytest.mark.smoke(pytest.mark.integration(TestS3SeaweedSmoke))
