"""A content-addressed, write-once blob store in a local folder.

A blob lives at ``ROOT/sha256/ab/abcdef...`` under its own SHA-256. Identical content is stored
once. A blob is written to a temporary file, flushed to disk, then hard-linked into place: the
link either creates the final name or fails because the blob already exists, so a blob is never
overwritten and a reader never sees a half-written one. Every read verifies the digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from ratekeeper.errors import IntegrityError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        final = self.path(digest)
        if final.exists():
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o444)
            with contextlib.suppress(FileExistsError):  # a concurrent writer stored it first
                os.link(tmp, final)
        finally:
            os.unlink(tmp)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"artifact blob sha256:{digest[:12]} is missing") from None
        actual = sha256_hex(data)
        if actual != digest:
            raise IntegrityError(
                f"artifact blob sha256:{digest[:12]} is corrupted (content hashes to {actual[:12]})"
            )
        return data

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()
