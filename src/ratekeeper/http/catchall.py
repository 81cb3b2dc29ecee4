"""The last line: an unexpected exception becomes the one JSON error body, never a traceback.

    {"error": {"code": "internal_error", "message": "...", "correlation_id": "..."}}

with status 500 and the same id in the ``X-Correlation-ID`` header; the traceback is logged
server-side with that id, so an operator finds it from what the client reports. A plain ASGI
middleware (not Starlette's ``BaseHTTPMiddleware``, which costs a task per request): on the
quote path it adds one function call and one flag per ``send``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ratekeeper.http")

HEADER = "x-correlation-id"


class CatchAll:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            correlation_id = log_internal_error(scope)
            if started:  # the status line is gone: all that is left is to end the response
                raise
            await send_internal_error(send, correlation_id)


def log_internal_error(scope: Scope) -> str:
    """Log the exception being handled with a new correlation id; return the id."""
    correlation_id = uuid.uuid4().hex
    log.exception("internal error %s on %s %s", correlation_id, scope["method"], scope["path"])
    return correlation_id


async def send_internal_error(send: Send, correlation_id: str) -> None:
    body: dict[str, Any] = {
        "error": {
            "code": "internal_error",
            "message": "an internal error occurred; the server's log has the details under "
            f"correlation id {correlation_id}",
            "correlation_id": correlation_id,
        }
    }
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (HEADER.encode(), correlation_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
