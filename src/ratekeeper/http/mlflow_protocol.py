"""MLflow's scoring protocol: the bodies a client of ``mlflow models serve`` posts to /invocations.

What MLflow 3's scoring server accepts (checked case by case against ``mlflow models serve``,
see tests/test_mlflow_protocol.py), read into the policies a ratekeeper scorer prices:

- ``application/json``: an object with exactly one of ``dataframe_split`` (``columns``,
  ``data``, optional ``index``), ``dataframe_records`` (a list of objects; an object of columns
  is refused, as MLflow refuses it), ``instances`` or ``inputs`` (objects, or an object of
  equal-length columns). ``params`` and any other key are ignored: a ratekeeper model declares
  no parameters. Parsed with orjson; no pandas per request.
- ``text/csv``: a header line and rows, read by Arrow with the signature's types.
- ``application/vnd.apache.parquet``: a Parquet file, as ``pandas.DataFrame.to_parquet()``
  writes it (uncompressed or Snappy, pandas' default).

The content type is checked as MLflow checks it: a ``charset`` other than UTF-8, any other
parameter, or another media type is a 415. Every other refusal is a ``ProtocolError`` the
/invocations route answers in MLflow's body, ``{"error_code": ..., "message": ...}``.

Crafted bodies stay bounded: the body is at most ``max_body_bytes`` before anything parses it;
rows are capped (``max_rows``) from the Parquet footer before any page is read; only the
signature's columns are decoded, flat ones only; Parquet pages must be uncompressed or Snappy,
whose output is at most about 21 times its input (a zstd or gzip page of 1 MB can inflate to
gigabytes); a row, a header or a ``dataframe_split`` has at most ``MAX_COLUMNS`` columns.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ratekeeper.errors import InvalidInputError, Problem, RatekeeperError
from ratekeeper.packaging.signature import ANY, CATEGORICAL, Signature

JSON = "application/json"
CSV = "text/csv"
_LINE_BREAK = re.compile(rb"\r\n|\n|\r")
PARQUET = "application/vnd.apache.parquet"
MEDIA_TYPES = (JSON, CSV, PARQUET)
BOM = b"\xef\xbb\xbf"
INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
ARROW_ROWS = 64
"""From this many JSON rows on, the scorer gets an Arrow table when the values allow it."""
MAX_COLUMNS = 1000
"""Most columns in one request (a policy has tens of rating factors)."""
_SAFE_CODECS = frozenset({"UNCOMPRESSED", "SNAPPY"})
_ONE_OF = (
    "send a JSON object with exactly one of dataframe_split, dataframe_records, instances, inputs"
)


class ProtocolError(RatekeeperError):
    """A request /invocations refuses, with MLflow's status and ``error_code``."""

    def __init__(
        self, message: str, status: int = 400, error_code: str = "BAD_REQUEST", code: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.code = code or ("unsupported_media_type" if status == 415 else "bad_request")


@dataclass(frozen=True)
class Batch:
    """The policies of one request: ``data`` for the scorer, ``rows`` (mappings) for the ledger."""

    data: Any
    """A list of dicts (JSON) or a pyarrow Table (CSV, Parquet)."""
    rows: list[dict[str, Any]]
    columns: tuple[str, ...] | None = None
    """The column names an empty request declared (``None``: none declared)."""


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, checked in MLflow's order: charset, other
    parameters, then the type itself (all exact, as MLflow compares them)."""
    if not header:
        raise ProtocolError(f"no content type: use one of {', '.join(MEDIA_TYPES)}", 415)
    media, *pairs = (part.strip() for part in header.split(";"))
    parameters = dict(pair.partition("=")[::2] for pair in pairs)
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise ProtocolError("only UTF-8 bodies are read: send charset=utf-8 or no charset", 415)
    others = sorted(set(parameters) - {"charset"})
    if others:
        names = ", ".join(repr(name[:40]) for name in others[:5])
        raise ProtocolError(f"unknown content type parameters: {names} (only charset)", 415)
    if media not in MEDIA_TYPES:
        raise ProtocolError(
            f"content type {media[:80]!r} is not read here: use one of {', '.join(MEDIA_TYPES)}",
            415,
        )
    return media


def parse(media: str, body: bytes, signature: Signature, max_rows: int) -> Batch:
    """The policies in ``body``; a ``ProtocolError`` (or ``InvalidInputError``) otherwise."""
    if media != PARQUET and body.startswith(BOM):  # Excel's "CSV UTF-8"; MLflow reads past it
        body = body[len(BOM) :]
    if media == JSON:
        batch = _json_batch(body, signature)
    elif media == CSV:
        batch = _csv_batch(body, signature)
    else:
        batch = _parquet_batch(body, signature, max_rows)
    if len(batch.rows) > max_rows:
        raise too_many_rows(max_rows)
    return batch


def too_many_rows(max_rows: int) -> ProtocolError:
    return ProtocolError(
        f"at most {max_rows:,} rows per request (the server's --max-invocation-rows)",
        413,
        "RESOURCE_LIMIT_EXCEEDED",
        "payload_too_large",
    )


def missing_columns(signature: Signature, columns: tuple[str, ...] | None) -> InvalidInputError:
    """The error of an empty request whose columns lack a required field (None if complete)."""
    declared = set(columns or ())
    problems = [
        Problem(f.name, "missing", "column is missing")
        for f in signature.fields
        if not f.nullable and f.name not in declared
    ]
    return InvalidInputError(
        f"{problems[0].field}: column is missing" if problems else "", problems
    )


# -- JSON -------------------------------------------------------------------------------------
def _json_batch(body: bytes, signature: Signature) -> Batch:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ProtocolError(f"{_ONE_OF}; got {_kind(document)}")
    keys = [key for key in INPUT_KEYS if key in document]
    if len(keys) != 1:
        found = ", ".join(repr(str(k)[:40]) for k in list(document)[:8]) or "none"
        raise ProtocolError(f"{_ONE_OF}; got the keys {found}")
    key = keys[0]
    value = document[key]
    names = signature.names
    if key == "dataframe_split":
        rows, columns = _split(value)
        projected = _project(rows, names)
        return Batch(_as_table(projected, signature), projected, columns)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise ProtocolError(
                f"dataframe_records must be a list of records (one object per row); got "
                f"{_kind(value)}: send columns as dataframe_split"
            )
        rows = _objects(value, key)
    elif isinstance(value, dict):  # instances / inputs as columns, or one row of scalars
        rows = _columns(value, key)
    elif isinstance(value, list):
        rows = _objects(value, key)
    else:
        raise InvalidInputError(
            f"{key} must hold objects of named rating factors or an object of columns; got "
            f"{_kind(value)}"
        )
    projected = _project(rows, names)
    return Batch(_as_table(projected, signature), projected)


def _split(value: Any) -> tuple[list[dict[Any, Any]], tuple[str, ...] | None]:
    if not isinstance(value, dict):
        raise ProtocolError(f"dataframe_split must be an object; got {_kind(value)}")
    extra = set(value) - {"columns", "data", "index"}
    if "data" not in value or extra:
        raise ProtocolError(
            "dataframe_split needs data and may have columns and index, nothing else"
        )
    data = value["data"]
    if not isinstance(data, list) or not all(isinstance(row, list) for row in data):
        raise ProtocolError("dataframe_split.data must be a list of rows, each a list of values")
    columns = value.get("columns")
    if columns is None:  # pandas numbers the columns: no rating factor is named 0, 1, ...
        width = len(data[0]) if data else 0
        names: list[Any] = list(range(width))
    elif not isinstance(columns, list) or not all(
        isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in columns
    ):
        raise ProtocolError("dataframe_split.columns must be a list of column names")
    else:
        names = columns
    if len(names) > MAX_COLUMNS:
        raise ProtocolError(f"at most {MAX_COLUMNS:,} columns per request")
    if len(set(names)) != len(names):
        raise ProtocolError("dataframe_split.columns names a column twice")
    for position, row in enumerate(data):
        if len(row) != len(names):
            raise ProtocolError(
                f"dataframe_split.data row {position} has {len(row)} values for "
                f"{len(names)} columns"
            )
    index = value.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        count = f"{len(index)} labels" if isinstance(index, list) else _kind(index)
        raise ProtocolError(f"dataframe_split.index has {count} for {len(data)} rows")
    declared = tuple(str(name) for name in names) if columns is not None else None
    return [dict(zip(names, row, strict=True)) for row in data], declared


def _objects(value: list[Any], key: str) -> list[dict[str, Any]]:
    for position, row in enumerate(value):
        if not isinstance(row, (dict, list)):  # MLflow: not a table at all
            raise ProtocolError(f"{key} row {position} is {_kind(row)}, not an object")
        if not isinstance(row, dict):  # MLflow: a table without the model's column names
            raise InvalidInputError(
                f"{key} row {position} is {_kind(row)}: ratekeeper models price named rating "
                "factors, send one object per row",
                [Problem(key, "wrong_type", f"expected an object, got {_kind(row)}", position)],
            )
        if len(row) > MAX_COLUMNS:
            raise ProtocolError(f"at most {MAX_COLUMNS:,} columns per request")
    return value


def _columns(value: dict[str, Any], key: str) -> list[dict[str, Any]]:
    if len(value) > MAX_COLUMNS:
        raise ProtocolError(f"at most {MAX_COLUMNS:,} columns per request")
    lists = [isinstance(v, list) for v in value.values()]
    if not any(lists):  # one policy given as its values
        return [value]
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if not all(lists) or len(lengths) != 1:
        raise InvalidInputError(
            f"{key} as columns must map every column to a list, all of the same length"
        )
    n_rows = lengths.pop()
    names = list(value)
    return [{name: value[name][i] for name in names} for i in range(n_rows)]


def _project(rows: list[dict[Any, Any]], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each row reduced to the signature's fields it holds (MLflow ignores other columns too)."""
    return [{name: row[name] for name in names if name in row} for row in rows]


def _as_table(rows: list[dict[str, Any]], signature: Signature) -> Any:
    """Many rows as an Arrow table when every value has its field's type, else the rows.

    The scorer checks and prices a table column by column; rows it first sorts value by value
    in Python. 10,000 policies as JSON: 85-95 ms a request as rows, 21-26 ms as a table (12 ms
    as CSV; benchmarks/bench_invocations.py, 2 cores). A table is only made when it cannot
    change an answer: every row holds every field, strings where the signature wants levels,
    numbers (not booleans) where it wants numbers, no nulls. Anything else takes the row path,
    whose problems name each value.
    """
    if len(rows) < ARROW_ROWS:
        return rows
    import pyarrow as pa

    columns = {}
    for f in signature.fields:
        if f.kind == ANY:
            continue  # an id: never read by the model
        values = [row.get(f.name) for row in rows]
        try:
            array = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return rows
        kind = array.type
        wanted = (
            pa.types.is_string(kind)
            if f.kind == CATEGORICAL
            else pa.types.is_integer(kind) or pa.types.is_floating(kind)
        )
        if not wanted or array.null_count:
            return rows
        columns[f.name] = array
    return pa.table(columns)


# -- CSV and Parquet (Arrow) --------------------------------------------------------------------
def _csv_batch(body: bytes, signature: Signature) -> Batch:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # The header ends at the first line break of any kind, as Arrow reads it: a lone \r (old
    # Mac line ends) inside the line made the csv module raise (a 500 found by schemathesis).
    first = _LINE_BREAK.split(body, maxsplit=1)[0]
    try:
        header = next(csv.reader([first.decode("utf-8")]), [])
    except UnicodeDecodeError:
        raise ProtocolError("the CSV body is not UTF-8") from None
    except csv.Error as exc:  # e.g. a header field beyond the csv module's size limit
        raise ProtocolError(f"cannot read the CSV body's header line: {_short(exc)}") from None
    if not header or header == [""]:
        raise ProtocolError("the CSV body has no header line (column names)")
    if len(header) > MAX_COLUMNS:
        raise ProtocolError(f"at most {MAX_COLUMNS:,} columns per request")
    wanted = [f for f in signature.fields if f.name in header]
    types = {f.name: pa.string() if f.kind in (CATEGORICAL, ANY) else pa.float64() for f in wanted}
    try:
        table = pacsv.read_csv(
            pa.BufferReader(body),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=[f.name for f in wanted],
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ProtocolError(f"cannot read the body as CSV: {_short(exc)}") from None
    return Batch(table, table.to_pylist(), tuple(header))


def _parquet_batch(body: bytes, signature: Signature, max_rows: int) -> Batch:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        book = pq.ParquetFile(
            pa.BufferReader(body),
            thrift_string_size_limit=len(body),
            thrift_container_size_limit=100_000,
        )
        meta = book.metadata
        schema = book.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise ProtocolError(f"cannot read the body as Parquet: {_short(exc)}") from None
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    if meta.num_rows > max_rows or sum(g.num_rows for g in groups) > max_rows:
        raise too_many_rows(max_rows)
    if len(schema) > MAX_COLUMNS:
        raise ProtocolError(f"at most {MAX_COLUMNS:,} columns per request")
    wanted = [f.name for f in signature.fields if f.name in schema.names]
    for name in wanted:
        if pa.types.is_nested(schema.field(name).type):
            raise InvalidInputError(
                f"{name}: a nested Parquet column; a rating factor holds one value per row",
                [Problem(name, "wrong_type", "expected one value per row, got a nested column")],
            )
    for group in groups:
        for i in range(group.num_columns):
            chunk = group.column(i)
            if chunk.path_in_schema in wanted and chunk.compression not in _SAFE_CODECS:
                raise ProtocolError(
                    f"Parquet column {chunk.path_in_schema!r} is {chunk.compression}-compressed: "
                    "send it uncompressed or with Snappy (pandas' default)"
                )
    try:
        table = book.read(columns=wanted, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise ProtocolError(f"cannot read the body as Parquet: {_short(exc)}") from None
    table = table.cast(_plain(table.schema))  # dictionary-encoded strings: plain values
    return Batch(table, table.to_pylist(), tuple(schema.names))


def _plain(schema: Any) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
            for f in schema
        ]
    )


def _short(exc: Exception, limit: int = 300) -> str:
    """An Arrow message, cut: it may quote a cell of the body."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    return {
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), "a value")
