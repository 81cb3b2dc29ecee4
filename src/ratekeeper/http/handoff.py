"""Large upload bodies read by the promotion-request process, never by a quote worker.

A promotion request or a check carries its holdout in the body: up to 50 MB. Receiving 40 MB
costs the process that reads it about 50 ms of CPU (copies out of the socket, the HTTP parser,
the ASGI messages), in 160 slices between which every quote on that worker waits; measured with
``benchmarks/bench_upload.py`` at 1,000 quotes/s, the worker's p99 rose from 0.8 ms to 3-4 ms
while a modeller uploaded, even with the parse and the gates in another process.

So the worker does not read such a body. The protocol (``http/transport.py``) marks a ``POST``
to one of :data:`HANDED_OFF_PATHS` that declares a ``Content-Length`` of at least
:data:`HANDOFF_MIN_BYTES`: it puts a :class:`BodyHandoff` in the request's ASGI scope
(``scope["extensions"]["ratekeeper.body"]``). The route authenticates the caller as usual, then
takes the handoff: the worker stops reading the connection, and the request process gets a
duplicate of the socket (passed by the kernel, ``SCM_RIGHTS``), the few bytes the worker had
already received, and how many are still to come. It reads them itself, parses, runs the gates,
and returns the outcome; the worker answers on the connection as for any request, then closes it
(its HTTP parser never saw the rest of the body, so the connection cannot carry another request).

Not handed off, read by the worker as before (``http/isolated.py`` spools them): bodies under
``HANDOFF_MIN_BYTES``, bodies sent chunked (no ``Content-Length``), connections over TLS (the
socket carries ciphertext; terminate TLS in front of the server, as most deployments do), and a
body the application has started to read.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ratekeeper.http.errors import HTTPProblem

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

HANDED_OFF_PATHS = frozenset({"/v1/requests", "/v1/checks"})
"""The routes whose body is a holdout (``http/governance_routes.py``)."""
HANDOFF_MIN_BYTES = 256 * 1024
"""Smaller bodies cost the worker well under a millisecond: it reads them itself."""
SCOPE_KEY = "ratekeeper.body"
IDLE_SECONDS = 60.0
"""The longest the request process waits for the next bytes of a handed-off body."""
MIN_BYTES_PER_SECOND = 256 * 1024
"""Beyond ``IDLE_SECONDS``, a body must keep arriving at this average rate (else 408): the one
request process reads one body at a time, so a client trickling its upload would hold up every
other promotion request. Only an authenticated caller gets this far."""


@dataclass
class HandedBody:
    """What the request process needs to read the rest of a body: pickled into the process,
    the socket crosses as a duplicate descriptor (``multiprocessing.reduction``)."""

    connection: socket.socket
    received: bytes
    """The body's first bytes, already read by the worker with the request's headers."""
    remaining: int


class BodyHandoff:
    """One request's offer to hand its body to another process (see the module's text)."""

    __slots__ = ("_cycle", "_protocol", "declared", "seen")

    def __init__(
        self, protocol: HttpToolsProtocol, cycle: RequestResponseCycle, declared: int
    ) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self.declared = declared
        self.seen = 0  # body bytes the HTTP parser has passed on so far

    def take(self) -> HandedBody | None:
        """Stop this worker reading the connection and return the body's rest to be read
        elsewhere; ``None`` when that is no longer possible (the body is complete or partly
        read already, the client is gone), and the caller reads the body itself."""
        protocol, cycle = self._protocol, self._cycle
        if (
            protocol.cycle is not cycle
            or cycle.disconnected
            or not cycle.more_body
            or len(cycle.body) != self.seen  # the application has read some of it
            or self.seen >= self.declared
        ):
            return None
        connection = protocol.transport.get_extra_info("socket")
        if connection is None:
            return None
        protocol.flow.pause_reading()
        # Nothing may resume reading this connection: the rest of the body is the request
        # process's, and the parser never sees it (not even a stray ``receive()`` may).
        protocol.flow.resume_reading = _never  # type: ignore[method-assign]
        if cycle.waiting_for_100_continue:  # the client sends the body once told to
            protocol.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        cycle.keep_alive = False  # the answer ends the connection (``connection: close``)
        received = bytes(cycle.body)
        cycle.body = bytearray()
        duplicate = socket.socket(fileno=os.dup(connection.fileno()))
        return HandedBody(duplicate, received, self.declared - self.seen)


def _never() -> None:
    """A handed-off connection's ``resume_reading``."""


def offered(scope: Mapping[str, Any]) -> BodyHandoff | None:
    """The request's handoff offer, if the protocol made one."""
    extensions = scope.get("extensions")
    found = extensions.get(SCOPE_KEY) if extensions else None
    return found if isinstance(found, BodyHandoff) else None


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's ``Content-Length`` (``None`` when absent, not one plain number, or beside
    a ``Transfer-Encoding``, which would frame the body otherwise)."""
    found = [value for name, value in headers if name == b"content-length"]
    if any(name == b"transfer-encoding" for name, _ in headers):
        return None
    if len(found) != 1 or not found[0].isdigit():
        return None
    return int(found[0])


def read_handed_body(body: HandedBody) -> bytearray:
    """In the request process: the whole body, its first bytes and the rest from the socket.

    A client that closes early gets 400, one too slow (see ``MIN_BYTES_PER_SECOND``) 408."""
    connection = body.connection
    whole = bytearray(len(body.received) + body.remaining)
    whole[: len(body.received)] = body.received
    view = memoryview(whole)[len(body.received) :]  # what is still to come
    deadline = time.monotonic() + IDLE_SECONDS + body.remaining / MIN_BYTES_PER_SECOND
    try:
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            connection.settimeout(min(left, IDLE_SECONDS))  # poll(); O_NONBLOCK stays set
            got = connection.recv_into(view)
            if got == 0:
                raise HTTPProblem(
                    "bad_request",
                    f"the request body ended after {len(whole) - len(view):,} of its "
                    f"{len(whole):,} declared bytes",
                )
            view = view[got:]
    except TimeoutError:
        raise HTTPProblem(
            "request_timeout",
            f"the request body did not arrive in time ({len(whole) - len(view):,} of "
            f"{len(whole):,} bytes)",
        ) from None
    except OSError as lost:
        raise HTTPProblem("bad_request", f"the request body could not be read: {lost}") from None
    finally:
        connection.close()  # this process's duplicate only: close() is no shutdown()
    return whole
