"""Batch scoring: reprice a whole book from a file, in bounded memory, on every core.

The pipeline reads the book in chunks (Arrow record batches), prices each chunk in a small thread
pool (numpy and ONNX Runtime release the GIL) and writes the chunks back in input order. Each
chunk goes through ``Scorer.price_valid``: the signature check and the scorer the quote endpoint
uses, so a policy gets the same price online and in batch.

Every input row ends up in exactly one of two files: the output (the input columns, then
``prediction``, ``model_name``, ``model_version`` and ``scored_at``, and ``clipped_fields`` when
out-of-range values are clipped) or the rejects file (the input columns, then ``row_number`` and
``reasons``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ratekeeper.batch import files
from ratekeeper.batch.files import BookReader, BookWriter, open_book
from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import InvalidInputError, Problem
from ratekeeper.packaging.frames import to_columns

CHUNK_ROWS = 262_144
STAMPS = ("prediction", "model_name", "model_version", "scored_at")
CLIPPED_COLUMN = "clipped_fields"
"""Under ``out_of_range="clip"``: the fields capped at their training range in that row,
comma-separated in signature order; null when none was."""
REJECT_COLUMNS = ("row_number", "reasons")


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did: every row read is either priced or rejected."""

    model: str
    version: int
    input: Path
    output: Path
    rejects: Path | None
    """Where the rejected rows went (None when no row was rejected and no path was given)."""
    rows_read: int
    rows_priced: int
    rows_rejected: int
    seconds: float
    scored_at: datetime
    clipped: dict[str, int] = field(default_factory=dict)
    """Under ``out_of_range="clip"``: priced rows with that field capped, per field clipped."""
    rows_clipped: int = 0
    """Priced rows with at least one field capped."""

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """One line for people: priced N, rejected M (and where they went)."""
        line = (
            f"priced {self.rows_priced:,} of {self.rows_read:,} policies with {self.model} "
            f"v{self.version} in {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s) "
            f"-> {self.output}; rejected {self.rows_rejected:,}"
        )
        if self.rejects is not None:
            line += f" -> {self.rejects}"
        if self.rows_clipped:
            fields = ", ".join(f"{name} {rows:,}" for name, rows in self.clipped.items())
            line += f"; clipped to the training range {self.rows_clipped:,} ({fields})"
        return line


@dataclass(frozen=True)
class PricedChunk:
    """One chunk's outcome: a price per row (NaN where rejected) and the rejected rows' reasons."""

    prices: np.ndarray
    rejected: np.ndarray
    reasons: list[str]
    """One readable reason per rejected row, in row order."""
    clipped: dict[str, np.ndarray] = field(default_factory=dict)
    """Per field capped at its training range, the rows capped (the report's masks)."""


def price_chunk(scorer: Scorer, batch: Any) -> PricedChunk:
    """Check and price one Arrow record batch: the core shared by files and Spark."""
    columns, n_rows = to_columns(batch)
    priced = scorer.price_valid(columns, n_rows)
    whole = [p for p in priced.report.problems if p.row is None]
    if whole:
        raise InvalidInputError(f"no policy can be priced: {_reason(whole)}", whole)
    rejected = priced.rejected
    reasons = _reasons(scorer, batch, rejected, priced.report.problems) if rejected.any() else []
    return PricedChunk(priced.prices, rejected, reasons, priced.report.clipped)


def _reasons(
    scorer: Scorer, batch: Any, rejected: np.ndarray, reported: list[Problem]
) -> list[str]:
    """Each rejected row's problems, found by the per-policy check the quote endpoint runs."""
    import pyarrow as pa

    rows = np.flatnonzero(rejected)
    used = [name for name in scorer.signature.names if name in batch.schema.names]
    records = batch.select(used).take(pa.array(rows)).to_pylist()
    by_row: dict[int, list[Problem]] = {}
    for problem in reported:
        by_row.setdefault(problem.row or 0, []).append(problem)
    reasons = []
    for row, record in zip(rows.tolist(), records, strict=True):
        problems = scorer.row_problems(record) or by_row.get(row, [])
        reasons.append(_reason(problems) if problems else "failed the signature check")
    return reasons


def _reason(problems: list[Problem]) -> str:
    return "; ".join(f"{p.field}: {p.code} ({p.message})" for p in problems)


def score_file(
    scorer: Scorer,
    input: str | Path,
    output: str | Path,
    *,
    rejects: str | Path | None = None,
    file_format: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    max_rejects: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    out_of_range: str | None = None,
) -> BatchSummary:
    """Price every policy of ``input`` into ``output``; rejected rows go to ``rejects``.

    Without ``rejects``, rejected rows go to ``<output stem>.rejects.<ext>`` beside the output.
    More than ``max_rejects`` rejected rows stops the run with ``InvalidInputError`` and writes
    nothing. ``file_format`` (``parquet`` / ``csv``) overrides the extensions.
    ``out_of_range`` (``reject`` / ``clip``) replaces the version's registered choice for this
    run; under ``clip`` the output gains ``clipped_fields``.
    """
    if out_of_range is not None:
        # Not "allow": a model extrapolating beyond its data is a choice made at registration.
        if out_of_range not in ("reject", "clip"):
            raise InvalidInputError(
                f"out_of_range must be 'reject' or 'clip', not {out_of_range!r}"
            )
        policy = replace(scorer.signature.policy, out_of_range=out_of_range)  # type: ignore[arg-type]
        scorer = scorer.with_policy(policy)
    source, target = Path(input), Path(output)
    if chunk_rows < 1:
        raise InvalidInputError(f"chunk_rows must be positive, got {chunk_rows}")
    if source.resolve() == target.resolve():
        raise InvalidInputError("the output must not overwrite the input file")
    in_kind = files.file_format(source, file_format)
    out_kind = files.file_format(target, file_format)
    rejects_path = Path(rejects) if rejects is not None else _default_rejects(target)
    rejects_kind = files.file_format(rejects_path, file_format)
    if rejects_path.resolve() in (source.resolve(), target.resolve()):
        raise InvalidInputError("the rejects file must differ from the input and the output")
    book = open_book(source, in_kind, scorer.signature, chunk_rows)
    run = _Run(scorer, book, datetime.now(UTC), max_rejects)
    started = time.perf_counter()
    output_writer = BookWriter(target, out_kind, run.output_schema, distinct=("prediction",))
    rejects_writer: BookWriter | None = None
    try:
        if rejects is not None:
            rejects_writer = BookWriter(rejects_path, rejects_kind, run.rejects_schema)
        with _ProgressBar(progress, book.total_rows) as advance:
            for priced, rejected in run.chunks(workers or _default_workers()):
                output_writer.write(priced)
                if rejected.num_rows:
                    if rejects_writer is None:
                        rejects_writer = BookWriter(rejects_path, rejects_kind, run.rejects_schema)
                    rejects_writer.write(rejected)
                advance(priced.num_rows + rejected.num_rows)
    except BaseException:
        output_writer.abort()
        if rejects_writer is not None:
            rejects_writer.abort()
        raise
    output_writer.commit()
    if rejects_writer is not None:
        rejects_writer.commit()
    return BatchSummary(
        model=scorer.name,
        version=scorer.version,
        input=source,
        output=target,
        rejects=rejects_path if rejects_writer is not None else None,
        rows_read=run.rows_read,
        rows_priced=output_writer.rows,
        rows_rejected=run.rows_rejected,
        seconds=time.perf_counter() - started,
        scored_at=run.scored_at,
        clipped={name: rows for name, rows in run.clipped.items() if rows},
        rows_clipped=run.rows_clipped,
    )


class _Run:
    """One batch run: the chunk pipeline and the schemas of its two outputs."""

    def __init__(
        self, scorer: Scorer, book: BookReader, scored_at: datetime, max_rejects: int | None
    ) -> None:
        import pyarrow as pa

        self.clips = scorer.signature.policy.out_of_range == "clip"
        stamps = (*STAMPS, *((CLIPPED_COLUMN,) if self.clips else ()))
        clashes = [n for n in (*stamps, *REJECT_COLUMNS) if n in book.schema.names]
        if clashes:
            raise InvalidInputError(
                f"the input already has column(s) {', '.join(clashes)}, which scoring adds: "
                "rename or drop them first"
            )
        self.scorer, self.book, self.scored_at = scorer, book, scored_at
        self._lock = threading.Lock()
        self.max_rejects = max_rejects
        self.rows_read = 0
        self.rows_rejected = 0
        self.clipped = dict.fromkeys(scorer.signature.names, 0)
        self.rows_clipped = 0
        self._stamp_types = [
            pa.float64(),
            pa.string(),
            pa.int64(),
            pa.timestamp("us", tz="UTC"),
            *([pa.string()] if self.clips else []),
        ]
        self.output_schema = _extend(book.schema, stamps, self._stamp_types)
        self.rejects_schema = _extend(book.schema, REJECT_COLUMNS, [pa.int64(), pa.string()])

    def chunks(self, workers: int) -> Iterator[tuple[Any, Any]]:
        """(priced rows, rejected rows) per input chunk, in input order."""
        pending: deque[Future[tuple[Any, Any]]] = deque()
        chunks = iter(self.book.chunks)
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score") as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="read") as reader,
        ):
            try:
                # The next chunk is read while this thread writes: reading, pricing and writing
                # overlap, and at most workers + 2 chunks are in memory.
                upcoming = reader.submit(next, chunks, None)
                while (chunk := upcoming.result()) is not None:
                    upcoming = reader.submit(next, chunks, None)
                    batch, unreadable = chunk
                    pending.append(pool.submit(self._score, batch, unreadable, self.rows_read))
                    self.rows_read += batch.num_rows
                    while pending and (len(pending) > workers or pending[0].done()):
                        yield self._collect(pending.popleft())
                while pending:
                    yield self._collect(pending.popleft())
            finally:
                for future in pending:
                    future.cancel()

    def _collect(self, future: Future[tuple[Any, Any]]) -> tuple[Any, Any]:
        priced, rejected = future.result()
        self.rows_rejected += rejected.num_rows
        if self.max_rejects is not None and self.rows_rejected > self.max_rejects:
            raise InvalidInputError(
                f"more than {self.max_rejects:,} policies rejected (--max-rejects): nothing written"
            )
        return priced, rejected

    def _score(self, batch: Any, unreadable: files.Unreadable, offset: int) -> tuple[Any, Any]:
        import pyarrow as pa

        chunk = price_chunk(self.scorer, batch)
        rejected_rows, reasons = chunk.rejected, chunk.reasons
        if unreadable:  # a cell the file held as text that is not a number: never priced
            by_row = dict(zip(np.flatnonzero(rejected_rows).tolist(), reasons, strict=True))
            by_row.update(unreadable)  # the text it held, rather than "missing"
            rejected_rows = rejected_rows.copy()
            rejected_rows[list(unreadable)] = True
            reasons = [by_row[row] for row in np.flatnonzero(rejected_rows).tolist()]
        keep = ~rejected_rows
        n_priced = int(keep.sum())
        all_priced = n_priced == batch.num_rows
        priced_rows = batch if all_priced else batch.filter(pa.array(keep))
        prices = chunk.prices if all_priced else chunk.prices[keep]
        stamps = [
            pa.array(prices, type=pa.float64()),
            pa.repeat(pa.scalar(self.scorer.name, pa.string()), n_priced),
            pa.repeat(pa.scalar(self.scorer.version, pa.int64()), n_priced),
            pa.repeat(pa.scalar(self.scored_at, self._stamp_types[3]), n_priced),
        ]
        if self.clips:
            stamps.append(pa.array(self._clipped_fields(chunk.clipped, keep), type=pa.string()))
        priced = pa.RecordBatch.from_arrays(
            [*priced_rows.columns, *stamps], schema=self.output_schema
        )
        rows = np.flatnonzero(rejected_rows)
        rejected = pa.RecordBatch.from_arrays(
            [
                *batch.take(pa.array(rows)).columns,
                pa.array(rows + offset, type=pa.int64()),
                pa.array(reasons, type=pa.string()),
            ],
            schema=self.rejects_schema,
        )
        return priced, rejected

    def _clipped_fields(self, clipped: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
        """Per priced row, the fields capped at their range ("a,b"), None where none was;
        counted into the run's totals. Called by the scoring threads: counts under a lock."""
        labels = np.full(int(keep.sum()), None, dtype=object)
        if not clipped:
            return labels
        names = [n for n in self.scorer.signature.names if n in clipped]
        any_clipped = np.zeros(len(keep), dtype=bool)
        for name in names:
            rows = clipped[name] & keep
            any_clipped |= rows
            hits = rows[keep]
            labels[hits] = [name if label is None else f"{label},{name}" for label in labels[hits]]
            with self._lock:
                self.clipped[name] += int(rows.sum())
        with self._lock:
            self.rows_clipped += int(any_clipped.sum())
        return labels


def _extend(schema: Any, names: tuple[str, ...], types: list[Any]) -> Any:
    import pyarrow as pa

    extended = schema.remove_metadata()
    for name, kind in zip(names, types, strict=True):
        extended = extended.append(pa.field(name, kind))
    return extended


def _default_rejects(output: Path) -> Path:
    return output.with_name(f"{output.stem}.rejects{output.suffix}")


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


class _ProgressBar:
    """A rich progress bar on stderr with rows/s, only when stderr is a terminal."""

    def __init__(self, wanted: bool, total: int | None) -> None:
        self._bar: Any = None
        if wanted and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("scoring", total=total, rate="-")
            self._started = time.perf_counter()
            self._done = 0

    def __enter__(self) -> Callable[[int], None]:
        if self._bar is None:
            return lambda _rows: None
        self._bar.start()
        return self._advance

    def _advance(self, rows: int) -> None:
        self._done += rows
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._bar.update(self._task, advance=rows, rate=f"{self._done / elapsed:,.0f}")

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
