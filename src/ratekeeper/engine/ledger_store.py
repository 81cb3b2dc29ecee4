"""The quote ledger on object storage: the local folder as a spool, sealed segments uploaded.

In team mode (the registry's artifacts on S3), a rating server still writes its ledger to its
local folder as before, and that folder becomes a *spool*: an uploader thread ships every sealed
segment, then the chain that records it, to ``<artifact store>/ledger/`` under the same relative
key (``motor/v3/2026-11-30/<writer>.parquet``, ``motor/_chain/<writer>.jsonl``), and removes the
local segment only once the store has confirmed it. While the store is down nothing is removed:
the spool grows (``ratekeeper_ledger_spool_bytes``) and, beyond ``ledger_spool_max_bytes``,
``/readyz`` says ``degraded``; quotes are still recorded, and shipped when the store is back.

Segments are written once (conditional put; an object already at the key must hash to what the
chain sealed, or it stays in the spool and the upload error is counted). A chain grows while its
writer runs, so it is re-uploaded whole after each segment it seals, and its local file goes once
its closing entry is uploaded. Each chain is shipped by one process at a time: its writer, or,
after the writer stopped, whoever takes its ``flock``. A segment is uploaded before the chain
entry that seals it, so the store never holds a chain naming a segment it lacks.

Reading (``ledger show|list|verify``, ``replay``, ``drift --ledger``, the drift watcher):
``ledger_view`` downloads the objects in range into a temporary folder and links the local
spool's files over them (the spool is newer), and the readers and verifier work on that folder
as on a local ledger. Every key is checked against the ledger's layout before it becomes a local
path, so an object planted as ``../../x`` is never written outside the view.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratekeeper.engine.ledger_chain import CHAIN_FOLDER, CHAIN_SUFFIX, CLOSED, SEALED
from ratekeeper.errors import IntegrityError, NotFoundError, RatekeeperError
from ratekeeper.settings import Settings

if TYPE_CHECKING:
    from ratekeeper.artifacts.s3 import S3Objects

log = logging.getLogger("ratekeeper.ledger")

LEDGER_FOLDER = "ledger"
MAX_SEGMENT_BYTES = 1 << 31  # 2 GiB: a 500,000-row segment is ~30 MB
_PART = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}"
SEGMENT_KEY = re.compile(
    rf"(?P<model>{_PART})/v(?P<version>\d+)/(?P<day>\d{{4}}-\d\d-\d\d)/{_PART}\.parquet"
)
CHAIN_KEY = re.compile(rf"(?P<model>{_PART})/{CHAIN_FOLDER}/{_PART}\{CHAIN_SUFFIX}")


def is_ledger_key(key: str) -> bool:
    """A relative key in the ledger's layout (names, a version, a day; no ``..``)."""
    return ".." not in key and bool(SEGMENT_KEY.fullmatch(key) or CHAIN_KEY.fullmatch(key))


def ledger_objects(blobs: Any) -> S3Objects | None:
    """Where the ledger is shipped: ``<artifact store>/ledger/`` when the artifacts are on S3."""
    from ratekeeper.artifacts.s3 import S3BlobStore

    if isinstance(blobs, S3BlobStore):
        return blobs.objects.child(LEDGER_FOLDER)
    return None


def open_ledger_objects(location: str, settings: Settings) -> S3Objects:
    """A ledger named by its own ``s3://bucket/prefix/ledger`` (the CLI's ``--ledger``)."""
    from ratekeeper.artifacts.s3 import S3Objects

    return S3Objects(
        location,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        max_attempts=settings.s3_max_attempts,
    )


@dataclass(frozen=True)
class SpoolState:
    bytes: int = 0
    """Bytes in the local folder not yet in the store (sealed, open segments and chains)."""
    segments: int = 0
    full: bool = False
    error: str | None = None
    """The last upload failure (``None``: the last round shipped everything it could)."""

    def to_dict(self) -> dict[str, Any]:
        """For ``/readyz``, which anyone reaching the server reads: no bucket, no endpoint."""
        return {
            "bytes": self.bytes,
            "segments": self.segments,
            "full": self.full,
            "uploading": self.error is None,
        }


class SpoolUploader:
    """Ships one ledger folder's sealed segments and chains to the store."""

    def __init__(
        self,
        root: Path,
        objects: S3Objects,
        max_bytes: int,
        owned: Callable[[], set[Path]] = set,
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        """``owned()``: the chains this process writes (read without their lock, never removed)."""
        self.root, self.objects, self.max_bytes = root, objects, max_bytes
        self._owned = owned
        self._observe = observe or (lambda _event, _n: None)
        self.state = SpoolState()
        self.uploaded = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval: float) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="ratekeeper-ledger-upload", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _run(self, interval: float) -> None:
        wait = interval
        while not self._stop.wait(wait):
            ok = self.ship()
            # The store is down: back off (up to a minute) instead of hammering it.
            wait = interval if ok else min(max(wait, interval) * 2, 60.0)

    def ship(self) -> bool:
        """One round: upload what is sealed; ``False`` when the store refused or was down."""
        error: str | None = None
        owned = self._owned()
        for chain in sorted(self.root.glob(f"*/{CHAIN_FOLDER}/*{CHAIN_SUFFIX}")):
            try:
                self._ship_chain(chain, chain in owned)
            except RatekeeperError as exc:
                error = exc.message
                self._observe("upload_error", 1)
                log.warning("ledger upload: %s (kept in the spool)", exc.message)
                if not isinstance(exc, IntegrityError):
                    break  # the store is down or refuses us: try again next round
            except (OSError, ValueError) as exc:  # removed under us, or a cut-off line: next round
                log.debug("ledger upload of %s: %s", chain, exc)
        self.state = self._measure(error)
        self._observe("spool_bytes", self.state.bytes)
        self._observe("spool_segments", self.state.segments)
        return error is None

    def _ship_chain(self, path: Path, owned: bool) -> None:
        with _chain_lock(path, owned) as locked:
            if not locked:
                return  # its writer runs in another process (which ships it), or is shipping
            text = path.read_bytes()
            text = text[: text.rfind(b"\n") + 1]  # complete entries only (it may be growing)
            entries = [json.loads(line) for line in text.splitlines()]
            shipped = []
            for entry in entries:
                if entry.get("kind") != SEALED or entry.get("sha256") is None:
                    continue
                segment = str(entry.get("segment", ""))
                local = self.root / segment
                if not is_ledger_key(segment) or not local.exists():
                    continue
                self._put_segment(segment, local, str(entry["sha256"]))
                shipped.append(local)
            relative = path.relative_to(self.root).as_posix()
            if not is_ledger_key(relative):
                return
            self.objects.put(relative, text)  # after its segments: it never names a missing one
            for local in shipped:
                local.unlink(missing_ok=True)
                self.uploaded += 1
                self._observe("uploaded", 1)
            if not owned and entries and entries[-1].get("kind") == CLOSED:
                path.unlink()  # its end is in the store: nothing of it is left to ship

    def _put_segment(self, key: str, local: Path, sha256: str) -> None:
        data = local.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"ledger segment {key} no longer hashes to what its chain sealed")
        if self.objects.put_once(key, data, {"sha256": sha256}):
            return
        stored = self.objects.get(key, MAX_SEGMENT_BYTES)  # uploaded before (a retried round)
        if stored is None or hashlib.sha256(stored).hexdigest() != sha256:
            raise IntegrityError(
                f"the store holds another object at ledger segment {key}: kept in the spool"
            )

    def _measure(self, error: str | None) -> SpoolState:
        total, segments = 0, 0
        for path in self.root.glob("*/*/**/*"):
            with contextlib.suppress(OSError):  # sealed or shipped while we looked
                if path.is_file():
                    total += path.stat().st_size
                    segments += path.suffix in (".parquet", ".arrows")
        return SpoolState(total, segments, total >= self.max_bytes, error)


@contextlib.contextmanager
def _chain_lock(path: Path, owned: bool) -> Iterator[bool]:
    if owned:  # this process writes it and holds its lock already
        yield True
        return
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # released when the file is closed


# -- reading ----------------------------------------------------------------------------------
@contextlib.contextmanager
def ledger_view(
    root: Path | None,
    objects: S3Objects | None,
    *,
    model: str | None = None,
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Path]:
    """A folder to read the ledger from: ``root`` itself when there is no store; else the
    store's objects in range, with the local spool (``root``, when given) linked over them."""
    if objects is None:
        if root is None:
            raise NotFoundError("no quote ledger: give its folder")
        yield root
        return
    # A segment's folder is the day of its first row, so look one day further back.
    first = (since - timedelta(days=1)).astimezone(UTC).date() if since is not None else None
    last = until.astimezone(UTC).date() if until is not None else None
    with tempfile.TemporaryDirectory(prefix="ratekeeper-ledger-") as folder:
        view = Path(folder)
        found = 0
        for key, _size in objects.list(f"{model}/" if model is not None else ""):
            if not _wanted(key, model, version, first, last):
                continue
            data = objects.get(key, MAX_SEGMENT_BYTES)
            if data is None:  # removed while listed
                continue
            target = view / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            found += 1
        if root is not None and root.is_dir():
            for path in root.glob("*/*/**/*"):
                relative = path.relative_to(root).as_posix()
                if not path.is_file() or not _wanted_local(relative, model, version):
                    continue
                target = view / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)
                target.symlink_to(path.resolve())  # the spool's copy is the newer one
                found += 1
        if not found:
            where = objects.location + (f" or {root}" if root is not None else "")
            raise NotFoundError(f"there is no quote ledger at {where}")
        yield view


def _wanted(
    key: str, model: str | None, version: int | None, first: date | None, last: date | None
) -> bool:
    if CHAIN_KEY.fullmatch(key) and ".." not in key:
        return model is None or key.startswith(f"{model}/")
    match = SEGMENT_KEY.fullmatch(key)
    if match is None or ".." in key:
        return False  # not the ledger's layout: never becomes a path
    if version is not None and int(match["version"]) != version:
        return False
    try:
        day = date.fromisoformat(match["day"])
    except ValueError:
        return False
    return (first is None or day >= first) and (last is None or day <= last)


def _wanted_local(relative: str, model: str | None, version: int | None) -> bool:
    if model is not None and not relative.startswith(f"{model}/"):
        return False
    parts = relative.split("/")
    return version is None or parts[1] in (CHAIN_FOLDER, f"v{version}")
