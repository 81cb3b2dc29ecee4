"""The one place where errors become HTTP responses, with one JSON body shape everywhere.

    {"error": {"code": "invalid_input", "message": "...", "problems": [
        {"field": "driver_age", "code": "out_of_range", "message": "...", "row": 3}]}}

``problems`` is present only when there are field-level problems; ``row`` only for lists of
policies. Messages never echo a whole request payload.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ratekeeper.errors import RatekeeperError, RateLimitedError

STATUS = {
    "not_found": 404,
    "conflict": 409,
    "invalid_input": 422,
    "unsupported_model": 422,
    # The policy is valid but this model cannot price it plausibly (a defective or crafted
    # package). 422, not 5xx: retrying cannot help, the quote system's path for a 4xx is "refer
    # to an underwriter", and 5xx stays reserved for the server failing; operators see it by its
    # outcome label in ratekeeper_requests_total.
    "implausible_price": 422,
    "permission_denied": 403,
    "unauthenticated": 401,
    "unavailable": 503,
    "integrity_error": 503,
    "malformed_json": 400,
    "bad_request": 400,
    "payload_too_large": 413,
    "request_timeout": 408,
    "method_not_allowed": 405,
    "rate_limited": 429,
    "internal_error": 500,
}


class HTTPProblem(RatekeeperError):
    """An error that only exists at the HTTP layer (malformed JSON, oversized body, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
"""A response as the pricing routes build it (``http/pricing.py``): status, JSON body, headers
beyond content-type and content-length."""

NO_HEADERS: list[tuple[bytes, bytes]] = []


def error_answer(error: RatekeeperError) -> Answer:
    """The one error body of ``error``, its status, and its extra headers (429: Retry-After)."""
    headers = NO_HEADERS
    if isinstance(error, RateLimitedError):
        headers = [(b"retry-after", str(error.retry_after).encode())]
    return STATUS.get(error.code, 500), orjson.dumps({"error": error.to_dict()}), headers


def error_response(error: RatekeeperError) -> Response:
    return answer_response(error_answer(error))


def answer_response(answer: Answer) -> Response:
    """An ``Answer`` as a Starlette response (the same bytes and headers the ASGI path sends)."""
    status, body, headers = answer
    response = Response(body, status_code=status, media_type="application/json")
    for name, value in headers:
        response.headers[name.decode()] = value.decode()
    return response


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def handle_ratekeeper_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RatekeeperError)
    return error_response(exc)
