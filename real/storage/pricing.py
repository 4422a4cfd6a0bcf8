"""S3 price lists and a request/byte meter that prices usage (pure: no I/O, no clock).

Prices are from the AWS S3 pricing page, https://aws.amazon.com/s3/pricing/ (us-east-1, as the
brief of this module recorded them; check the page before quoting a bill):

- S3 Standard: PUT/COPY/POST/LIST $0.005 per 1,000 requests, GET $0.0004 per 1,000, storage
  $0.023 per GB-month (first 50 TB tier), DELETE free, no per-GB transfer charge inside a region.
- S3 Express One Zone: PUT (and LIST) $0.00113 per 1,000, GET $0.00003 per 1,000, upload $0.0032
  per GB, retrieval $0.0006 per GB, storage $0.11 per GB-month.

Units: a GB is 2**30 bytes (AWS bills binary GB) and a month is 730 hours (AWS's convention).

The meter counts requests per class (`put`, `get`, `list`, `delete`) and bytes up (request bodies)
and down (response bodies). Both the real adapter (`real.node.s3.S3ObjectStore`) and the simulated
store (`model.devices.objstore.SimObjectStore`) call `record(op, bytes_up, bytes_down)` once per
HTTP request, so one LIST page is one LIST request. Storage is priced from byte-milliseconds the
owner accrues with `accrue_storage(bytes_stored, duration_ms)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from real.storage.errors import InvalidArgument

GB = 1 << 30
MONTH_MS = 730 * 3600 * 1000
OPS = ("put", "get", "list", "delete")


@dataclass(frozen=True, slots=True)
class S3PriceList:
    """Dollar prices of one S3 storage class; request prices are per 1,000 requests."""

    name: str
    put_per_1000: float
    get_per_1000: float
    list_per_1000: float
    delete_per_1000: float
    upload_per_gb: float
    retrieval_per_gb: float
    storage_per_gb_month: float

    def __post_init__(self) -> None:
        for name in (
            "put_per_1000",
            "get_per_1000",
            "list_per_1000",
            "delete_per_1000",
            "upload_per_gb",
            "retrieval_per_gb",
            "storage_per_gb_month",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"S3PriceList.{name} must be a number >= 0, got {value!r}")

    def request_price(self, op: str) -> float:
        """Dollars for one request of class `op`."""
        if op not in OPS:
            raise InvalidArgument(f"op must be one of {list(OPS)}, got {op!r}")
        per_1000 = {
            "put": self.put_per_1000,
            "get": self.get_per_1000,
            "list": self.list_per_1000,
            "delete": self.delete_per_1000,
        }[op]
        return per_1000 / 1000


# https://aws.amazon.com/s3/pricing/ : S3 Standard, US East (N. Virginia).
S3_STANDARD_US_EAST_1 = S3PriceList(
    name="s3-standard-us-east-1",
    put_per_1000=0.005,
    get_per_1000=0.0004,
    list_per_1000=0.005,  # LIST is billed with PUT/COPY/POST
    delete_per_1000=0.0,  # DELETE (and CANCEL) requests are free
    upload_per_gb=0.0,
    retrieval_per_gb=0.0,
    storage_per_gb_month=0.023,
)

# https://aws.amazon.com/s3/pricing/ : S3 Express One Zone, US East (N. Virginia).
S3_EXPRESS_ONE_ZONE = S3PriceList(
    name="s3-express-one-zone",
    put_per_1000=0.00113,
    get_per_1000=0.00003,
    list_per_1000=0.00113,
    delete_per_1000=0.0,
    upload_per_gb=0.0032,
    retrieval_per_gb=0.0006,
    storage_per_gb_month=0.11,
)

PRICE_LISTS = (S3_STANDARD_US_EAST_1, S3_EXPRESS_ONE_ZONE)


@dataclass(frozen=True, slots=True)
class MeterReport:
    """A snapshot: request counts per class, bytes, stored byte-ms and dollars per price list."""

    requests: dict[str, int]
    bytes_up: int
    bytes_down: int
    storage_byte_ms: int
    dollars: dict[str, float] = field(default_factory=dict)

    def requests_total(self) -> int:
        return sum(self.requests.values())


class S3Meter:
    """Counts S3 requests and bytes and prices them under every list in `price_lists`."""

    def __init__(self, price_lists: tuple[S3PriceList, ...] = PRICE_LISTS) -> None:
        if not price_lists or not all(isinstance(p, S3PriceList) for p in price_lists):
            raise InvalidArgument(f"price_lists must be a non-empty tuple of S3PriceList, got "
                                  f"{price_lists!r}")
        names = [p.name for p in price_lists]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"price_lists names must be unique, got {names}")
        self.price_lists = price_lists
        self._requests = {op: 0 for op in OPS}
        self._bytes_up = 0
        self._bytes_down = 0
        self._storage_byte_ms = 0

    def record(self, op: str, bytes_up: int = 0, bytes_down: int = 0) -> None:
        """Counts one request of class `op` that sent `bytes_up` and received `bytes_down`."""
        if op not in self._requests:
            raise InvalidArgument(f"op must be one of {list(OPS)}, got {op!r}")
        if type(bytes_up) is not int or bytes_up < 0:
            raise InvalidArgument(f"bytes_up must be an int >= 0, got {bytes_up!r}")
        if type(bytes_down) is not int or bytes_down < 0:
            raise InvalidArgument(f"bytes_down must be an int >= 0, got {bytes_down!r}")
        self._requests[op] += 1
        self._bytes_up += bytes_up
        self._bytes_down += bytes_down

    def accrue_storage(self, bytes_stored: int, duration_ms: int) -> None:
        """Charges `bytes_stored` bytes kept for `duration_ms` milliseconds."""
        if type(bytes_stored) is not int or bytes_stored < 0:
            raise InvalidArgument(f"bytes_stored must be an int >= 0, got {bytes_stored!r}")
        if type(duration_ms) is not int or duration_ms < 0:
            raise InvalidArgument(f"duration_ms must be an int >= 0, got {duration_ms!r}")
        self._storage_byte_ms += bytes_stored * duration_ms

    def dollars(self, prices: S3PriceList) -> float:
        """Total cost of the usage so far under `prices`."""
        total = sum(prices.request_price(op) * n for op, n in self._requests.items())
        total += self._bytes_up / GB * prices.upload_per_gb
        total += self._bytes_down / GB * prices.retrieval_per_gb
        total += self._storage_byte_ms / (GB * MONTH_MS) * prices.storage_per_gb_month
        assert total >= 0, total
        return total

    def report(self) -> MeterReport:
        dollars = {p.name: self.dollars(p) for p in self.price_lists}
        out = MeterReport(
            requests=dict(self._requests),
            bytes_up=self._bytes_up,
            bytes_down=self._bytes_down,
            storage_byte_ms=self._storage_byte_ms,
            dollars=dollars,
        )
        assert out.requests_total() == sum(self._requests.values())
        assert sorted(out.dollars) == sorted(p.name for p in self.price_lists)
        return out
