"""Request bodies: bounded reading, JSON parsing, and the MLflow scoring protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from ratekeeper.errors import InvalidInputError, NotFoundError, Problem
from ratekeeper.http.errors import HTTPProblem

MAX_ID = 2**63 - 1
"""The largest id the registry stores (a signed 64-bit column); a larger one names nothing."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, never more than ``limit`` bytes (413), and not empty (400)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem("payload_too_large", f"the request body exceeds {limit:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem("payload_too_large", f"the request body exceeds {limit:,} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise HTTPProblem("malformed_json", "the request body is empty: send a JSON document")
    return body


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """``read_body`` on plain ASGI (the pricing routes): the same limits, the same errors."""
    for name, value in scope["headers"]:
        if name == b"content-length":  # the first one, as Starlette's Headers.get reads it
            if value.isdigit() and int(value) > limit:
                raise HTTPProblem("payload_too_large", f"the request body exceeds {limit:,} bytes")
            break
    message = await receive()
    body: bytes = message.get("body", b"")
    if message["type"] == "http.request" and not message.get("more_body", False):
        if len(body) > limit:  # one message: the common case, no list and no join
            raise HTTPProblem("payload_too_large", f"the request body exceeds {limit:,} bytes")
    else:
        chunks = [body]
        size = len(body)
        while True:
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            if size > limit:
                raise HTTPProblem("payload_too_large", f"the request body exceeds {limit:,} bytes")
            if not message.get("more_body", False):
                break
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
        body = b"".join(chunks)
    if not body:
        raise HTTPProblem("malformed_json", "the request body is empty: send a JSON document")
    return body


def parse_json(body: bytes | bytearray) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem("malformed_json", f"the request body is not valid JSON: {exc}") from None


async def read_json(request: Request, limit: int) -> Any:
    """The parsed JSON body; 413 beyond ``limit`` bytes, 400 when it is not JSON."""
    return parse_json(await read_body(request, limit))


def one_policy(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInputError(
            "a quote needs one policy as a JSON object of rating factors",
            [Problem("body", "wrong_type", f"expected an object, got {_json_type(body)}")],
        )
    return body


def policy_list(body: Any, limit: int) -> list[Any]:
    """``[{...}, ...]`` or ``{"policies": [{...}, ...]}``."""
    policies = body.get("policies") if isinstance(body, dict) else body
    if not isinstance(policies, list):
        raise InvalidInputError(
            'send a JSON array of policies, or {"policies": [...]}',
            [Problem("policies", "wrong_type", f"expected an array, got {_json_type(policies)}")],
        )
    if len(policies) > limit:
        raise HTTPProblem("payload_too_large", f"at most {limit:,} policies per request")
    return policies


def mlflow_records(body: Any, limit: int) -> list[Any]:
    """Rows of an MLflow scoring request: dataframe_split, dataframe_records, inputs, instances."""
    if not isinstance(body, dict) or len(body) != 1:
        raise InvalidInputError(
            "expected exactly one of dataframe_split, dataframe_records, inputs or instances"
        )
    key, value = next(iter(body.items()))
    if key == "dataframe_split":
        rows = _split_records(value)
    elif key in ("dataframe_records", "inputs", "instances"):
        rows = _columns_to_records(value) if isinstance(value, dict) else value
    else:
        raise InvalidInputError(
            f"unknown MLflow input {key!r}: use dataframe_split, dataframe_records, inputs "
            "or instances"
        )
    if not isinstance(rows, list):
        raise InvalidInputError(f"{key} must hold a list of rows")
    if len(rows) > limit:
        raise HTTPProblem("payload_too_large", f"at most {limit:,} rows per request")
    return rows


def _split_records(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        raise InvalidInputError("dataframe_split must be an object with columns and data")
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInputError("dataframe_split.columns must be a list of column names")
    if not isinstance(data, list) or not all(
        isinstance(row, list) and len(row) == len(columns) for row in data
    ):
        raise InvalidInputError("dataframe_split.data must be a list of rows, one value per column")
    return [dict(zip(columns, row, strict=True)) for row in data]


def _columns_to_records(value: dict[str, Any]) -> list[dict[str, Any]]:
    columns = list(value)
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise InvalidInputError("columnar inputs must map each column to a list of equal length")
    n_rows = lengths.pop() if lengths else 0
    return [{c: value[c][i] for c in columns} for i in range(n_rows)]


def _json_type(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), "a value")


def pinned(query: Mapping[str, str]) -> tuple[int | None, str | None]:
    """``?version=N`` / ``?alias=A`` of a pricing request (what the OpenAPI document declares)."""
    version = query.get("version")
    number = None
    if version is not None:
        text = version.strip()
        digits = text.removeprefix("+")
        if not digits.isascii() or not digits.isdigit() or not digits.strip("0"):
            raise InvalidInputError(
                "the request's parameters are invalid",
                [Problem("version", "invalid", "Input should be an integer of at least 1")],
            )
        # Beyond 2^63 names no version (and int() of thousands of digits would raise).
        if len(digits.lstrip("0")) > 19 or int(digits) > MAX_ID:
            raise NotFoundError("no version has a number that large")
        number = int(digits)
    return number, query.get("alias")
