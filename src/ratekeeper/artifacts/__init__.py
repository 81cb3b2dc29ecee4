"""Content-addressed, write-once artifact storage."""

from ratekeeper.artifacts.local import LocalBlobStore, check_digest, is_digest, sha256_hex

__all__ = ["LocalBlobStore", "check_digest", "is_digest", "sha256_hex"]
