"""Turn the inputs users hand us (pandas, pyarrow, a list of dicts) into named columns.

A numeric column becomes a float64 array (NaN for nulls). Every other column is factorized
once into a ``Factor``: integer codes into its distinct values (-1 for nulls). The signature
check then works per distinct value instead of per row, and the scorers turn levels into
coefficients or tree codes with one small lookup and one ``take`` — a million policies with a
few rating-factor levels cost a few array operations, not a million dictionary lookups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError


@dataclass(frozen=True)
class Factor:
    """A non-numeric column: ``codes`` (int64, -1 = null) into ``uniques`` (object)."""

    codes: np.ndarray
    uniques: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def values(self) -> np.ndarray:
        """The column as an object array (None for nulls)."""
        table = np.append(self.uniques, np.array([None], dtype=object))
        values: np.ndarray = table[self.codes]  # -1 picks the appended None
        return values

    def take(self, rows: np.ndarray) -> Factor:
        return Factor(self.codes[rows], self.uniques)

    @classmethod
    def of(cls, values: Any) -> Factor:
        import pandas as pd

        if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
            return cls(
                np.asarray(values.cat.codes, dtype=np.int64),
                np.asarray(values.cat.categories, dtype=object),
            )
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        return cls(np.asarray(codes, dtype=np.int64), np.asarray(uniques, dtype=object))


Column = np.ndarray | Factor
ArrayLike = Any
"""One value per row: a pandas Series, a numpy or pyarrow array, a list."""
Columns = dict[str, Column]


def to_columns(data: Any) -> tuple[Columns, int]:
    """Return ``(columns, n_rows)``."""
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


def named_column(frame: Any, values: Any, *, role: str) -> tuple[str | None, np.ndarray | None]:
    """Resolve a ``target=`` / ``exposure=`` argument given beside a training frame.

    A column name (or None) is returned as it is, with no values. Anything else is an array-like
    of one value per row, aligned by position as scikit-learn's ``fit(X, y)`` aligns it (a
    pandas Series, a numpy array, a pyarrow array or a list). Its name is the Series' name when
    it has one, else ``role`` (``"target"``, ``"exposure"``). A name that is already a column of
    the frame must hold the same values (it is that column); other values under the same name
    are refused rather than renamed silently, because the name is what a holdout or a quote
    must carry later.
    """
    if values is None or isinstance(values, str):
        return values, None
    if isinstance(values, (bytes, Mapping)) or np.ndim(values) == 0:
        raise InvalidInputError(
            f"{role} must be a column name of training_data or one value per row "
            f"(a pandas Series, numpy array or list), not {type(values).__name__}"
        )
    label = getattr(values, "name", None)
    name = label if isinstance(label, str) and label else role
    array = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InvalidInputError(f"{role} must be one-dimensional, got shape {array.shape}")
    if len(array) != len(frame):
        raise InvalidInputError(
            f"{role} has {len(array)} values but training_data has {len(frame)} rows: "
            "pass the values aligned with training_data"
        )
    if name in frame.columns and not _same_values(frame[name].to_numpy(), array):
        raise InvalidInputError(
            f"{role} is named {name!r}, but training_data's {name!r} column holds other values: "
            "rename one of them, or pass the column's name"
        )
    return name, array


def _same_values(left: np.ndarray, right: np.ndarray) -> bool:
    try:
        return bool(np.array_equal(left, right, equal_nan=True))
    except TypeError:  # object values: NaN cannot be compared, so compare them as they are
        return bool(np.array_equal(left, right))


def take(columns: Columns, rows: np.ndarray) -> Columns:
    return {
        name: column.take(rows) if isinstance(column, Factor) else column[rows]
        for name, column in columns.items()
    }


def as_float(column: Column) -> np.ndarray:
    """A numeric view of a column (values that are not numbers become NaN)."""
    if isinstance(column, Factor):
        lookup = np.array([_float_or_nan(v) for v in column.uniques] + [np.nan], dtype=np.float64)
        numbers: np.ndarray = lookup[column.codes]
        return numbers
    return np.asarray(column, dtype=np.float64)


def level_codes(column: Column, levels: Sequence[str]) -> np.ndarray:
    """For each row, the index of its value in ``levels``; -1 for nulls and unknown values.

    Values are matched by their text (``str``), once per distinct value of a ``Factor``."""
    if not isinstance(column, Factor):
        column = Factor.of(np.asarray(column, dtype=object))
    position = {level: index for index, level in enumerate(levels)}
    lookup = np.fromiter(
        (position.get(u if isinstance(u, str) else str(u), -1) for u in column.uniques),
        dtype=np.int64,
        count=len(column.uniques),
    )
    codes: np.ndarray = np.append(lookup, -1)[column.codes]
    return codes


def _float_or_nan(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return np.nan
    return float(value)


def _from_pandas(frame: Any) -> tuple[Columns, int]:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(f"cannot score a {type(frame).__name__}: pass a DataFrame")
    columns: Columns = {}
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            columns[str(name)] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            columns[str(name)] = Factor.of(series)
    return columns, len(frame)


def _from_arrow(table: Any) -> tuple[Columns, int]:
    """Arrow columns without going through pandas: numbers cast to float64 (nulls → NaN),
    everything else dictionary-encoded by Arrow (free when the reader already did it)."""
    import pyarrow as pa

    if not isinstance(table, (pa.Table, pa.RecordBatch)):
        raise InvalidInputError(f"cannot score a {type(table).__name__}: pass a pyarrow Table")
    columns: Columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if isinstance(column, pa.ChunkedArray):  # a Table's: one array per column (one
            # dictionary per factor), without copying when the column is one chunk already
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        kind = column.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            columns[name] = _arrow_floats(column)
        else:
            columns[name] = _arrow_factor(column)
    return columns, table.num_rows


def _arrow_floats(column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    numbers = pc.cast(column, pa.float64(), safe=False)
    if numbers.null_count:
        numbers = pc.fill_null(numbers, np.nan)
    values: np.ndarray = numbers.to_numpy()
    return values


def _arrow_factor(column: Any) -> Factor:
    """Codes and distinct values of a non-numeric Arrow column, computed by Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_dictionary(column.type):
        try:
            column = pc.dictionary_encode(column)
        except pa.ArrowNotImplementedError:  # nested values: let pandas factorize them
            return Factor.of(column.to_pandas())
    dictionary, indices = column.dictionary, column.indices
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    codes = np.asarray(indices.to_numpy(), dtype=np.int64)
    uniques = np.empty(len(dictionary), dtype=object)
    uniques[:] = dictionary.to_pylist()
    return Factor(codes, uniques)


def _from_records(rows: Sequence[Any]) -> tuple[Columns, int]:
    names: dict[str, None] = {}
    for position, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"row {position} is a {type(row).__name__}, not a mapping")
        names.update(dict.fromkeys(row))
    columns: Columns = {}
    for name in names:
        values = np.empty(len(rows), dtype=object)
        values[:] = [row.get(name) for row in rows]
        columns[str(name)] = _records_factor(values)
    return columns, len(rows)


def _records_factor(values: np.ndarray) -> Factor:
    """Factorize JSON-ish values without merging 1 and 1.0 and True (types matter to checks)."""
    index: dict[tuple[type, Any], int] = {}
    uniques: list[Any] = []
    codes = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if value is None:
            codes[i] = -1
            continue
        try:
            key = (type(value), value if value == value else "nan")  # NaN != NaN
            code = index.get(key)
        except TypeError:  # unhashable (a list, an object): its own value, reported as such
            key, code = (type(value), ("row", i)), None
        if code is None:
            code = index[key] = len(uniques)
            uniques.append(value)
        codes[i] = code
    table = np.empty(len(uniques), dtype=object)
    for position, value in enumerate(uniques):  # one by one: a list value stays one value
        table[position] = value
    return Factor(codes, table)
