"""`SimObjectStore`: the `ObjectStore` port over a dict, charging simulated time and dollars.

Every request samples a first-byte latency from the config's `Dist` for its class (PUT, GET, LIST,
DELETE) and adds the transfer time `bytes / bandwidth` (upload bandwidth for PUT bodies, download
bandwidth for GET bodies). The total accumulates in microseconds until the shell drains it with
`take_elapsed_us()` and waits that long in simulated time (the store itself never waits). Each
request is also counted by `meter` (`real.storage.pricing.S3Meter`), which prices the usage under
S3 Standard and S3 Express One Zone, and in `stats`.

Faults: with probability `transient_error_p` a request raises `TransientDeviceError` *before* it
takes effect (the failed request is still charged its latency and counted by the meter, which
is conservative); `fail_next(op, count)` scripts deterministic failures for tests.
`crash()` keeps every stored object: S3 keeps completed PUTs, so a machine crash of the client
loses nothing here (the engine loses its in-memory buffer instead).

Bounded: at most `objects_max` objects and `bytes_max` stored bytes (a PUT past either raises
`DeviceError`, like an account quota). Deterministic: all randomness comes from the `rng` given.
"""

from __future__ import annotations

import builtins
import random
from dataclasses import dataclass, field

from model.sim.dist import Dist
from real.storage.devices import DeviceError, NotFound, TransientDeviceError
from real.storage.pricing import S3Meter

OPS = ("put", "get", "list", "delete")
LIST_PAGE_KEYS = 1000  # S3 ListObjectsV2 returns at most 1,000 keys per request
LIST_KEY_BYTES = 150  # rough XML bytes per key in a LIST response (for download time)


@dataclass(frozen=True, slots=True)
class SimObjectStoreConfig:
    """Latency model: first-byte `Dist` per request class plus bytes / bandwidth (MB = 10**6 B)."""

    put: Dist = Dist("lognormal", 2.0, 0.3, 50.0)
    get: Dist = Dist("lognormal", 1.0, 0.3, 50.0)
    list: Dist = Dist("lognormal", 2.0, 0.3, 50.0)
    delete: Dist = Dist("lognormal", 1.0, 0.3, 50.0)
    upload_mb_s: float = 500.0
    download_mb_s: float = 1000.0
    transient_error_p: float = 0.0
    objects_max: int = 1_000_000
    bytes_max: int = 64 << 30
    name: str = "default"

    def __post_init__(self) -> None:
        for key in OPS:
            if not isinstance(getattr(self, key), Dist):
                raise ValueError(f"SimObjectStoreConfig.{key} must be a Dist")
        for key in ("upload_mb_s", "download_mb_s"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"SimObjectStoreConfig.{key} must be a number > 0, got {value!r}")
        if not 0.0 <= self.transient_error_p < 1.0:
            raise ValueError(f"SimObjectStoreConfig.transient_error_p must be in [0, 1), "
                             f"got {self.transient_error_p!r}")
        for key in ("objects_max", "bytes_max"):
            value = getattr(self, key)
            if type(value) is not int or value < 1:
                raise ValueError(f"SimObjectStoreConfig.{key} must be an int >= 1, got {value!r}")

    @staticmethod
    def seaweedfs_loopback() -> SimObjectStoreConfig:
        """SeaweedFS 4.48 `weed mini` on loopback via `real.node.s3.S3ObjectStore` (boto3),
        measured once on the shared 2-core dev box (sequential requests, after 10 warm-up PUTs):

            PUT   1 KiB p50 5.45 ms p99 8.2 ms | 64 KiB p50 6.9 ms p99 8.3 ms
                  1 MiB p50 21.0 ms p99 24.8 ms  -> ~67 MB/s upload beyond the first byte
            GET   first byte (1-byte range) p50 4.5 ms p99 10 ms (any object size)
                  1 MiB whole p50 6.5 ms          -> ~500 MB/s download
            LIST  ~110 keys p50 33 ms p99 213 ms | DELETE p50 4.4 ms p99 14.5 ms

        Lognormal sigmas come from p99/p50 = exp(2.326 sigma)."""
        return SimObjectStoreConfig(
            put=Dist("lognormal", 5.4, 0.18, 200.0),
            get=Dist("lognormal", 4.5, 0.36, 200.0),
            list=Dist("lognormal", 33.0, 0.8, 1000.0),
            delete=Dist("lognormal", 4.4, 0.5, 200.0),
            upload_mb_s=67.0,
            download_mb_s=500.0,
            name="seaweedfs-loopback",
        )

    @staticmethod
    def aws_s3_standard() -> SimObjectStoreConfig:
        """Published-typical S3 Standard figures from inside the same region (not measured here):
        first byte p50 ~20 ms for GET and ~30 ms for small PUTs with a long tail (p99 ~3x p50),
        per AWS's "Best practices design patterns: optimizing Amazon S3 performance" (which cites
        100-200 ms tail first-byte latency for small objects and advises retrying slow requests)
        and the S3 Express One Zone launch material (Standard "tens of milliseconds", Express
        "single-digit milliseconds"); ~90 MB/s per connection (the same guide: 85-90 MB/s per
        request). SlowDown/500s are rare; scenarios set `transient_error_p` themselves."""
        return SimObjectStoreConfig(
            put=Dist("lognormal", 30.0, 0.5, 2000.0),
            get=Dist("lognormal", 20.0, 0.5, 2000.0),
            list=Dist("lognormal", 30.0, 0.5, 2000.0),
            delete=Dist("lognormal", 20.0, 0.5, 2000.0),
            upload_mb_s=90.0,
            download_mb_s=90.0,
            name="aws-s3-standard",
        )


@dataclass(slots=True)
class SimObjectStoreStats:
    requests: dict[str, int] = field(default_factory=lambda: {op: 0 for op in OPS})
    transient_errors: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    elapsed_us_total: int = 0


class SimObjectStore:
    def __init__(self, rng: random.Random, config: SimObjectStoreConfig | None = None) -> None:
        if not isinstance(rng, random.Random):
            raise ValueError(f"rng must be a random.Random, got {rng!r}")
        self.rng = rng
        self.config = SimObjectStoreConfig() if config is None else config
        self.meter = S3Meter()
        self.stats = SimObjectStoreStats()
        self._objects: dict[str, bytes] = {}
        self._bytes = 0
        self._elapsed_us = 0
        self._scripted: dict[str, list[DeviceError]] = {op: [] for op in OPS}

    # ------------------------------------------------------------------------------ the port

    def put(self, key: str, data: bytes) -> None:
        _check_key(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DeviceError("put", key, f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        self._request("put", key, len(data), 0)
        old = len(self._objects.get(key, b""))
        count = len(self._objects) + (key not in self._objects)
        if count > self.config.objects_max:
            raise DeviceError("put", key, f"objects_max={self.config.objects_max} reached")
        if self._bytes - old + len(data) > self.config.bytes_max:
            raise DeviceError("put", key, f"bytes_max={self.config.bytes_max} reached")
        self._objects[key] = data
        self._bytes += len(data) - old
        assert self._objects[key] == data
        assert self._bytes >= 0

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        _check_key(key)
        data = self._objects.get(key)
        if data is None:
            self._request("get", key, 0, 0)
            raise NotFound("get", key)
        if start < 0:
            if end is not None:
                raise DeviceError("get", key, "a negative start needs end=None")
            out = data[max(0, len(data) + start) :]
        else:
            out = data[start:end]
        self._request("get", key, 0, len(out))
        return out

    def list(self, prefix: str) -> list[str]:
        keys = sorted(k for k in self._objects if k.startswith(prefix))
        pages = max(1, -(-len(keys) // LIST_PAGE_KEYS))
        for page in range(pages):
            shown = len(keys[page * LIST_PAGE_KEYS : (page + 1) * LIST_PAGE_KEYS])
            self._request("list", prefix, 0, shown * LIST_KEY_BYTES)
        return keys

    def delete(self, key: str) -> None:
        _check_key(key)
        self._request("delete", key, 0, 0)
        data = self._objects.pop(key, None)
        if data is not None:
            self._bytes -= len(data)
        assert key not in self._objects

    # ------------------------------------------------------------------------- shell/test API

    def take_elapsed_us(self) -> int:
        """Simulated time the requests since the last call took; resets the meter."""
        out, self._elapsed_us = self._elapsed_us, 0
        return out

    def fail_next(self, op: str, count: int = 1, transient: bool = True) -> None:
        """The next `count` requests of class `op` raise (Transient)DeviceError before acting."""
        if op not in self._scripted:
            raise ValueError(f"op must be one of {list(OPS)}, got {op!r}")
        cls = TransientDeviceError if transient else DeviceError
        self._scripted[op].extend(cls(op, "(scripted)", "injected fault") for _ in range(count))

    def crash(self) -> None:
        """A client machine crash: completed PUTs survive, so nothing changes here."""

    def bytes_stored(self) -> int:
        return self._bytes

    def keys(self) -> builtins.list[str]:
        return sorted(self._objects)

    def raw(self, key: str) -> bytes:
        """Test hook: an object's bytes, without charging a request."""
        return self._objects[key]

    def corrupt(self, key: str, data: bytes) -> None:
        """Test hook: replaces an object's bytes without charging a request."""
        self._bytes += len(data) - len(self._objects.get(key, b""))
        self._objects[key] = bytes(data)

    # ------------------------------------------------------------------------------- helpers

    def _request(self, op: str, key: str, up: int, down: int) -> None:
        cfg = self.config
        first = getattr(cfg, op).sample_us(self.rng)
        transfer = round(up / cfg.upload_mb_s + down / cfg.download_mb_s)  # B / (MB/s) = us
        self._elapsed_us += first + transfer
        self.stats.elapsed_us_total += first + transfer
        self.stats.requests[op] += 1
        self.meter.record(op, up, down)
        scripted = self._scripted[op]
        fail = scripted.pop(0) if scripted else None
        if fail is None and cfg.transient_error_p and self.rng.random() < cfg.transient_error_p:
            fail = TransientDeviceError(op, key, "simulated 503 SlowDown")
        if fail is not None:
            self.stats.transient_errors += isinstance(fail, TransientDeviceError)
            raise fail
        self.stats.bytes_up += up
        self.stats.bytes_down += down


def _check_key(key: str) -> None:
    if type(key) is not str or not key or len(key.encode()) > 1024:
        raise DeviceError("request", repr(key), "keys are non-empty str of at most 1024 bytes")
