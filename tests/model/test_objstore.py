"""`SimObjectStore`: the latency and cost model, faults, bounds, determinism."""

from __future__ import annotations

import random

import pytest

from model.devices.objstore import SimObjectStore, SimObjectStoreConfig
from model.sim.dist import Dist
from real.storage.devices import DeviceError, NotFound, TransientDeviceError
from real.storage.errors import InvalidArgument
from real.storage.pricing import (
    GB,
    MONTH_MS,
    S3_EXPRESS_ONE_ZONE,
    S3_STANDARD_US_EAST_1,
    S3Meter,
    S3PriceList,
)

FIXED = SimObjectStoreConfig(
    put=Dist("fixed", 2.0),
    get=Dist("fixed", 1.0),
    list=Dist("fixed", 3.0),
    delete=Dist("fixed", 0.5),
    upload_mb_s=1.0,  # 1 byte per microsecond
    download_mb_s=2.0,
)


def test_elapsed_is_first_byte_plus_bytes_over_bandwidth_and_drains() -> None:
    store = SimObjectStore(random.Random(0), FIXED)
    store.put("k", b"x" * 1000)
    assert store.take_elapsed_us() == 2000 + 1000
    assert store.get("k", 0, 500) == b"x" * 500
    store.delete("k")
    assert store.take_elapsed_us() == 1000 + 250 + 500
    assert store.take_elapsed_us() == 0
    assert store.stats.elapsed_us_total == 4750


def test_stats_and_meter_count_every_request() -> None:
    store = SimObjectStore(random.Random(0), FIXED)
    store.put("a", b"12345")
    store.get("a", -2)
    store.list("")
    store.delete("a")
    with pytest.raises(NotFound):
        store.get("a")
    assert store.stats.requests == {"put": 1, "get": 2, "list": 1, "delete": 1}
    report = store.meter.report()
    assert report.requests == store.stats.requests
    assert report.bytes_up == 5
    assert store.bytes_stored() == 0


def test_list_is_charged_per_page_of_1000_keys() -> None:
    store = SimObjectStore(random.Random(0), FIXED)
    for i in range(2001):
        store.put(f"k/{i}", b"")
    store.take_elapsed_us()
    assert len(store.list("k/")) == 2001
    assert store.stats.requests["list"] == 3
    assert store.take_elapsed_us() >= 3 * 3000


def test_transient_errors_are_seeded_and_take_no_effect() -> None:
    def run(seed: int) -> list[bool]:
        store = SimObjectStore(random.Random(seed), SimObjectStoreConfig(transient_error_p=0.5))
        outcomes = []
        for i in range(40):
            try:
                store.put(f"k{i}", b"v")
                outcomes.append(True)
            except TransientDeviceError:
                outcomes.append(False)
                assert f"k{i}" not in store.keys()
        return outcomes

    first = run(11)
    assert first == run(11)
    assert 5 < first.count(False) < 35


def test_fail_next_scripts_faults_per_class() -> None:
    store = SimObjectStore(random.Random(0))
    store.fail_next("get", 2)
    store.fail_next("put", 1, transient=False)
    with pytest.raises(DeviceError) as info:
        store.put("k", b"v")
    assert not isinstance(info.value, TransientDeviceError)
    store.put("k", b"v")
    for _ in range(2):
        with pytest.raises(TransientDeviceError):
            store.get("k")
    assert store.get("k") == b"v"
    with pytest.raises(ValueError, match="op must be one of"):
        store.fail_next("head")


def test_crash_keeps_completed_puts() -> None:
    store = SimObjectStore(random.Random(0))
    store.put("k", b"v")
    store.crash()
    assert store.get("k") == b"v"


def test_bounds_reject_puts() -> None:
    store = SimObjectStore(random.Random(0), SimObjectStoreConfig(objects_max=2, bytes_max=10))
    store.put("a", b"12345")
    store.put("b", b"12345")
    with pytest.raises(DeviceError, match="objects_max=2"):
        store.put("c", b"")
    with pytest.raises(DeviceError, match="bytes_max=10"):
        store.put("a", b"123456")
    store.put("a", b"")  # replacing within bounds is fine
    assert store.bytes_stored() == 5


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("upload_mb_s", 0, "upload_mb_s must be a number > 0"),
        ("transient_error_p", 1.0, "transient_error_p must be in"),
        ("objects_max", 0, "objects_max must be an int >= 1"),
        ("put", 3, "put must be a Dist"),
    ],
)
def test_config_errors_name_the_field(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimObjectStoreConfig(**{field: value})


def test_profiles_order_seaweed_faster_than_aws() -> None:
    weed, aws = SimObjectStoreConfig.seaweedfs_loopback(), SimObjectStoreConfig.aws_s3_standard()
    assert (weed.name, aws.name) == ("seaweedfs-loopback", "aws-s3-standard")
    assert 3 < weed.put.mean_ms() < 10 < 15 < aws.get.mean_ms() < aws.put.mean_ms()

    def put_1k_us(config: SimObjectStoreConfig) -> int:
        store = SimObjectStore(random.Random(1), config)
        for i in range(200):
            store.put(f"k{i}", b"x" * 1024)
        return store.take_elapsed_us() // 200

    assert put_1k_us(weed) * 3 < put_1k_us(aws)


def test_meter_prices_requests_bytes_and_storage() -> None:
    meter = S3Meter()
    for _ in range(1000):
        meter.record("put", bytes_up=GB // 1000)
    for _ in range(1000):
        meter.record("get", bytes_down=0)
    meter.record("delete")
    meter.accrue_storage(GB, MONTH_MS)
    standard = meter.dollars(S3_STANDARD_US_EAST_1)
    express = meter.dollars(S3_EXPRESS_ONE_ZONE)
    assert standard == pytest.approx(0.005 + 0.0004 + 0.023)
    uploaded = (GB // 1000 * 1000) / GB
    assert express == pytest.approx(0.00113 + 0.00003 + 0.0032 * uploaded + 0.11)
    report = meter.report()
    assert report.requests == {"put": 1000, "get": 1000, "list": 0, "delete": 1}
    assert report.dollars == {"s3-standard-us-east-1": standard, "s3-express-one-zone": express}


def test_meter_and_price_list_validate() -> None:
    with pytest.raises(InvalidArgument, match="op must be one of"):
        S3Meter().record("head")
    with pytest.raises(InvalidArgument, match="bytes_up must be"):
        S3Meter().record("put", bytes_up=-1)
    with pytest.raises(InvalidArgument, match=r"S3PriceList.get_per_1000 must be"):
        S3PriceList("x", 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
