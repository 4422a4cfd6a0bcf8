"""Conformance of the `ObjectStore` port: `SimObjectStore` always, real SeaweedFS + `S3ObjectStore`
under `integration` (one round trip is also `smoke`, so the default run touches the real server).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from model.devices.objstore import SimObjectStore
from real.storage.devices import DeviceError, NotFound, ObjectStore, TransientDeviceError
from real.storage.pricing import S3Meter

_NAMES = itertools.count()


def _real_store(meter: S3Meter | None = None) -> ObjectStore:
    from real.node.s3 import S3ObjectStore
    from real.node.seaweed import shared_server

    url = shared_server().endpoint_url
    bucket = f"conformance-{next(_NAMES)}"
    return S3ObjectStore(bucket, url, access_key="k", secret_key="k", meter=meter)


@pytest.fixture(
    params=["sim", pytest.param("seaweed", marks=pytest.mark.integration)],
)
def store(request: pytest.FixtureRequest) -> Iterator[ObjectStore]:
    if request.param == "sim":
        yield SimObjectStore(random.Random(5))
    else:
        yield _real_store()


def test_is_an_object_store(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_get_replaces_whole_objects(store: ObjectStore) -> None:
    store.put("a/x", b"\x00\x01hello" * 3)
    assert store.get("a/x") == b"\x00\x01hello" * 3
    store.put("a/x", b"short")
    assert store.get("a/x") == b"short"


def test_ranged_gets(store: ObjectStore) -> None:
    store.put("r", bytes(range(100)))
    assert store.get("r", 10, 20) == bytes(range(10, 20))
    assert store.get("r", 95) == bytes(range(95, 100))
    assert store.get("r", 0, 100) == bytes(range(100))
    assert store.get("r", 90, 1000) == bytes(range(90, 100))
    assert store.get("r", -7) == bytes(range(93, 100))
    assert store.get("r", -500) == bytes(range(100))
    assert store.get("r", 5, 5) == b""
    assert store.get("r", 100) == b""
    assert store.get("r", 150) == b""


def test_missing_key_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFound) as info:
        store.get("nope/missing")
    assert "nope/missing" in str(info.value)
    with pytest.raises(NotFound):
        store.get("nope/missing", -10)


def test_list_is_sorted_and_prefix_filtered(store: ObjectStore) -> None:
    for key in ["p/2", "p/10", "p/1", "q/1", "p-x/1"]:
        store.put(key, b"v")
    assert store.list("p/") == ["p/1", "p/10", "p/2"]
    assert store.list("q") == ["q/1"]
    assert store.list("zzz/") == []


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put("d/1", b"v")
    store.delete("d/1")
    store.delete("d/1")
    store.delete("d/never")
    assert store.list("d/") == []
    with pytest.raises(NotFound):
        store.get("d/1")


@pytest.mark.integration
def test_list_paginates_past_1000_keys(store: ObjectStore) -> None:
    keys = [f"many/{i:05d}" for i in range(1003)]
    for key in keys:
        store.put(key, b"")
    assert store.list("many/") == keys


# ---------------------------------------------------------------------------------- real only


@pytest.mark.integration
@pytest.mark.smoke
def test_seaweed_round_trip_with_meter() -> None:
    meter = S3Meter()
    store = _real_store(meter)
    base = meter.report().requests_total()  # bucket creation and warm-up
    base_up = meter.report().bytes_up
    store.put("m/obj", b"x" * 1000)
    assert store.get("m/obj", -10) == b"x" * 10
    assert store.list("m/") == ["m/obj"]
    store.delete("m/obj")
    with pytest.raises(NotFound):
        store.get("m/obj")
    report = meter.report()
    assert report.requests_total() - base == 5
    assert report.bytes_up - base_up == 1000
    assert report.bytes_down >= 10 + len("m/obj")
    assert report.dollars["s3-standard-us-east-1"] > 0


def test_unreachable_endpoint_is_transient() -> None:
    from real.node.s3 import S3ObjectStore
    from real.node.seaweed import free_ports

    (port,) = free_ports(1)  # nothing listens there
    store = S3ObjectStore(
        "no-server",
        f"http://127.0.0.1:{port}",
        access_key="k",
        secret_key="k",
        max_attempts=1,
        create_bucket=False,
    )
    with pytest.raises(TransientDeviceError, match="put 'no-server/k' failed"):
        store.put("k", b"v")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, NotFound),
        ("SlowDown", 503, TransientDeviceError),
        ("InternalError", 500, TransientDeviceError),
        ("WeirdServerThing", 502, TransientDeviceError),
        ("AccessDenied", 403, DeviceError),
        ("NoSuchBucket", 404, DeviceError),
    ],
)
def test_client_errors_translate(code: str, status: int, expected: type) -> None:
    from real.node.s3 import _translate

    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    err = _translate(ClientError(response, "GetObject"), "get", "b/k")  # type: ignore[arg-type]
    assert type(err) is expected
    assert "b/k" in str(err)
