"""One socket write per response: uvicorn's httptools protocol, status line held for the body.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and the body in a second write: two ``send`` system calls and two TCP
segments (``TCP_NODELAY`` is on) for every quote. Profiled under wrk, those two writes were
40-50 % of a worker's samples, for ratekeeper and for a bare Starlette app alike. Here the
transport holds the header block and writes it together with the first body chunk; whatever is
still held is written when the response completes (a HEAD answer has no body), when the
connection closes, or before any other write. Interim answers (``100 Continue``, ``101``) are
never held: the client waits for them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ratekeeper.http.handoff import (
    HANDED_OFF_PATHS,
    HANDOFF_MIN_BYTES,
    SCOPE_KEY,
    BodyHandoff,
    declared_length,
)

_STATUS_LINE = b"HTTP/1.1 "


class _HeldTransport:
    """A transport that holds a response's header block until the next write."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:9] == _STATUS_LINE and data[9:10] != b"1":
            self._held = bytes(data)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:  # everything else is the socket's transport's
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing each (small) response in one system call, and offering a
    holdout upload's body to the promotion-request process (``http/handoff.py``)."""

    _handoff: BodyHandoff | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeldTransport(transport))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._handoff = None
        scope = self.scope
        if (
            scope.get("method") == "POST"
            and scope.get("path", "")[len(self.root_path) :] in HANDED_OFF_PATHS
            and self.scheme == "http"  # over TLS the socket carries ciphertext
        ):
            declared = declared_length(self.headers)
            if declared is not None and declared >= HANDOFF_MIN_BYTES:
                self._handoff = BodyHandoff(self, self.cycle, declared)
                extensions: dict[str, Any] = dict(scope.get("extensions") or {})
                extensions[SCOPE_KEY] = self._handoff
                scope["extensions"] = extensions

    def on_body(self, body: bytes) -> None:
        handoff = self._handoff
        if handoff is not None:
            handoff.seen += len(body)
        super().on_body(body)

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
