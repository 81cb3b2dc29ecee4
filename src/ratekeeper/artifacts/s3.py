"""Content-addressed, write-once blobs in S3-compatible object storage (AWS S3, MinIO, Ceph).

``s3://bucket/prefix`` holds a blob at ``prefix/sha256/ab/abcdef...``, the same layout as the
local folder. A key is built from the digest alone (checked to be 64 lowercase hex first), so no
name a user chose ever becomes part of a key. A blob is written with a conditional put
(``If-None-Match: *``): the store creates the key or answers 412 because it exists, so a blob is
never overwritten; on 412 the existing object is read back and must hash to the same digest (an
object planted at that key is refused, not trusted). Every read re-hashes the bytes.

Requests go through boto3 (the optional extra ``ratekeeper[s3]``, imported only when an ``s3://``
store is opened) with botocore's ``standard`` retry mode: connection errors, timeouts, throttling
and 5xx answers are retried with exponential backoff and jitter, ``max_attempts`` in all. What is
still failing then becomes one typed error, never a botocore traceback:
``StoreUnavailableError`` (unreachable, 5xx), ``StoreAccessDeniedError`` (credentials refused or
missing, no such bucket), ``IntegrityError`` (a blob missing or not matching its digest).

Credentials come only from boto3's own chain (environment, shared config, instance or pod
identity): ratekeeper never reads, stores, logs or records them, and refuses an ``s3://`` URI
that carries any.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ratekeeper.artifacts.local import MAX_BLOB_BYTES, check_digest, sha256_hex
from ratekeeper.errors import (
    IntegrityError,
    InvalidInputError,
    StoreAccessDeniedError,
    StoreUnavailableError,
)

DEFAULT_ATTEMPTS = 5
"""Requests per operation (the first and 4 retries, backoff up to ~8 s in all)."""
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 60.0  # seconds; a 60 MB GBM reads in ~1 s on a LAN
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9._-]+")
_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "NoSuchBucket",
}
T = TypeVar("T")


def is_s3_uri(location: object) -> bool:
    return isinstance(location, str) and location.startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix/")`` (prefix may be empty)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidInputError("an S3 artifact store is named s3://bucket/prefix")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise InvalidInputError(
            "an s3:// store URI names a bucket and a prefix only: credentials come from the "
            "environment (AWS_ACCESS_KEY_ID, ...) or the instance, never from the URI"
        )
    if not _BUCKET.fullmatch(parts.netloc):
        raise InvalidInputError(f"{parts.netloc[:64]!r} is not an S3 bucket name")
    pieces = [p for p in parts.path.split("/") if p]
    if any(p in (".", "..") or not _PREFIX_PART.fullmatch(p) for p in pieces):
        raise InvalidInputError(
            "an S3 prefix is made of letters, digits, '.', '_' and '-' between slashes"
        )
    return parts.netloc, "".join(f"{p}/" for p in pieces)


def endpoint_label(endpoint_url: str | None) -> str:
    """The endpoint as shown in messages: scheme, host and port only (never user info)."""
    if not endpoint_url:
        return "AWS S3"
    parts = urlsplit(endpoint_url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class S3Objects:
    """Objects under one bucket and prefix: the requests, retries and error mapping."""

    def __init__(
        self,
        location: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(location)
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.max_attempts = max(1, max_attempts)
        self._client: Any = None
        self._pid = -1
        _boto3()  # fail now, with the install hint, rather than on the first blob

    def __repr__(self) -> str:
        return f"S3Objects({self.location!r}, endpoint={endpoint_label(self.endpoint_url)!r})"

    def __getstate__(self) -> dict[str, Any]:
        # A server hands its ledger settings to worker processes: never a live client.
        return {**self.__dict__, "_client": None, "_pid": -1}

    def child(self, folder: str) -> S3Objects:
        """The same store under ``prefix/folder/`` (sharing nothing mutable)."""
        return S3Objects(
            f"{self.location}/{folder}",
            endpoint_url=self.endpoint_url,
            region=self.region,
            max_attempts=self.max_attempts,
        )

    def client(self) -> Any:
        # One client per process: a client's connection pool must not cross a fork (the server
        # forks its workers after opening the registry).
        if self._client is None or self._pid != os.getpid():
            boto3 = _boto3()
            from botocore.config import Config

            config = Config(
                # total_max_attempts counts the first request (botocore's max_attempts does not).
                retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                # MinIO and Ceph serve buckets by path; and some of them refuse the CRC checksums
                # botocore adds by default since 1.36 (we verify SHA-256 ourselves).
                s3={"addressing_style": "path"} if self.endpoint_url else None,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            session = boto3.session.Session()  # sessions are not thread-safe; clients are
            self._client = session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
            self._pid = os.getpid()
        return self._client

    # -- operations (keys relative to the prefix) ---------------------------------------------
    def put_once(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> bool:
        """Create ``key``; ``False`` when it already exists (412): nothing is overwritten."""
        client = self.client()
        try:
            self._call(
                key,
                lambda: client.put_object(
                    Bucket=self.bucket,
                    Key=self.prefix + key,
                    Body=data,
                    IfNoneMatch="*",
                    Metadata=metadata or {},
                ),
            )
        except _Exists:
            return False
        return True

    def put(self, key: str, data: bytes) -> None:
        """Write ``key`` whatever was there (the ledger's chains, which grow while written)."""
        client = self.client()
        self._call(
            key, lambda: client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        )

    def get(self, key: str, max_bytes: int = MAX_BLOB_BYTES) -> bytes | None:
        """The object's bytes; ``None`` when there is no such key."""
        client = self.client()
        try:
            answer = self._call(
                key, lambda: client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            )
        except _Missing:
            return None
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength") or 0) > max_bytes:
                raise IntegrityError(f"object {key} is larger than {max_bytes:,} bytes")
            data: bytes = self._call(key, lambda: body.read(max_bytes + 1))
        finally:
            body.close()
        if len(data) > max_bytes:
            raise IntegrityError(f"object {key} is larger than {max_bytes:,} bytes")
        return data

    def size(self, key: str) -> int | None:
        client = self.client()
        try:
            answer = self._call(
                key, lambda: client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            )
        except _Missing:
            return None
        return int(answer["ContentLength"])

    def list(self, folder: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object under ``folder`` (keys relative to the prefix)."""
        client = self.client()
        token: str | None = None
        while True:
            options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + folder}
            if token:
                options["ContinuationToken"] = token
            page = self._call(folder or "/", functools.partial(client.list_objects_v2, **options))
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :], int(item["Size"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete(self, key: str) -> None:
        client = self.client()
        self._call(key, lambda: client.delete_object(Bucket=self.bucket, Key=self.prefix + key))

    def _call(self, key: str, request: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"the artifact store {self.location} ({endpoint_label(self.endpoint_url)})"
        try:
            return request()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed",) or status == 412:
                raise _Exists() from None
            if code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
                raise _Missing() from None
            if code == "NoSuchBucket":
                raise StoreAccessDeniedError(f"{where}: the bucket does not exist") from None
            if code in _DENIED or status == 403:
                raise StoreAccessDeniedError(
                    f"{where} refused the server's credentials ({code or status}) for {key}"
                ) from None
            raise StoreUnavailableError(
                f"{where} answered {code or status} for {key} after {self.max_attempts} attempts"
            ) from None
        except NoCredentialsError:
            raise StoreAccessDeniedError(
                f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or give the server an instance or pod identity)"
            ) from None
        except BotoCoreError as exc:
            raise StoreUnavailableError(
                f"cannot reach {where} after {self.max_attempts} attempts ({type(exc).__name__})"
            ) from None


class S3BlobStore:
    """The content-addressed, write-once blob store on S3 (same contract as LocalBlobStore)."""

    def __init__(
        self,
        location: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
        max_bytes: int = MAX_BLOB_BYTES,
    ) -> None:
        self.objects = S3Objects(
            location, endpoint_url=endpoint_url, region=region, max_attempts=max_attempts
        )
        self.location = self.objects.location
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"S3BlobStore({self.location!r})"

    @staticmethod
    def key(digest: str) -> str:
        check_digest(digest)
        return f"sha256/{digest[:2]}/{digest}"

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        if not self.objects.put_once(self.key(digest), data, {"sha256": digest}):
            self.get(digest)  # it exists: it must be these bytes (a planted object is refused)
        return digest

    def get(self, digest: str) -> bytes:
        what = f"artifact blob sha256:{digest[:12]}"
        try:
            data = self.objects.get(self.key(digest), self.max_bytes)
        except IntegrityError:
            raise IntegrityError(f"{what} is larger than {self.max_bytes:,} bytes") from None
        if data is None:
            raise IntegrityError(f"{what} is missing")
        actual = sha256_hex(data)
        if actual != digest:
            raise IntegrityError(f"{what} is corrupted (content hashes to {actual[:12]})")
        return data

    def exists(self, digest: str) -> bool:
        return self.objects.size(self.key(digest)) is not None


class _Exists(Exception):
    """412: the conditional put found the key taken."""


class _Missing(Exception):
    """404: no such key."""


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise InvalidInputError(
            "an s3:// artifact store needs boto3: pip install 'ratekeeper[s3]'"
        ) from None
    return boto3
