"""A content-addressed, write-once blob store in a local folder.

A blob lives at ``ROOT/sha256/ab/abcdef...`` under its own SHA-256. Identical content is stored
once. A blob is written to a temporary file, flushed to disk, then hard-linked into place: the
link either creates the final name or fails because the blob already exists, so a blob is never
overwritten and a reader never sees a half-written one. Every read verifies the digest. Blobs
are 0400 and their folders 0700: the registry's owner (the server's account) alone reads them.

A digest is checked to be 64 lowercase hex characters before it becomes part of a path (a
manifest naming ``../../etc/passwd`` never reaches the file system), and a read opens only a
regular file, without following a final symlink and without blocking (a FIFO planted at a blob's
path would otherwise hang the reader), and reads at most ``max_bytes`` (``/dev/zero`` ends there).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path

from ratekeeper.errors import IntegrityError, InvalidInputError

MAX_BLOB_BYTES = 1 << 30
"""The largest blob read back: 1 GiB, far above the largest model (a 60 MB GBM) we have seen."""
_DIGEST = re.compile(r"[0-9a-f]{64}")
# Windows has neither flag; there a FIFO or symlink cannot be planted by an unprivileged user.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(value: object) -> bool:
    """Whether ``value`` is a SHA-256 digest as ratekeeper writes them: 64 lowercase hex."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def check_digest(value: object) -> str:
    """``value`` when it is a digest; otherwise an error that does not echo it."""
    if not is_digest(value):
        raise InvalidInputError("an artifact reference must be a SHA-256 digest (64 lowercase hex)")
    assert isinstance(value, str)
    return value


class LocalBlobStore:
    def __init__(self, root: Path | str, *, max_bytes: int = MAX_BLOB_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    @property
    def location(self) -> str:
        """The folder, as the registry records it and ``Registry(artifacts=...)`` takes it."""
        return str(self.root)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        final = self.path(digest)
        if final.exists():
            self.get(digest)  # stored already: it must be these bytes (a planted file is refused)
            return digest
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # the owner's only
        for folder in (self.root / "sha256", final.parent):
            folder.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o400)  # write-once, and for the owner only
            with contextlib.suppress(FileExistsError):  # a concurrent writer stored it first
                os.link(tmp, final)
        finally:
            os.unlink(tmp)
        return digest

    def get(self, digest: str) -> bytes:
        data = self._read(self.path(digest), digest)
        actual = sha256_hex(data)
        if actual != digest:
            raise IntegrityError(
                f"artifact blob sha256:{digest[:12]} is corrupted (content hashes to {actual[:12]})"
            )
        return data

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def _read(self, path: Path, digest: str) -> bytes:
        what = f"artifact blob sha256:{digest[:12]}"
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            raise IntegrityError(f"{what} is missing") from None
        except OSError:  # ELOOP: a symlink planted at the blob's path; EACCES, ...
            raise IntegrityError(f"{what} cannot be opened as a regular file") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise IntegrityError(f"{what} is not a regular file")
            if info.st_size > self.max_bytes:
                raise IntegrityError(f"{what} is larger than {self.max_bytes:,} bytes")
            data = handle.read(self.max_bytes + 1)  # the file may grow after fstat
        if len(data) > self.max_bytes:
            raise IntegrityError(f"{what} is larger than {self.max_bytes:,} bytes")
        return data
