"""Portfolio files in and out: Parquet or CSV, streamed in chunks, never half-written.

Readers hand out Arrow record batches. String columns of Parquet books are read
dictionary-encoded, so a rating factor's level codes come from the file instead of from hashing
every string. A CSV book is read with the model's signature as column types (numbers as float64,
rating-factor levels dictionary-encoded); the other columns are inferred.

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


@dataclass
class BookReader:
    """The batches of one input file, with the schema they share and the row count if known."""

    schema: Any
    total_rows: int | None
    batches: Iterator[Any]


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
    return BookReader(book.schema_arrow, book.metadata.num_rows, batches)


def _open_csv(path: Path, signature: Signature, chunk_rows: int) -> BookReader:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types: dict[str, Any] = {}
    for field in signature.fields:
        if field.kind == CATEGORICAL:
            types[field.name] = pa.dictionary(pa.int32(), pa.string())
        elif field.kind in (NUMERIC, INTEGER):
            types[field.name] = pa.float64()
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
    return BookReader(reader.schema, None, _csv_batches(path, reader))


def _csv_batches(path: Path, reader: Any) -> Iterator[Any]:
    import pyarrow as pa

    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise InvalidInputError(
                f"{path.name}: {exc} (a numeric rating factor must hold numbers only)"
            ) from None
        if batch.num_rows:
            yield batch


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
