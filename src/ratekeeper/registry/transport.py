"""The remote registry client's HTTP: the standard library only (no dependency in the runtime).

The token travels in ``Authorization: Bearer``, never in a URL or a log line. Redirects are not
followed (a redirect would carry the token to wherever it points). https is verified against the
system's certificate authorities by default. An error answer becomes the ratekeeper exception its
body's ``code`` names, with the server's message, so a remote caller catches what an embedded
one does.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ratekeeper.errors import (
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Problem,
    RatekeeperError,
    UnavailableError,
    UnsupportedModelError,
)

TIMEOUT = 300.0
"""Seconds to wait for an answer: a promotion request runs the gates on the server."""

ERRORS: dict[str, type[RatekeeperError]] = {
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "invalid_input": InvalidInputError,
    "unsupported_model": UnsupportedModelError,
    "permission_denied": PermissionDeniedError,
    "unauthenticated": PermissionDeniedError,
    "unavailable": UnavailableError,
    "integrity_error": IntegrityError,
    "rate_limited": UnavailableError,
    "malformed_json": InvalidInputError,
    "bad_request": InvalidInputError,
    "payload_too_large": InvalidInputError,
}


def segment(value: object) -> str:
    """One path segment, percent-encoded (a name can never climb to another route)."""
    return quote(str(value), safe="")


class Transport:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = TIMEOUT) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(f"not a registry server URL: {base_url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise InvalidInputError(
                "a registry server URL has no query, fragment or credentials: pass token=..."
            )
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme, self._netloc, self._root = parts.scheme, parts.netloc, parts.path.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._local = threading.local()  # one kept-alive connection per thread
        self._opened: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        anonymous: bool = False,
    ) -> Any:
        """The decoded JSON answer (None for 204)."""
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        status, payload = self._send(method, path, query, data, anonymous)
        if status == 204 or not payload:
            return None
        return json.loads(payload)

    def download(self, path: str) -> bytes:
        return self._send("GET", path, None, None, False)[1]

    def close(self) -> None:
        """Close every connection this client opened, in any thread."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()
        self._local = threading.local()

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- the wire ---------------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        data: bytes | None,
        anonymous: bool,
    ) -> tuple[int, bytes]:
        target = self._root + path
        given = {k: v for k, v in (query or {}).items() if v is not None}
        if given:
            target += "?" + urlencode(given)
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._token and not anonymous:
            headers["Authorization"] = f"Bearer {self._token}"
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: once more
            connection = self._connection()
            try:
                connection.request(method, target, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop()
                if attempt == 2:
                    raise UnavailableError(
                        f"the registry server at {self.base_url} closed the connection"
                    ) from None
            except OSError as exc:
                self._drop()
                raise UnavailableError(
                    f"cannot reach the registry server at {self.base_url}: {exc}"
                ) from None
        if response.status >= 400:
            raise _error(response.status, payload)
        if 300 <= response.status < 400:
            raise UnavailableError(
                f"the registry server answered a redirect ({response.status}); give the URL it "
                "points to (redirects are not followed: they would carry the token)"
            )
        return response.status, payload

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._scheme == "https":
                connection = http.client.HTTPSConnection(
                    self._netloc, timeout=self._timeout, context=ssl.create_default_context()
                )
            else:
                connection = http.client.HTTPConnection(self._netloc, timeout=self._timeout)
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection


def _error(status: int, payload: bytes) -> RatekeeperError:
    try:
        return error_from_dict(json.loads(payload)["error"])
    except (ValueError, KeyError, TypeError):
        return UnavailableError(f"the registry server answered {status} without an error body")


def error_from_dict(
    error: Any, unknown: Callable[[str, str], RatekeeperError] | None = None
) -> RatekeeperError:
    """The typed error behind an error body's ``{"code", "message", "problems"}``; a code this
    package does not raise becomes ``unknown(code, message)`` (default: a RatekeeperError)."""
    code, message = str(error["code"]), str(error["message"])
    kind = ERRORS.get(code)
    if kind is None:
        return unknown(code, message) if unknown is not None else RatekeeperError(message)
    if issubclass(kind, InvalidInputError):
        problems = [
            Problem(p["field"], p["code"], p["message"], p.get("row"))
            for p in error.get("problems") or []
            if isinstance(p, dict)
        ]
        return kind(message, problems)
    return kind(message)
