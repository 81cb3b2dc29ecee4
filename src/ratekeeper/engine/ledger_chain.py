"""The quote ledger's chains: each writer's sealed, hash-linked record of the segments it wrote.

One chain per writer process and model, ``<ledger>/<model>/_chain/<start>-<host>-<pid>.jsonl``,
one JSON entry a line, appended only by that writer (which holds an exclusive ``flock`` on it
while it lives). Like the segments, one writer per file: workers and replicas never contend, no
lock has to hold across hosts (a shared folder's locks often do not, and an object store has
none), and a crash can only leave *its own* chain short, never break another writer's.

Entries, each naming its chain, its position ``n`` and the hash of the entry before it (``prev``):

- ``opened``: a segment was started (written before its first row, so a stream file that no
  chain announced, planted to be sealed by the next start, is never chained);
- ``sealed``: the segment was closed as Parquet: its SHA-256, row count, first and last quote time;
- ``closed``: the writer stopped (``recovered``: a later ledger on its host closed it after a
  crash), with the number of segments and rows it sealed: the chain's sealed end.

Each entry carries the HMAC seal of the server's signing key (purpose ``ledger-segment``) over its
canonical JSON, or ``null`` when the server has no key (then the chain holds hashes only).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from ratekeeper.governance.signing import SigningKey

CHAIN_FOLDER = "_chain"
CHAIN_SUFFIX = ".jsonl"
PURPOSE = "ledger-segment"
OPENED, SEALED, CLOSED = "opened", "sealed", "closed"
FILE_MODE, FOLDER_MODE = 0o600, 0o700


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def entry_hash(body: dict[str, Any]) -> str:
    """The hash the next entry's ``prev`` names: of the entry without its seal."""
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def body_of(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "seal"}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):  # hashlib lets go of the GIL on large chunks
            digest.update(chunk)
    return digest.hexdigest()


def make_dirs(root: Path, folder: Path) -> None:
    """Create ``folder`` (``root`` or under it) and any missing parent up to ``root``, each 0700
    whatever the umask (the folders above ``root`` are not the ledger's: made as usual)."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current == root:
            current.parent.mkdir(parents=True, exist_ok=True)
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # another writer made it first (also 0700)
        os.chmod(path, FOLDER_MODE)


def create_private(path: Path) -> int:
    """A new file, 0600 whatever the umask; its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def chain_path(root: Path, model: str, writer: str) -> Path:
    return root / model / CHAIN_FOLDER / f"{writer}{CHAIN_SUFFIX}"


def chain_host(path: Path) -> str | None:
    parts = path.stem.rsplit("-", 2)
    return parts[1] if len(parts) == 3 else None


def read_entries(path: Path) -> list[str]:
    """The chain's lines (a crash may leave a last line cut short: the verifier names it)."""
    return path.read_text().splitlines()


def is_live(path: Path) -> bool:
    """Whether a process on this host holds the chain's lock (its writer is running)."""
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


@dataclass
class Chain:
    """One writer's chain for one model, open for appending (the writer holds its lock)."""

    root: Path
    path: Path
    key: SigningKey | None
    fsync: bool
    handle: BinaryIO
    n: int = 0
    head: str = ""
    segments: int = 0
    rows: int = 0

    @classmethod
    def create(
        cls, root: Path, model: str, writer: str, key: SigningKey | None, fsync: bool
    ) -> Chain:
        path = chain_path(root, model, writer)
        make_dirs(root, path.parent)
        handle = os.fdopen(create_private(path), "ab")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # new and ours: never waits
        return cls(root, path, key, fsync, handle)

    @classmethod
    def resume(cls, root: Path, path: Path, key: SigningKey | None) -> Chain | None:
        """A dead writer's chain, to close it; ``None`` if its writer (or a recovery) holds it."""
        handle = open(path, "ab")  # noqa: SIM115 -- held until close()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        chain = cls(root, path, key, True, handle)
        for line in read_entries(path):
            entry = json.loads(line)
            chain.n, chain.head = entry["n"] + 1, entry_hash(body_of(entry))
            if entry["kind"] == SEALED:
                chain.segments += 1
                chain.rows += entry["rows"]
        return chain

    @property
    def id(self) -> str:
        return self.path.stem

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        body = {
            "chain": self.id,
            "n": self.n,
            "kind": kind,
            "prev": self.head,
            "at": datetime.now(UTC).isoformat(),
            **fields,
        }
        seal = self.key.seal(PURPOSE, canonical(body)) if self.key is not None else None
        self.handle.write((canonical({**body, "seal": seal}) + "\n").encode())
        self.handle.flush()
        if self.fsync:
            os.fsync(self.handle.fileno())
        self.n, self.head = self.n + 1, entry_hash(body)
        return body

    def opened(self, segment: Path) -> None:
        self.append(OPENED, segment=self.relative(segment))

    def sealed(self, segment: Path, fingerprint: Fingerprint) -> None:
        self.append(
            SEALED,
            segment=self.relative(segment),
            sha256=fingerprint.sha256,
            rows=fingerprint.rows,
            first=fingerprint.first,
            last=fingerprint.last,
        )
        self.segments += 1
        self.rows += fingerprint.rows

    def close(self, *, recovered: bool = False) -> None:
        """The chain's sealed end, then let go of the lock."""
        try:
            self.append(CLOSED, segments=self.segments, rows=self.rows, recovered=recovered)
        finally:
            self.handle.close()

    def relative(self, segment: Path) -> str:
        """The sealed (Parquet) name of a segment, relative to the ledger root."""
        return segment.with_suffix(".parquet").relative_to(self.root).as_posix()


@dataclass(frozen=True)
class Fingerprint:
    """What a chain records of a sealed segment (``sha256`` None: it held no rows, no file)."""

    sha256: str | None
    rows: int
    first: str | None
    last: str | None
