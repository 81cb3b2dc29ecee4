"""Portfolio files in and out: Parquet or CSV, streamed in chunks, never half-written.

Readers hand out chunks: an Arrow record batch, and the rows with a cell that could not be read
as its factor's type. String columns of Parquet books are read dictionary-encoded, so a rating
factor's level codes come from the file instead of from hashing every string. A CSV book is read
with the model's signature as column types (rating-factor levels dictionary-encoded, numeric
factors as text turned into float64 chunk by chunk: a cell that is not a number becomes null
and its row is rejected with the text it held); the other columns are inferred.

Writers write to a hidden temporary file beside the target and rename it into place only when
the whole run succeeded: a reader of the target sees the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.signature import CATEGORICAL, INTEGER, NUMERIC, Signature

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def file_format(path: Path, override: str | None = None) -> str:
    """``parquet`` or ``csv``, from ``override`` or the file's extension."""
    if override is not None:
        if override not in ("parquet", "csv"):
            raise InvalidInputError(f"unknown file format {override!r}: use parquet or csv")
        return override
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise InvalidInputError(
            f"cannot tell the format of {path.name}: name it .parquet, .pq or .csv "
            "(or pass the format)"
        )
    return found


Unreadable = dict[int, str]
"""Row (in its chunk) -> why a cell of it could not be read: the row must be rejected."""


@dataclass
class BookReader:
    """The chunks of one input file, with the schema they share and the row count if known."""

    schema: Any
    total_rows: int | None
    chunks: Iterator[tuple[Any, Unreadable]]


def open_book(path: Path, kind: str, signature: Signature, chunk_rows: int) -> BookReader:
    if not path.is_file():
        raise InvalidInputError(f"input file {path} does not exist")
    if kind == "parquet":
        return _open_parquet(path, chunk_rows)
    return _open_csv(path, signature, chunk_rows)


def _open_parquet(path: Path, chunk_rows: int) -> BookReader:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        strings = [
            f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]
        book = pq.ParquetFile(path, read_dictionary=strings)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"cannot read {path.name} as Parquet: {exc}") from None
    batches = book.iter_batches(batch_size=chunk_rows, use_threads=True)
    chunks: Iterator[tuple[Any, Unreadable]] = ((batch, {}) for batch in batches)
    return BookReader(book.schema_arrow, book.metadata.num_rows, chunks)


def _open_csv(path: Path, signature: Signature, chunk_rows: int) -> BookReader:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types: dict[str, Any] = {}
    numeric = [f.name for f in signature.fields if f.kind in (NUMERIC, INTEGER)]
    for field in signature.fields:
        if field.kind == CATEGORICAL:
            types[field.name] = pa.dictionary(pa.int32(), pa.string())
        elif field.kind in (NUMERIC, INTEGER):
            types[field.name] = pa.string()  # read as text: a bad cell rejects its row only
    # About 64 bytes per policy row: blocks of roughly chunk_rows rows.
    block_size = min(max(chunk_rows * 64, 1 << 20), 1 << 28)
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block_size),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"cannot read {path.name} as CSV: {exc}") from None
    numbers = [name for name in numeric if name in reader.schema.names]
    schema = reader.schema
    for name in numbers:
        schema = schema.set(schema.get_field_index(name), pa.field(name, pa.float64()))
    return BookReader(schema, None, _csv_chunks(path, reader, numbers, schema))


def _csv_chunks(
    path: Path, reader: Any, numbers: list[str], schema: Any
) -> Iterator[tuple[Any, Unreadable]]:
    import pyarrow as pa

    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise InvalidInputError(f"cannot read {path.name} as CSV: {exc}") from None
        if batch.num_rows:
            yield _to_numbers(batch, numbers, schema)


def _to_numbers(batch: Any, numbers: list[str], schema: Any) -> tuple[Any, Unreadable]:
    """The batch with its numeric factors' text as float64; rows whose text is not a number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    problems: dict[int, list[str]] = {}
    columns = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name in numbers:
            try:
                column = pc.cast(column, pa.float64())
            except pa.ArrowInvalid:  # some cell is not a number: find which, cell by cell
                values: list[float | None] = []
                for row, text in enumerate(column.to_pylist()):
                    try:
                        values.append(None if text is None else float(text))
                    except ValueError:
                        values.append(None)
                        problems.setdefault(row, []).append(
                            f"{name}: wrong_type (expected a number, got the text {text!r})"
                        )
                column = pa.array(values, pa.float64())
        columns.append(column)
    unreadable = {row: "; ".join(reasons) for row, reasons in problems.items()}
    return pa.RecordBatch.from_arrays(columns, schema=schema), unreadable


class BookWriter:
    """Writes batches to a temporary file; ``commit`` renames it to the target."""

    def __init__(
        self, target: Path, kind: str, schema: Any, *, distinct: tuple[str, ...] = ()
    ) -> None:
        """``distinct`` names columns whose values are mostly all different (prices): Parquet
        writes them plainly instead of first trying a dictionary of their values."""

        if not target.parent.is_dir():
            raise InvalidInputError(f"the output folder {target.parent} does not exist")
        self.target = target
        self.rows = 0
        self._temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        self._writer: Any
        if kind == "parquet":
            import pyarrow.parquet as pq

            dictionary = [name for name in schema.names if name not in distinct]
            self._writer = pq.ParquetWriter(
                self._temporary, schema, compression="zstd", use_dictionary=dictionary
            )
        else:
            import pyarrow.csv as pacsv

            self._writer = pacsv.CSVWriter(self._temporary, schema)

    def write(self, batch: Any) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.rows += batch.num_rows

    def commit(self) -> None:
        self._writer.close()
        os.replace(self._temporary, self.target)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            self._temporary.unlink()
