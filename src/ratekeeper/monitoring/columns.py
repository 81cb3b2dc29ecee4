"""A data set's rating factors, counted into a reference profile's bins without a detour.

Everything goes through Apache Arrow: a pandas frame is converted once (a categorical column
stays a dictionary, for free). A numeric factor is binned with ``searchsorted`` against the
registered edges in cache-sized chunks; a categorical factor is counted per *dictionary entry*
(one ``bincount`` over the dictionary indices), and only the few entries are then mapped to the
registered levels. Ten million policies never meet a Python loop or a string comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ratekeeper.errors import InvalidInputError, Problem
from ratekeeper.packaging.profile import LevelShares, NumericBins
from ratekeeper.validation.stability import level_bin_lookup, numeric_bin_sums


def as_table(data: Any, names: Iterable[str]) -> pa.Table:
    """``data`` (a pandas DataFrame or a pyarrow Table) as a Table of the ``names`` it holds."""
    module = type(data).__module__
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        present = [n for n in dict.fromkeys(names) if n in data.column_names]
        return data.select(present)
    if module.startswith("pandas"):
        present = [n for n in dict.fromkeys(names) if n in data.columns]
        try:
            return pa.Table.from_pandas(data[present], preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise InvalidInputError(f"cannot read the data frame's columns: {exc}") from None
    raise InvalidInputError(
        f"cannot monitor a {type(data).__name__}: pass a pandas DataFrame or a pyarrow Table"
    )


def require_columns(table: pa.Table, names: Sequence[str]) -> None:
    """One error naming every column the data lacks."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        problems = [Problem(n, "missing", "column is missing") for n in missing]
        raise InvalidInputError(
            f"the data lacks {len(missing)} column(s) the model needs: {', '.join(missing)}",
            problems,
        )


def float_column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 (NaN for nulls); a clear error for text."""
    column = table.column(name)
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = kind.value_type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise InvalidInputError(
            f"{name}: expected numbers, got a column of {kind}",
            [Problem(name, "wrong_type", f"expected numbers, got {kind}")],
        )
    values: np.ndarray = column.cast(pa.float64()).to_numpy()
    return values


def bin_sums(
    table: pa.Table, name: str, reference: NumericBins | LevelShares, weights: np.ndarray | None
) -> np.ndarray:
    """The weight of column ``name`` in each bin of ``reference`` (the missing bin last)."""
    if isinstance(reference, NumericBins):
        return numeric_bin_sums(reference.edges, float_column(table, name), weights)
    return _level_sums(table.column(name), reference, weights)


def _level_sums(
    column: pa.ChunkedArray, reference: LevelShares, weights: np.ndarray | None
) -> np.ndarray:
    size = len(reference.levels) + 2
    sums = np.zeros(size)
    offset = 0
    for chunk in column.chunks:
        encoded = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
        dictionary = encoded.dictionary.to_pylist()
        indices = encoded.indices
        if indices.null_count:
            indices = pc.fill_null(indices, len(dictionary))  # the lookup's last entry: missing
        codes = indices.to_numpy()
        chunk_weights = None if weights is None else weights[offset : offset + len(chunk)]
        per_entry = np.bincount(codes, weights=chunk_weights, minlength=len(dictionary) + 1)
        sums += np.bincount(
            level_bin_lookup(reference, dictionary), weights=per_entry, minlength=size
        )
        offset += len(chunk)
    return sums


def read_columns(path: Path, names: Iterable[str], text: Iterable[str] = ()) -> pa.Table:
    """The ``names`` a Parquet or CSV file holds (others are never read).

    ``text`` columns are read as strings (a CSV postcode keeps its leading zero) and, from
    Parquet, straight into dictionaries.
    """
    wanted = list(dict.fromkeys(names))
    strings = set(text)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            present = [n for n in wanted if n in schema.names]
            dictionaries = [n for n in present if n in strings and _is_text(schema.field(n).type)]
            return pq.read_table(path, columns=present, read_dictionary=dictionaries)
        if suffix in (".csv", ".gz", ".txt"):
            from pyarrow import csv

            header = csv.open_csv(path).schema.names
            present = [n for n in wanted if n in header]
            options = csv.ConvertOptions(
                include_columns=present,
                column_types={n: pa.string() for n in present if n in strings},
                strings_can_be_null=True,
            )
            return csv.read_csv(path, convert_options=options)
    except pa.ArrowException as exc:
        raise InvalidInputError(f"{path}: cannot read it: {exc}") from None
    raise InvalidInputError(f"{path}: read Parquet (.parquet) or CSV (.csv) files")


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))
