"""``POST /invocations``, ``GET /ping``, ``/health``, ``/version``: `mlflow models serve`'s routes.

A client written for MLflow's scoring server switches to ratekeeper by changing the URL: the
same request bodies (http/mlflow_protocol.py), the same status codes, and MLflow's error body
on /invocations, ``{"error_code": "BAD_REQUEST", "message": "..."}`` (plus ``problems``, by field
and row, when the policies fail the model's signature). A 415 is plain text, as MLflow's is.
The other routes keep ratekeeper's own error body.

Plain Starlette endpoints, not FastAPI's: its parameter and response machinery costs more per
request than pricing a few policies. ``add_invocations_routes`` adds them to the app and their
description to its OpenAPI document; ``RatingApp`` (http/pricing.py) answers ``POST
/invocations`` before FastAPI's middleware and routing, as it answers quotes.

/invocations prices with the model named by ``--invocations-model`` (``NAME`` or
``NAME@alias``), or, without it, with the one model the server serves. Every priced policy is
recorded in the quote ledger (endpoint ``invocations``) and counted in the metrics, as a quote is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Scope

from ratekeeper.engine.ids import new_quote_id
from ratekeeper.errors import InvalidInputError, RatekeeperError, UnavailableError
from ratekeeper.http import mlflow_protocol as protocol
from ratekeeper.http.errors import HTTPProblem, json_response
from ratekeeper.http.mlflow_protocol import ProtocolError
from ratekeeper.http.pricing import RatingApp
from ratekeeper.http.protocol import receive_body

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ratekeeper.engine.deployments import Deployments
    from ratekeeper.engine.scorer import Scorer

# Our error codes as MLflow's (status, error_code): what `mlflow models serve` answers alike.
MLFLOW_CODES = {
    "invalid_input": (400, "INVALID_PARAMETER_VALUE"),  # MLflow's code for a schema failure
    "malformed_json": (400, "BAD_REQUEST"),
    "bad_request": (400, "BAD_REQUEST"),
    "unsupported_model": (400, "BAD_REQUEST"),
    "implausible_price": (400, "BAD_REQUEST"),  # MLflow: the model failed on this input
    "not_found": (404, "RESOURCE_DOES_NOT_EXIST"),
    "payload_too_large": (413, "RESOURCE_LIMIT_EXCEEDED"),
    "rate_limited": (429, "REQUEST_LIMIT_EXCEEDED"),
    "unavailable": (503, "TEMPORARILY_UNAVAILABLE"),
    "integrity_error": (503, "TEMPORARILY_UNAVAILABLE"),
}
ENDPOINT = "invocations"
LOADING = "the rating server is still loading its models"
INLINE_BYTES = 64 * 1024
"""Bodies up to this size are priced on the event loop. A larger one (hundreds of policies and
more; 10,000 take 90-140 ms with the ledger, benchmarks/bench_invocations.py) is priced in a
thread, so the worker's other requests wait for a GIL switch (5 ms), not for the whole batch."""
LARGE_AT_ONCE = 2


def mlflow_error(error: RatekeeperError) -> Response:
    """An error in MLflow's body; a 415 in plain text, as MLflow sends it."""
    if isinstance(error, ProtocolError):
        status, error_code = error.status, error.error_code
    else:
        status, error_code = MLFLOW_CODES.get(error.code, (500, "INTERNAL_ERROR"))
    if status == 415:
        return PlainTextResponse(error.message, 415)
    body: dict[str, Any] = {"error_code": error_code, "message": error.message}
    problems = getattr(error, "problems", None)
    if problems:
        body["problems"] = [p.to_dict() for p in problems]
    return json_response(body, status)


def add_invocations_routes(app: FastAPI, config: Any) -> None:
    """Add the MLflow routes to ``app`` (whose ``state`` holds deployments, metrics, ledger).

    ``config`` is the app's ``AppConfig``: ``invocations_model``, ``max_body_bytes`` and
    ``max_invocation_rows`` are read from it."""
    deployments: Deployments = app.state.deployments
    metrics = app.state.metrics
    ledger = app.state.ledger
    target: str | None = config.invocations_model
    limit: int = config.max_body_bytes
    max_rows: int = config.max_invocation_rows

    large = _LargeBodies()

    def served() -> tuple[Scorer, str]:
        if target is not None:
            name, _, alias = target.partition("@")
            return deployments.scorer(name, alias=alias or None)
        if not deployments.ready:
            raise UnavailableError(LOADING)
        names = deployments.names()
        if len(names) != 1:
            raise ProtocolError(
                f"this server serves {len(names)} models, so /invocations needs one named: "
                "start it with --invocations-model NAME",
                404,
                "RESOURCE_DOES_NOT_EXIST",
                "not_found",
            )
        return deployments.scorer(names[0])

    def price(media: str, body: bytes, scorer: Scorer, served_by: str) -> list[float]:
        batch = protocol.parse(media, body, scorer.signature, max_rows)
        if not batch.rows:  # nothing to price: only the columns can be wrong
            error = protocol.missing_columns(scorer.signature, batch.columns)
            if error.problems:
                raise error
            return []
        predictions: list[float]
        if len(batch.rows) == 1:  # one policy: the quote's path (GLM: 4 us, predict: 600 us)
            try:
                predictions = [scorer.predict_one(batch.rows[0])]
            except InvalidInputError:  # predict's problems carry the row, as for many rows
                predictions = scorer.predict(batch.rows).tolist()
        else:
            predictions = scorer.predict(batch.data).tolist()
        if ledger is not None:
            for row, prediction in zip(batch.rows, predictions, strict=True):
                ledger.record(
                    new_quote_id(), scorer.name, scorer.version, scorer.signature, ENDPOINT,
                    served_by, row, prediction,
                    "champion" if served_by == "Production" else served_by,
                )  # fmt: skip
        return predictions

    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        name, label = "-", "-"
        try:
            scorer, served_by = served()
            name, label = scorer.name, scorer.label
            content_type, encoding = _headers(request.scope)
            media = protocol.media_type(content_type)
            if encoding is not None and encoding.lower() != "identity":
                raise ProtocolError("compressed request bodies are not read: send identity", 415)
            body = await _read_body(request, limit)
            if len(body) <= INLINE_BYTES:
                predictions = price(media, body, scorer, served_by)
            else:  # the event loop keeps answering quotes meanwhile
                async with large.slots:  # and a burst of large bodies is parsed two at a time
                    predictions = await asyncio.to_thread(price, media, body, scorer, served_by)
        except RatekeeperError as exc:
            metrics.observe(ENDPOINT, name, label, exc.code, time.perf_counter() - started)
            return mlflow_error(exc)
        metrics.priced(name, label, len(predictions))
        metrics.observe(ENDPOINT, name, label, "ok", time.perf_counter() - started)
        return Response(orjson.dumps({"predictions": predictions}), media_type=protocol.JSON)

    async def ping(_request: Request) -> Response:
        # MLflow: 200 once the model is loaded. Here: once the served models are.
        if not deployments.ready:
            return mlflow_error(UnavailableError(LOADING))
        return Response("\n", media_type=protocol.JSON)

    async def version(_request: Request) -> Response:
        import ratekeeper

        return PlainTextResponse(ratekeeper.__version__)

    app.router.add_route("/invocations", invocations, methods=["POST"], include_in_schema=False)
    if isinstance(app, RatingApp):  # answered before FastAPI's machinery, as quotes are
        app.posts = {**app.posts, "/invocations": invocations}
    for path in ("/ping", "/health"):
        app.router.add_route(path, ping, methods=["GET"], include_in_schema=False)
    app.router.add_route("/version", version, methods=["GET"], include_in_schema=False)
    _describe(app, _openapi_paths)


class _LargeBodies:
    """Two large bodies priced at a time per worker: each holds its parsed rows (a 1 MB JSON
    body is tens of MB of Python objects), so a burst waits instead of multiplying that."""

    def __init__(self) -> None:
        self._slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # made in the serving event loop, on first use
            self._slots = asyncio.Semaphore(LARGE_AT_ONCE)
        return self._slots


def _headers(scope: Scope) -> tuple[str | None, str | None]:
    """Content-Type and Content-Encoding, the first of each, read off the ASGI scope."""
    content_type = encoding = None
    for name, value in scope["headers"]:
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-encoding" and encoding is None:
            encoding = value.decode("latin-1")
    return content_type, encoding


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, never more than ``limit`` bytes (413); empty is left to the parser."""
    try:
        return await receive_body(request.scope, request.receive, limit)
    except HTTPProblem as exc:
        if exc.code == "payload_too_large":
            raise _too_large(limit) from None
        return b""  # empty: each format says what it needed


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(
        f"the request body exceeds {limit:,} bytes",
        413,
        "RESOURCE_LIMIT_EXCEEDED",
        "payload_too_large",
    )


def _describe(app: FastAPI, paths: Callable[[], dict[str, Any]]) -> None:
    """Add ``paths`` to the app's OpenAPI document (FastAPI documents only its own routes)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        document["paths"].update(paths())
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(_COMPONENTS)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


_MLFLOW_ERROR = {"$ref": "#/components/schemas/MlflowError"}
_COMPONENTS: dict[str, Any] = {
    "MlflowError": {
        "title": "MlflowError",
        "type": "object",
        "required": ["error_code", "message"],
        "properties": {
            "error_code": {"type": "string", "title": "Error Code"},
            "message": {"type": "string", "title": "Message"},
            "problems": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ProblemBody"},
                "title": "Problems",
            },
        },
    },
    "MlflowPredictions": {
        "title": "MlflowPredictions",
        "type": "object",
        "required": ["predictions"],
        "properties": {
            "predictions": {"type": "array", "items": {"type": "number"}, "title": "Predictions"}
        },
    },
}


def _openapi_paths() -> dict[str, Any]:
    from ratekeeper.http.schemas import POLICY_EXAMPLE

    columns = list(POLICY_EXAMPLE)

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {protocol.JSON: {"schema": _MLFLOW_ERROR}}}

    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/invocations": {
            "post": {
                "tags": ["pricing"],
                "summary": "MLflow scoring protocol, for clients of `mlflow models serve`",
                "operationId": "invocations_invocations_post",
                "requestBody": {
                    "required": True,
                    "content": {
                        protocol.JSON: {
                            "schema": {
                                "type": "object",
                                "description": "exactly one of dataframe_split, "
                                "dataframe_records, instances, inputs; params is ignored",
                            },
                            "example": {
                                "dataframe_split": {
                                    "columns": columns,
                                    "data": [list(POLICY_EXAMPLE.values())],
                                }
                            },
                        },
                        protocol.CSV: {"schema": {"type": "string"}},
                        protocol.PARQUET: {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "one prediction per row, in order",
                        "content": {
                            protocol.JSON: {
                                "schema": {"$ref": "#/components/schemas/MlflowPredictions"}
                            }
                        },
                    },
                    "400": error(
                        "malformed input (BAD_REQUEST) or policies that fail the model's "
                        "signature (INVALID_PARAMETER_VALUE, with problems by field and row)"
                    ),
                    "404": error("no model behind /invocations (RESOURCE_DOES_NOT_EXIST)"),
                    "413": error("body or rows beyond the server's caps (RESOURCE_LIMIT_EXCEEDED)"),
                    "415": {
                        "description": "a content type, parameter or charset MLflow refuses",
                        "content": text,
                    },
                    "500": {
                        "description": "an unexpected error: ratekeeper's internal_error body, "
                        "with a correlation_id; never a traceback",
                        "content": {
                            protocol.JSON: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                        },
                    },
                    "503": error("models still loading (TEMPORARILY_UNAVAILABLE)"),
                },
            }
        },
        **{
            path: {
                "get": {
                    "tags": ["operations"],
                    "summary": "MLflow's health check: 200 once the models are loaded",
                    "operationId": f"ping_{path[1:]}_get",
                    "responses": {
                        "200": {"description": "ready", "content": {protocol.JSON: {}}},
                        "503": error("models still loading (TEMPORARILY_UNAVAILABLE)"),
                    },
                }
            }
            for path in ("/ping", "/health")
        },
        "/version": {
            "get": {
                "tags": ["operations"],
                "summary": "The ratekeeper version (MLflow's /version)",
                "operationId": "version_version_get",
                "responses": {"200": {"description": "the version", "content": text}},
            }
        },
    }
