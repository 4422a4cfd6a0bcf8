"""`S3ObjectStore`: the `ObjectStore` port over a boto3 S3 client (the real shell's object store).

Path-style addressing (`http://host:port/bucket/key`), so it works against SeaweedFS, MinIO and
AWS alike. Requests: `put` = PutObject, `get` = GetObject with a `Range` header (`bytes=a-b` or the
suffix form `bytes=-n`), `list` = ListObjectsV2 paginated (one request per 1,000 keys), `delete` =
DeleteObject (idempotent in S3). The bucket is created on construction if it is missing.

Errors are translated so engines never see botocore: a missing key -> `NotFound`; HTTP 5xx,
`SlowDown`/throttling codes, connection failures and timeouts -> `TransientDeviceError` (after
botocore's own bounded retries, `max_attempts`); anything else -> `DeviceError`. Every message
names the operation and `bucket/key`.

`meter` (optional, e.g. `real.storage.pricing.S3Meter`) gets `record(op, bytes_up, bytes_down)`
once per HTTP request issued (failed ones included), for the cost model. Synchronous: callers on
an event loop run it in a worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from real.storage.devices import DeviceError, NotFound, TransientDeviceError

if TYPE_CHECKING:  # stubs from types-boto3[s3] (a dev dependency); boto3 itself is untyped
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import GetObjectRequestTypeDef

TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "502",
        "504",
    }
)
WARM_KEY = ".twinmq-warm"
"""Written and deleted once by `ensure_bucket` (outside every engine's prefix)."""
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
TRANSIENT_EXCEPTIONS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


class Meter(Protocol):
    def record(self, op: str, bytes_up: int = 0, bytes_down: int = 0) -> None: ...


class S3ObjectStore:
    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        *,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        meter: Meter | None = None,
        max_attempts: int = 3,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        create_bucket: bool = True,
    ) -> None:
        if not bucket or not 3 <= len(bucket) <= 63:
            raise ValueError(f"bucket must be an S3 bucket name of 3..63 chars, got {bucket!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.meter = meter
        config = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
        )
        self.client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )
        if create_bucket:
            self.ensure_bucket()

    def ensure_bucket(self) -> None:
        """Creates the bucket unless it exists (and is ours), then writes and deletes one small
        object in it (`WARM_KEY`): SeaweedFS allocates a bucket's volumes on its first write
        (about 210 ms on the dev box against 6 ms for the next), and that write should be paid
        here, where the node starts (off its event loop), not by the first shard to open."""
        try:
            self._count("list")
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise _translate(exc, "head_bucket", self.bucket) from None
            self._create_bucket()
        except BotoCoreError as exc:
            raise _translate(exc, "head_bucket", self.bucket) from None
        self.put(WARM_KEY, b"warm")  # not empty: SeaweedFS keeps empty objects off volumes
        self.delete(WARM_KEY)

    def _create_bucket(self) -> None:
        try:
            self._count("put")
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _translate(exc, "create_bucket", self.bucket) from None
        except BotoCoreError as exc:
            raise _translate(exc, "create_bucket", self.bucket) from None

    # ------------------------------------------------------------------------------ the port

    def put(self, key: str, data: bytes) -> None:
        body = bytes(data)
        self._count("put", up=len(body))
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "put", self._where(key)) from None

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if start < 0 and end is not None:
            raise DeviceError("get", self._where(key), "a negative start needs end=None")
        if end is not None and end <= start:
            return b""
        args: GetObjectRequestTypeDef = {"Bucket": self.bucket, "Key": key}
        if start < 0:
            args["Range"] = f"bytes={start}"  # suffix range: the last -start bytes
        elif start > 0 or end is not None:
            args["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            response = self.client.get_object(**args)
            data = response["Body"].read()
        except ClientError as exc:
            self._count("get")
            if _code(exc) in ("InvalidRange", "416"):
                return b""  # the object exists and is shorter than `start` (or empty)
            raise _translate(exc, "get", self._where(key)) from None
        except BotoCoreError as exc:
            self._count("get")
            raise _translate(exc, "get", self._where(key)) from None
        self._count("get", down=len(data))
        return data

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                contents = page.get("Contents", [])
                self._count("list", down=sum(len(item["Key"]) for item in contents))
                keys.extend(item["Key"] for item in contents)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "list", self._where(prefix + "*")) from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._count("delete")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in NOT_FOUND_CODES:
                return
            raise _translate(exc, "delete", self._where(key)) from None
        except BotoCoreError as exc:
            raise _translate(exc, "delete", self._where(key)) from None

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------------------- helpers

    def _where(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    def _count(self, op: str, up: int = 0, down: int = 0) -> None:
        if self.meter is not None:
            self.meter.record(op, up, down)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _translate(exc: Exception, op: str, target: str) -> DeviceError:
    """botocore exception -> NotFound / TransientDeviceError / DeviceError."""
    if isinstance(exc, ClientError):
        code, status = _code(exc), _status(exc)
        if code in NOT_FOUND_CODES:  # NoSuchBucket is a DeviceError: misconfiguration
            return NotFound(op, target)
        detail = f"{code or 'error'} (HTTP {status}): {exc}"
        if code in TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientDeviceError(op, target, detail)
        return DeviceError(op, target, detail)
    if isinstance(exc, TRANSIENT_EXCEPTIONS):
        return TransientDeviceError(op, target, f"{type(exc).__name__}: {exc}")
    return DeviceError(op, target, f"{type(exc).__name__}: {exc}")
