"""Content-addressed, write-once artifact storage: a local folder, or S3-compatible storage."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ratekeeper.artifacts.local import LocalBlobStore, check_digest, is_digest, sha256_hex
from ratekeeper.errors import InvalidInputError
from ratekeeper.settings import Settings


class BlobStore(Protocol):
    """What the registry needs of an artifact store (LocalBlobStore, S3BlobStore)."""

    @property
    def location(self) -> str: ...

    def put(self, data: bytes) -> str: ...

    def get(self, digest: str) -> bytes: ...

    def exists(self, digest: str) -> bool: ...


def open_blob_store(location: str | Path, settings: Settings) -> BlobStore:
    """The store at ``location``: ``s3://bucket/prefix`` (team mode) or a local folder."""
    text = str(location)
    if text.startswith("s3://"):
        from ratekeeper.artifacts.s3 import S3BlobStore  # boto3 only when asked for

        return S3BlobStore(
            text,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            max_attempts=settings.s3_max_attempts,
        )
    if "://" in text:
        raise InvalidInputError(
            "an artifact store is a local folder or s3://bucket/prefix (S3-compatible storage)"
        )
    return LocalBlobStore(Path(text))


def normalized_location(location: str | Path) -> str:
    """How a registry records its store: an absolute folder, or ``s3://bucket/prefix``."""
    text = str(location)
    if text.startswith("s3://"):
        from ratekeeper.artifacts.s3 import parse_s3_uri

        bucket, prefix = parse_s3_uri(text)
        return f"s3://{bucket}/{prefix}".rstrip("/")
    return str(Path(text).resolve())


__all__ = [
    "BlobStore",
    "LocalBlobStore",
    "check_digest",
    "is_digest",
    "normalized_location",
    "open_blob_store",
    "sha256_hex",
]
