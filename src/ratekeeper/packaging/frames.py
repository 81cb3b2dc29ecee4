"""Turn the inputs users hand us (pandas, pyarrow, a list of dicts) into named numpy columns.

Nothing here knows about models; the signature check and the scorers work on the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError

Columns = dict[str, np.ndarray]


def to_columns(data: Any) -> tuple[Columns, int]:
    """Return ``(columns, n_rows)``; numeric columns come back as float64 with NaN for nulls."""
    module = type(data).__module__
    if module.startswith("pandas"):
        return _from_pandas(data)
    if module.startswith("pyarrow"):
        return _from_arrow(data)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return _from_records(data)
    raise InvalidInputError(
        f"cannot score a {type(data).__name__}: pass a pandas DataFrame, a pyarrow Table "
        "or a list of dicts"
    )


def _from_pandas(frame: Any) -> tuple[Columns, int]:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(f"cannot score a {type(frame).__name__}: pass a DataFrame")
    columns: Columns = {}
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        if pd.api.types.is_bool_dtype(dtype):
            columns[str(name)] = series.to_numpy(dtype=object)
        elif pd.api.types.is_numeric_dtype(dtype):
            columns[str(name)] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            columns[str(name)] = series.to_numpy(dtype=object, na_value=None)
    return columns, len(frame)


def _from_arrow(table: Any) -> tuple[Columns, int]:
    import pyarrow as pa

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise InvalidInputError(f"cannot score a {type(table).__name__}: pass a pyarrow Table")
    columns: Columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
            kind = kind.value_type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            columns[name] = column.to_numpy().astype(np.float64)
        else:
            columns[name] = np.asarray(column.to_pylist(), dtype=object)
    return columns, table.num_rows


def _from_records(rows: Sequence[Any]) -> tuple[Columns, int]:
    names: dict[str, None] = {}
    for position, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"row {position} is a {type(row).__name__}, not a mapping")
        names.update(dict.fromkeys(row))
    columns: Columns = {}
    for name in names:
        column = np.empty(len(rows), dtype=object)
        column[:] = [row.get(name) for row in rows]
        columns[str(name)] = column
    return columns, len(rows)
