"""Every pricing route behind a token (``ratekeeper serve --pricing-token-file FILE``).

For a rating server reachable beyond one network (no mesh, no gateway doing it): the quote
website or policy system holds a pricing token, and a quote, score or ``/invocations`` request
without it gets 401. A registry credential (a user's ``rk_`` token or an SSO token) is accepted
too, so a modeller can still price a pinned version with the token the pinned route asks for;
what that user may price is then decided by the route, as without the gate.

The file holds one token per line (blank lines and ``#`` comments ignored): two lines while a
token is being rotated, the old one removed once every client has the new one (the file is read
at start: restart the servers one by one). Tokens are compared by SHA-256 digest with
``hmac.compare_digest``; a token shorter than ``MIN_LENGTH`` is refused at start.

A plain ASGI wrapper outside the app, like http/catchall.py: a request that is not for a
pricing route pays one string test. Pricing routes are recognised by their path segments,
before routing and whatever the method, so a variant of the path (a trailing slash, a doubled
slash) is refused here rather than redirected to the route.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ratekeeper.errors import InvalidInputError, RatekeeperError
from ratekeeper.http.auth import TokenAuth, off_loop

MIN_LENGTH = 32
"""Characters: ``python -c 'import secrets; print(secrets.token_urlsafe(32))'`` gives 43."""

PRICING_ACTIONS = frozenset({"quote", "score"})


def read_pricing_tokens(path: str | Path) -> tuple[bytes, ...]:
    """The SHA-256 digests of the tokens in ``path``; one readable error for a bad file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"no pricing token file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the pricing token file {path}: {exc}") from None
    tokens = [line.strip() for line in text.splitlines()]
    tokens = [t for t in tokens if t and not t.startswith("#")]
    if not tokens:
        raise InvalidInputError(f"the pricing token file {path} holds no token")
    for number, token in enumerate(tokens, start=1):
        if len(token) < MIN_LENGTH or any(c.isspace() for c in token):
            raise InvalidInputError(
                f"pricing token {number} in {path} is too weak: a token is at least "
                f"{MIN_LENGTH} characters without spaces (make one with python -c 'import "
                "secrets; print(secrets.token_urlsafe(32))')"
            )
    return tuple(hashlib.sha256(t.encode()).digest() for t in tokens)


def is_pricing_path(path: str) -> bool:
    segments = [s for s in path.lower().split("/") if s]
    if segments == ["invocations"]:
        return True
    return (
        len(segments) == 4 and segments[:2] == ["v1", "models"] and segments[3] in PRICING_ACTIONS
    )


class PricingGate:
    def __init__(self, app: ASGIApp, digests: tuple[bytes, ...], auth: TokenAuth | None) -> None:
        self.app = app
        self.digests = digests
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_pricing_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is not None and (self._is_pricing_token(token) or await self._is_user(scope)):
            await self.app(scope, receive, send)
            return
        await _refuse(send, "send the pricing token: Authorization: Bearer <token>")

    def _is_pricing_token(self, token: bytes) -> bool:
        digest = hashlib.sha256(token).digest()
        found = False
        for known in self.digests:  # every one compared: the time says nothing of which
            found |= hmac.compare_digest(digest, known)
        return found

    async def _is_user(self, scope: Scope) -> bool:
        if self.auth is None:
            return False
        auth, request = self.auth, Request(scope)
        try:
            await off_loop(lambda: auth.user(request))  # cached: one lookup per token per 10 s
        except RatekeeperError:
            return False
        return True


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


async def _refuse(send: Send, message: str) -> None:
    body: dict[str, Any] = {"error": {"code": "unauthenticated", "message": message}}
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"www-authenticate", b'Bearer realm="ratekeeper pricing"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
