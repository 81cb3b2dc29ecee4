"""Content-addressed, write-once artifact storage."""

from ratekeeper.artifacts.local import LocalBlobStore, sha256_hex

__all__ = ["LocalBlobStore", "sha256_hex"]
