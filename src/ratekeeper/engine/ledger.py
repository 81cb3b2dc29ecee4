"""The quote ledger: every real-time price, append-only, in columnar segments.

A quote is *recorded* on the hot path by appending its values (ids, time, price, the policy's
value of each signature field) to its model version's in-memory list, about a microsecond; a
background thread slices the lists into columns and writes them out every ``flush_interval``
seconds. So a crash of the process loses at most the last interval, and the quote path never
waits for a disk.

Layout, under the ledger root::

    <model>/v<version>/<YYYY-MM-DD>/<start>-<host>-<pid>.arrows    the open segment
    <model>/v<version>/<YYYY-MM-DD>/<start>-<host>-<pid>.parquet   closed segments

One writer process per file, so workers and replicas never contend. The open segment is an Arrow
IPC *stream*: each flush appends record batches of up to ``BATCH_ROWS`` rows (small, so that
building one never holds the GIL for long) and ``fsync``s once, and a stream cut short by a crash
still reads up to its last complete batch. A segment
is closed after ``segment_seconds`` or ``segment_rows``, at midnight UTC and when the server stops:
it is rewritten as a Parquet file (zstd) and the stream file removed. Segments left open by a
process that died are closed by the next ledger that starts on the same host.

Each writer also keeps a chain per model (``<model>/_chain/``, see ``ledger_chain.py``): every
segment it opens and seals, with the sealed file's SHA-256 and row count, hash-linked and sealed
with the server's signing key, so ``ledger verify`` detects a row deleted, edited or reordered, a
segment removed or slipped in, and a chain edited or cut short. Files are created 0600 and
folders 0700, whatever the umask: the ledger holds every policy's rating factors.

Every row holds ``quote_id``, ``quoted_at`` (UTC), ``model``, ``version``, ``endpoint`` (quote,
score, invocations), ``route`` (what served it: Production, an alias, or ``version N``),
``prediction``, ``arm`` (``champion`` or ``challenger`` during a rollout, else ``champion``; a
pinned quote's ``version N`` or alias), ``shadow_version`` and ``shadow_prediction`` (the price a
shadow gave the same policy off the request path; null otherwise), and ``inputs``: a struct with
the version's signature fields as validated (numbers as float64, categorical levels and ids as
strings). DuckDB reads the closed segments directly: ``SELECT * FROM
read_parquet('<root>/**/*.parquet', union_by_name=true)``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ratekeeper.engine.ids import _ALPHABET
from ratekeeper.engine.ledger_chain import (
    CHAIN_FOLDER,
    CHAIN_SUFFIX,
    CLOSED,
    FILE_MODE,
    OPENED,
    SEALED,
    Chain,
    Fingerprint,
    create_private,
    file_sha256,
    make_dirs,
)
from ratekeeper.engine.ledger_store import SpoolState, SpoolUploader
from ratekeeper.errors import InvalidInputError, NotFoundError
from ratekeeper.governance.signing import SigningKey
from ratekeeper.packaging.signature import ANY, CATEGORICAL, Signature
from ratekeeper.settings import Settings

if TYPE_CHECKING:
    from ratekeeper.artifacts.s3 import S3Objects

log = logging.getLogger("ratekeeper.ledger")

OPEN_SUFFIX, CLOSED_SUFFIX = ".arrows", ".parquet"
BATCH_ROWS = 256  # rows per record batch written: each takes ~0.5 ms to build, holding the GIL
ENDPOINTS = ("quote", "score", "invocations")
# A queued quote: these values, then its policy's value of each signature field, in order.
QUOTE_ID, TIME_NS, ENDPOINT, ROUTE, PREDICTION, ARM, SHADOW_VERSION, SHADOW_PREDICTION = range(8)
FIRST_INPUT = SHADOW_PREDICTION + 1


def input_schema(signature: Signature) -> pa.StructType:
    """The ``inputs`` struct of a version's ledger rows: its signature fields, in order."""
    return pa.struct(
        [
            pa.field(f.name, pa.string() if f.kind in (CATEGORICAL, ANY) else pa.float64())
            for f in signature.fields
        ]
    )


def ledger_schema(signature: Signature) -> pa.Schema:
    return pa.schema(
        [
            pa.field("quote_id", pa.string(), nullable=False),
            pa.field("quoted_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("version", pa.int64(), nullable=False),
            pa.field("endpoint", pa.string(), nullable=False),
            pa.field("route", pa.string(), nullable=False),
            pa.field("prediction", pa.float64(), nullable=False),
            # champion or challenger during a rollout (else champion), or what a pinned quote
            # asked for (``version 2``, an alias); a shadow's price and version beside it.
            pa.field("arm", pa.string(), nullable=False),
            pa.field("shadow_version", pa.int64(), nullable=True),
            pa.field("shadow_prediction", pa.float64(), nullable=True),
            pa.field("inputs", input_schema(signature), nullable=False),
        ]
    )


@dataclass(frozen=True)
class LedgerConfig:
    root: Path
    flush_interval: float = 1.0
    """Seconds between two writes of the queue: the most a crash can lose."""
    segment_seconds: float = 900.0
    segment_rows: int = 500_000
    fsync: bool = True
    max_queued: int = 1_000_000
    """Quotes held in memory while the disk refuses writes; beyond it they are counted as lost."""
    key: SigningKey | None = None
    """The server's signing key: seals each chain entry (``None``: the chains hold hashes only)."""
    store: S3Objects | None = None
    """Team mode: ship sealed segments and chains here (``ledger_store.py``); ``root`` is then
    the local spool, emptied as the store confirms each upload."""
    spool_max_bytes: int = 1 << 30
    """Spool bytes beyond which the ledger reports itself full (``/readyz`` degraded)."""
    upload_interval: float = 2.0
    """Seconds between two upload rounds (doubling up to a minute while the store is down)."""


class QuoteLedger:
    """Records quotes of one process. ``start()`` in the process that serves (after any fork)."""

    def __init__(
        self, config: LedgerConfig, observe: Callable[[str, int], None] | None = None
    ) -> None:
        """``observe(event, n)`` hears of ``written`` rows, ``dropped`` rows and ``write_error``."""
        self.config = config
        self._observe = observe or (lambda _event, _n: None)
        self._queues: dict[tuple[str, int], _Queue] = {}  # per model version
        self._queue_lock = threading.Lock()  # record() against the writer taking the queues
        self._queued = 0
        self._segments: dict[tuple[str, int], _Segment] = {}
        self._chains: dict[str, Chain] = {}  # this writer's chain per model
        self._writer: str | None = None  # <start>-<host>-<pid>, made in the writing process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one flush at a time (the thread, or close())
        self._uploader = (
            SpoolUploader(
                config.root,
                config.store,
                config.spool_max_bytes,
                owned=lambda: {chain.path for chain in tuple(self._chains.values())},
                observe=self._observe,
            )
            if config.store is not None
            else None
        )
        self.recorded = 0
        self.written = 0
        self.write_errors = 0
        self.dropped = 0

    # -- the hot path -------------------------------------------------------------------------
    def record(
        self,
        quote_id: str,
        name: str,
        version: int,
        signature: Signature,
        endpoint: str,
        route: str,
        policy: Mapping[str, Any],
        prediction: float,
        arm: str = "champion",
        shadow_version: int | None = None,
        shadow_prediction: float | None = None,
    ) -> None:
        """Queue one priced policy; the background thread writes it within ``flush_interval``.

        ``arm`` is what priced it for the customer (``champion``, ``challenger``, or a pinned
        ``version N`` / alias); a shadow's version and price go beside the champion's."""
        queue = self._queues.get((name, version))
        if queue is None:  # the first quote of this version: the writer must not see it half-made
            with self._queue_lock:
                queue = self._queues.setdefault((name, version), _Queue(signature))
        # The row's values go straight into the version's flat list, columns interleaved, and
        # the writer slices columns out: no container per quote is made, neither here nor when
        # writing. Made by the hundred at each write, such objects started garbage collections
        # that paused the event loop for milliseconds.
        row = (
            quote_id, time.time_ns(), endpoint, route, prediction, arm, shadow_version,
            shadow_prediction, *map(policy.get, queue.names),
        )  # fmt: skip
        with self._queue_lock:
            if self._queued < self.config.max_queued:
                queue.values.extend(row)
                self._queued += 1
                self.recorded += 1
                return
            self.dropped += 1  # the disk has refused writes for long: say so, keep pricing
        self._observe("dropped", 1)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        make_dirs(self.config.root, self.config.root)
        close_orphaned_segments(self.config.root, self.config.key)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ratekeeper-ledger", daemon=True)
        self._thread.start()
        if self._uploader is not None:
            self._uploader.start(self.config.upload_interval)

    @property
    def spool(self) -> SpoolState | None:
        """With the ledger on object storage: what waits in the local spool (else ``None``)."""
        return self._uploader.state if self._uploader is not None else None

    def close(self) -> None:
        """Write what is queued and close every open segment (as Parquet)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            self._write_queued()
            for segment in self._segments.values():
                segment.close()
            self._segments.clear()
            for chain in self._chains.values():
                chain.close()
            self._chains.clear()
        if self._uploader is not None:
            self._uploader.stop()
            self._uploader.ship()  # what was sealed just now; a store down keeps it spooled

    def flush(self) -> None:
        """Write what is queued now (the background thread does this every interval)."""
        with self._lock:
            self._write_queued()

    def _run(self) -> None:
        # pyarrow imports pandas the first time it builds an array (~0.4 s of import holding the
        # GIL by turns): at start, not in the first write, when quotes may already be arriving.
        pa.array([0.0], pa.float64())
        while not self._stop.wait(self.config.flush_interval):
            try:
                with self._lock:
                    self._write_queued()
                    self._rotate()
            except Exception:  # a full disk must not stop the thread (the rows are re-queued)
                self.write_errors += 1
                self._observe("write_error", 1)
                log.exception("cannot write the quote ledger under %s", self.config.root)

    # -- writing -----------------------------------------------------------------------------------
    def _write_queued(self) -> None:
        with self._queue_lock:
            taken = [(key, queue, queue.values) for key, queue in self._queues.items()]
            for queue in self._queues.values():
                queue.values = []
            self._queued = 0
        # Small record batches: building one holds the GIL, and the event loop that answers
        # quotes must get it back within a millisecond or two, even at thousands of quotes/s.
        pending = collections.deque(
            (key, queue, values[start : start + BATCH_ROWS * queue.width])
            for key, queue, values in taken
            for start in range(0, len(values), BATCH_ROWS * queue.width)
        )
        written: set[tuple[str, int]] = set()
        try:
            while pending:
                key, queue, values = pending[0]
                self._write(key, queue, values)
                written.add(key)
                pending.popleft()
                time.sleep(0)  # let the serving thread run between batches
            for key in written:
                self._segments[key].sync()
        except BaseException:
            with self._queue_lock:  # back at the front, in order, for next time
                for _key, queue, values in reversed(pending):
                    queue.values[0:0] = values
                    self._queued += len(values) // queue.width
            raise

    def _write(self, key: tuple[str, int], queue: _Queue, values: list[Any]) -> None:
        batch = queue.record_batch(key, values)
        day = _day(values[TIME_NS])
        segment = self._segments.get(key)
        if segment is None or segment.day != day:
            if segment is not None:
                del self._segments[key]
                segment.close()
            segment = _Segment.open(self.config, key, batch.schema, day, self._chain(key[0]))
            self._segments[key] = segment
        segment.write(batch)
        self.written += batch.num_rows
        self._observe("written", batch.num_rows)

    def _chain(self, model: str) -> Chain:
        chain = self._chains.get(model)
        if chain is None:
            if self._writer is None:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                self._writer = f"{stamp}-{_host()}-{os.getpid()}"
            chain = Chain.create(
                self.config.root, model, self._writer, self.config.key, self.config.fsync
            )
            self._chains[model] = chain
        return chain

    def _rotate(self) -> None:
        now = time.monotonic()
        today = datetime.now(UTC).date()
        for key, segment in list(self._segments.items()):
            if (
                segment.rows >= self.config.segment_rows
                or now - segment.opened >= self.config.segment_seconds
                or segment.day != today
            ):
                segment.close()
                del self._segments[key]


class _Segment:
    def __init__(
        self, path: Path, sink: Any, writer: Any, day: date, fsync: bool, chain: Chain
    ) -> None:
        self.path, self._sink, self._writer, self.day, self._fsync = path, sink, writer, day, fsync
        self.chain = chain
        self.rows = 0
        self.opened = time.monotonic()

    @classmethod
    def open(
        cls,
        config: LedgerConfig,
        key: tuple[str, int],
        schema: pa.Schema,
        day: date,
        chain: Chain,
    ) -> Any:
        folder = config.root / key[0] / f"v{key[1]}" / day.isoformat()
        make_dirs(config.root, folder)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = folder / f"{stamp}-{_host()}-{os.getpid()}{OPEN_SUFFIX}"
        os.close(create_private(path))  # the file first: a chained segment always has one
        chain.opened(path)
        sink = pa.OSFile(str(path), "wb")
        return cls(path, sink, pa.ipc.new_stream(sink, schema), day, config.fsync, chain)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)  # to the OS: a crash of the process loses nothing after
        self.rows += batch.num_rows

    def sync(self) -> None:
        """To the disk, once per flush (a crash of the machine loses at most that interval)."""
        self._sink.flush()
        if self._fsync:
            os.fsync(self._sink.fileno())

    def close(self) -> None:
        self._writer.close()
        self._sink.close()
        self.chain.sealed(self.path, seal(self.path))


def seal(path: Path) -> Fingerprint:
    """Rewrite an open (stream) segment as Parquet, atomically, and remove the stream file."""
    table = read_stream_segment(path)
    target = path.with_suffix(CLOSED_SUFFIX)
    if not table.num_rows:
        path.unlink()
        return Fingerprint(None, 0, None, None)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq  # here, not at import: it is not on a server's start path

    pq.write_table(table, partial, compression="zstd")
    os.chmod(partial, FILE_MODE)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    # Hashed before it takes its name: what is chained is what this process wrote.
    sha256 = file_sha256(partial)
    os.replace(partial, target)
    path.unlink()
    times = pc.min_max(table["quoted_at"])
    return Fingerprint(
        sha256,
        table.num_rows,
        times["min"].as_py().isoformat(),
        times["max"].as_py().isoformat(),
    )


def read_stream_segment(path: Path, *, live: bool = False) -> pa.Table:
    """Every complete record batch of a stream segment (a crash may have cut off the last).

    ``live``: the segment may be being written right now, so a partial last batch is normal.
    """
    batches: list[pa.RecordBatch] = []
    schema = None
    with pa.OSFile(str(path), "rb") as source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            return pa.table({})  # not even a schema was written
        schema = reader.schema
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                if not live:
                    log.warning("ledger segment %s ends in a partial batch; kept the rest", path)
                break
    return pa.Table.from_batches(batches, schema=schema)


def close_orphaned_segments(root: Path, key: SigningKey | None = None) -> int:
    """Seal the open segments this host's dead processes left behind; returns how many.

    A dead writer's chain is resumed (its lock is free) and every segment it announced but did not
    seal is sealed into it, then the chain gets its ``closed`` entry (``recovered``). A stream file
    no chain announced (written by a ledger older than the chains, or planted) is still sealed, so
    its rows stay readable, but it enters no chain: ``ledger verify`` names it.
    """
    sealed = 0
    host = _host()
    for path in sorted(root.glob(f"*/{CHAIN_FOLDER}/*-{host}-*{CHAIN_SUFFIX}")):
        sealed += _recover_chain(root, path, key)
    chained_writers = {
        (p.parent.parent.name, p.stem.rsplit("-", 1)[-1])
        for p in root.glob(f"*/{CHAIN_FOLDER}/*-{host}-*{CHAIN_SUFFIX}")
    }
    for path in root.glob(f"*/v*/*/*{OPEN_SUFFIX}"):
        parts = path.stem.rsplit("-", 2)
        if len(parts) != 3 or parts[1] != host or not parts[2].isdigit():
            continue
        if _alive(int(parts[2])) or (path.parents[2].name, parts[2]) in chained_writers:
            continue
        try:
            seal(path)
            sealed += 1
        except OSError as exc:  # another process sealed it first
            log.debug("segment %s: %s", path, exc)
    if sealed:
        log.warning("closed %d quote-ledger segment(s) left open by a stopped process", sealed)
    return sealed


def _recover_chain(root: Path, path: Path, key: SigningKey | None) -> int:
    """Seal into a dead writer's chain what it left open, and close the chain."""
    try:
        lines = path.read_text().splitlines()
        entries = [json.loads(line) for line in lines]
    except (OSError, ValueError) as exc:  # a cut-off last line: left for verify to name
        log.warning("cannot resume the ledger chain %s: %s", path, exc)
        return 0
    if not entries or entries[-1]["kind"] == CLOSED:
        return 0
    chain = Chain.resume(root, path, key)
    if chain is None:  # its writer is alive, or another ledger is recovering it now
        return 0
    done = {e["segment"] for e in entries if e["kind"] == SEALED}
    sealed = 0
    try:
        for entry in entries:
            if entry["kind"] != OPENED or entry["segment"] in done:
                continue
            target = root / entry["segment"]
            stream = target.with_suffix(OPEN_SUFFIX)
            if stream.exists():
                chain.sealed(stream, seal(stream))
                sealed += 1
            elif target.exists():  # sealed, but the writer died before chaining it
                chain.sealed(stream, _fingerprint(target))
        chain.close(recovered=True)
    except BaseException:
        chain.handle.close()
        raise
    return sealed


def _fingerprint(path: Path) -> Fingerprint:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["quoted_at"])
    times = pc.min_max(table["quoted_at"])
    return Fingerprint(
        file_sha256(path),
        table.num_rows,
        times["min"].as_py().isoformat(),
        times["max"].as_py().isoformat(),
    )


# -- reading --------------------------------------------------------------------------------------
def read_ledger(
    root: Path,
    *,
    model: str | None = None,
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pa.Table:
    """The recorded quotes (closed and open segments), oldest first, optionally filtered.

    ``inputs`` differs between versions; with ``version=None`` and several versions, the struct
    holds the union of their fields (null where a version had no such field).
    """
    tables = [
        table
        for path in _segment_files(root, model, version, since, until)
        if (table := _read_segment(path)).num_rows
    ]
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables, promote_options="permissive")
    import pyarrow.compute as pc

    if since is not None:
        table = table.filter(pc.greater_equal(table["quoted_at"], _timestamp(since)))
    if until is not None:
        table = table.filter(pc.less(table["quoted_at"], _timestamp(until)))
    return table.sort_by([("quoted_at", "ascending")])  # stable: recorded order within a tick


def inputs_table(quotes: pa.Table) -> pa.Table:
    """The recorded inputs as a table of their own (one column per signature field)."""
    if quotes.num_rows == 0 or "inputs" not in quotes.column_names:
        return pa.table({})
    inputs = quotes.column("inputs").combine_chunks()
    return pa.Table.from_arrays(inputs.flatten(), names=[f.name for f in inputs.type])


def find_quote(root: Path, quote_id: str) -> dict[str, Any]:
    """One recorded quote, found through the day its time-ordered id carries."""
    return locate_quote(root, quote_id)[0]


def locate_quote(root: Path, quote_id: str) -> tuple[dict[str, Any], Path]:
    """One recorded quote and the segment file it was found in."""
    import pyarrow.compute as pc

    quoted = quote_time(quote_id)
    for path in _segment_files(root, None, None, quoted, None, last=quoted):
        table = _read_segment(path)
        if not table.num_rows:
            continue
        hits = table.filter(pc.equal(table["quote_id"], quote_id))
        if hits.num_rows:
            return hits.to_pylist()[0], path
    raise NotFoundError(f"quote {quote_id} is not in the ledger at {root}")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w``."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not number.replace(".", "", 1).isdigit():
        raise InvalidInputError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    return timedelta(**{units[unit]: float(number)})


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A duration before now (``30m``, ``24h``, ``7d``), or an ISO date/time (UTC by default)."""
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except InvalidInputError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"--since {text!r}: give a duration such as 30m, 24h or 7d, or an ISO date"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def quote_time(quote_id: str) -> datetime:
    """When a quote id was made (its first 10 characters are milliseconds since the epoch)."""
    text = quote_id.strip().upper()
    if len(text) != 26 or any(c not in _ALPHABET for c in text):
        raise InvalidInputError(f"{quote_id!r} is not a quote id (26 characters of base32)")
    millis = 0
    for c in text[:10]:
        millis = millis * 32 + _ALPHABET.index(c)
    return datetime.fromtimestamp(millis / 1000, UTC)


def _segment_files(
    root: Path,
    model: str | None,
    version: int | None,
    since: datetime | None,
    until: datetime | None,
    last: datetime | None = None,
) -> Iterator[Path]:
    if not root.is_dir():
        raise NotFoundError(f"there is no quote ledger at {root}")
    # A segment's folder is the day of its first row, so look one day further back.
    first_day = (since - timedelta(days=1)).astimezone(UTC).date() if since is not None else None
    end = until or last
    last_day = end.astimezone(UTC).date() if end is not None else None
    model_glob = model if model is not None else "*"
    version_glob = f"v{version}" if version is not None else "v*"
    for folder in sorted(root.glob(f"{model_glob}/{version_glob}/*")):
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if (first_day and day < first_day) or (last_day and day > last_day):
            continue
        yield from sorted(folder.glob(f"*{CLOSED_SUFFIX}"))
        yield from sorted(folder.glob(f"*{OPEN_SUFFIX}"))


def _read_segment(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        if path.suffix == OPEN_SUFFIX:
            return read_stream_segment(path, live=True)
        return pq.read_table(path)
    except FileNotFoundError:  # sealed (open → Parquet) while we listed the folder
        sealed = path.with_suffix(CLOSED_SUFFIX)
        return pq.read_table(sealed) if sealed.exists() else pa.table({})


class _Queue:
    """The quotes of one model version waiting to be written, flat: ``width`` values per quote
    (``QUOTE_ID`` ... ``SHADOW_PREDICTION``, then the value of each signature field)."""

    def __init__(self, signature: Signature) -> None:
        self.schema = ledger_schema(signature)
        self.fields = list(input_schema(signature))
        self.names = tuple(f.name for f in signature.fields)
        # Arrow types and "is an id" per field as plain Python objects: reading them off
        # ``pa.Field`` costs a call into Arrow each time, on every batch.
        self.kinds = [f.type for f in self.fields]
        self.ids = [f.kind == ANY for f in signature.fields]
        self.width = FIRST_INPUT + len(self.names)
        self.values: list[Any] = []

    def record_batch(self, key: tuple[str, int], values: list[Any]) -> pa.RecordBatch:
        width = self.width
        n = len(values) // width
        children = []
        for j, (kind, is_id) in enumerate(zip(self.kinds, self.ids, strict=True)):
            column = values[FIRST_INPUT + j :: width]
            if is_id:  # an id may be any JSON value: kept as its text
                column = [v if v is None or type(v) is str else str(v) for v in column]
            children.append(pa.array(column, type=kind))
        return pa.RecordBatch.from_arrays(
            [
                pa.array(values[QUOTE_ID::width], pa.string()),
                pa.array([t // 1000 for t in values[TIME_NS::width]], pa.timestamp("us", tz="UTC")),
                pa.array([key[0]] * n, pa.string()),
                pa.array([key[1]] * n, pa.int64()),
                pa.array(values[ENDPOINT::width], pa.string()),
                pa.array(values[ROUTE::width], pa.string()),
                pa.array(values[PREDICTION::width], pa.float64()),
                pa.array(values[ARM::width], pa.string()),
                pa.array(values[SHADOW_VERSION::width], pa.int64()),
                pa.array(values[SHADOW_PREDICTION::width], pa.float64()),
                pa.StructArray.from_arrays(children, fields=self.fields),
            ],
            schema=self.schema,
        )


def _day(time_ns: int) -> date:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).date()


def _timestamp(moment: datetime) -> pa.Scalar:
    if moment.tzinfo is None:
        raise InvalidInputError("ledger times must carry a time zone")
    return pa.scalar(moment.astimezone(UTC), pa.timestamp("us", tz="UTC"))


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_root(settings: Settings, registry_url: str) -> Path:
    """``$RATEKEEPER_LEDGER``, else ``ledger/`` beside an embedded registry, else under home."""
    if settings.ledger_dir is not None:
        return settings.ledger_dir
    if registry_url.startswith("sqlite:///"):
        return Path(registry_url.removeprefix("sqlite:///")).parent / "ledger"
    return settings.home / "ledger"


@contextlib.contextmanager
def recording(config: LedgerConfig) -> Iterator[QuoteLedger]:
    ledger = QuoteLedger(config)
    ledger.start()
    try:
        yield ledger
    finally:
        ledger.close()
