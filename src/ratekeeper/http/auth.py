"""Who calls: bearer tokens → the registry's users, and the pieces every authenticated route shares.

HTTP only extracts the credential; the registry checks it (``Registry.authenticate``) and the
routes act through ``Registry.on_behalf_of(user)``, so the same policy decides what may be done.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from anyio import to_thread
from starlette.requests import Request

from ratekeeper.errors import NotFoundError, PermissionDeniedError
from ratekeeper.governance.identity import User
from ratekeeper.governance.sso import SingleSignOn, looks_like_jwt
from ratekeeper.http import protocol, schemas
from ratekeeper.http.errors import HTTPProblem
from ratekeeper.registry.registry import Registry

T = TypeVar("T")

TOKEN_CACHE_SECONDS = 10.0
"""A revoked token stops working within this many seconds on every worker."""

LARGEST_ID = 2**63 - 1
"""Database integers are 64-bit: a larger id names nothing (404), it must not overflow (500)."""

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **schemas.ERRORS,
    401: {"model": schemas.ErrorBody, "description": "no valid bearer token"},
    403: {"model": schemas.ErrorBody, "description": "the token's user may not do this"},
    409: {"model": schemas.ErrorBody, "description": "the request is stale or already decided"},
}


class TokenAuth:
    """Bearer tokens → users, cached briefly so the check costs a dict lookup."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: dict[str, tuple[float, User | None]] = {}
        # Company single sign-on, when the settings name an identity provider: its JWTs are
        # verified here (keys fetched and cached by governance.sso), registry tokens as before.
        self.sso = SingleSignOn.from_settings(registry.settings)

    def user(self, request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPProblem(
                "unauthenticated", "send a bearer token: Authorization: Bearer rk_..."
            )
        token = token.strip()
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is None or cached[0] < now:
            cached = (now + TOKEN_CACHE_SECONDS, self._authenticate(token))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = cached
        if cached[1] is None:
            raise HTTPProblem("unauthenticated", "the bearer token is unknown or revoked")
        return cached[1]

    def _authenticate(self, token: str) -> User | None:
        if self.sso is not None and looks_like_jwt(token):
            try:
                return self.sso.authenticate(token)
            except PermissionDeniedError as refused:  # a bad SSO token is no credential: 401
                raise HTTPProblem("unauthenticated", refused.message) from None
        return self.registry.authenticate(token)

    def acting(self, request: Request) -> Registry:
        """The registry acting as the token's user, as the server authenticated them."""
        return self.registry.on_behalf_of(self.user(request))


class AttemptLimiter:
    """At most ``limit`` attempts per client address in any ``window`` seconds (per process)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._seen: dict[str, deque[float]] = {}

    def check(self, request: Request) -> None:
        client = request.client.host if request.client is not None else "-"
        now = time.monotonic()
        attempts = self._seen.setdefault(client, deque())
        while attempts and attempts[0] <= now - self.window:
            attempts.popleft()
        if len(attempts) >= self.limit:
            raise HTTPProblem(
                "rate_limited",
                f"too many attempts from this address: at most {self.limit} per "
                f"{self.window:g} seconds",
            )
        attempts.append(now)
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - self.window}


async def off_loop(call: Callable[[], T]) -> T:
    """Run a registry call in a worker thread: database work, gates and uploads never block
    the event loop the quotes share."""
    return await to_thread.run_sync(call)


def id64(value: int, missing: str) -> int:
    """``value``, or NotFoundError(``missing``) when no 64-bit database id can be it."""
    if not -LARGEST_ID <= value <= LARGEST_ID:
        raise NotFoundError(missing)
    return value


def require(actor: Registry, action: str) -> None:
    """Refuse early, with the registry's own message, what the actor's write would refuse later
    (before an upload is unpacked and stored)."""
    actor._read_access().require(action)


async def read_json_off_loop(request: Request, limit: int) -> Any:
    """The JSON body, read without blocking (413 beyond ``limit``) and parsed in a worker thread:
    parsing a 40 MB holdout or package takes the CPU for a good fraction of a second."""
    body = await protocol.read_body(request, limit)
    return await off_loop(lambda: protocol.parse_json(body))


async def read_object(request: Request, limit: int = 100_000) -> dict[str, Any]:
    """A small JSON object body (a move's comment, a rollout's plan); an empty body is ``{}``."""
    if not (await request.body()).strip():
        return {}
    body = await read_json_off_loop(request, limit)
    if not isinstance(body, dict):
        raise HTTPProblem("bad_request", "send a JSON object")
    return body
