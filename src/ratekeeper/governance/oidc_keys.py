"""The identity provider's signing keys (its JWKS): found, fetched, cached and refreshed, bounded.

Fetching goes through PyJWT's ``PyJWKClient``; the caching and the refresh bounds are ours, so they
hold whatever PyJWT version is installed:

- the key set is kept ``lifespan`` seconds (300 by default), then fetched again; keys older than
  that are never used, so a key the provider withdraws stops working within the lifespan;
- a token naming a key id we do not hold causes at most one fetch per ``refetch_interval``
  (30 s), so a provider's key rotation is picked up at once, but a flood of made-up key ids cannot
  make us fetch per request;
- a failed fetch counts as an attempt too: while the provider is down, requests are refused at
  once (``UnavailableError``) instead of each waiting on a fetch timeout.

Without a configured JWKS URL the key set's address comes from the provider's discovery document
(``<issuer>/.well-known/openid-configuration``), whose ``issuer`` must be the configured one. Every
address we fetch from must be ``https://``, or ``http://`` on a loopback host (a provider on the
same machine, and the tests). The discovered ``jwks_uri`` may be on another host than the issuer
(Google's is): the discovery document comes from the issuer over TLS, so it is trusted exactly as
much as the issuer; a pinned ``RATEKEEPER_OIDC_JWKS_URL`` skips discovery altogether.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import jwt

from ratekeeper.errors import InvalidInputError, PermissionDeniedError, UnavailableError

DISCOVERY_PATH = "/.well-known/openid-configuration"
FETCH_TIMEOUT_S = 5.0
MAX_DISCOVERY_BYTES = 256 * 1024


def check_fetch_url(url: str, what: str) -> str:
    """``url`` if we may fetch keys from it: https, or http to a loopback host."""
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return url
    if parsed.scheme == "http" and parsed.hostname and _is_loopback(parsed.hostname):
        return url
    raise InvalidInputError(
        f"{what} must be an https:// URL (http:// only on a loopback host), not {url[:200]!r}"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ProviderKeys:
    """Signing keys by key id, for one provider; safe to share between threads."""

    def __init__(
        self,
        issuer: str,
        jwks_url: str | None = None,
        *,
        lifespan: float = 300.0,
        refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._jwks_url = jwks_url
        self.lifespan = lifespan
        self.refetch_interval = refetch_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, ProviderKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._last_error: str | None = None
        self.fetches = 0
        """Key-set fetches attempted so far (successful or not)."""

    def key(self, kid: str) -> ProviderKey:
        """The key ``kid`` names; PermissionDeniedError if the provider has none by that id."""
        with self._lock:
            now = self._clock()
            fresh = self._fetched_at is not None and now - self._fetched_at < self.lifespan
            if not fresh:
                self._fetch(now)
            found = self._keys.get(kid)
            if found is None and self._may_fetch(now):
                self._fetch(now)  # the provider may have rotated its keys since
                found = self._keys.get(kid)
            if found is None:
                raise PermissionDeniedError(
                    f"the SSO token names a key id ({kid[:64]!r}) the identity provider does not"
                    " publish"
                )
            return found

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.refetch_interval

    def _fetch(self, now: float) -> None:
        if not self._may_fetch(now):
            raise UnavailableError(
                f"the identity provider's signing keys could not be fetched: {self._last_error};"
                f" retrying at most every {self.refetch_interval:g} s"
            )
        self._attempted_at = now
        self.fetches += 1
        try:
            client = jwt.PyJWKClient(
                self._resolve_jwks_url(), cache_jwk_set=False, timeout=FETCH_TIMEOUT_S
            )
            keys = _signing_keys(client.fetch_data())
        except (jwt.PyJWTError, OSError, ValueError) as error:
            # PyJWT wraps the HTTP error in a sentence of its own: report the cause alone.
            self._last_error = _short(error.__cause__ or error)
            raise UnavailableError(
                f"the identity provider's signing keys could not be fetched: {self._last_error}"
            ) from error
        self._keys = keys
        self._fetched_at = now
        self._last_error = None

    def _resolve_jwks_url(self) -> str:
        if self._jwks_url is None:
            self._jwks_url = discover_jwks_url(self.issuer)
        return self._jwks_url


@dataclass(frozen=True)
class ProviderKey:
    """One public signing key of the provider, with the JWK fields that say what it is for."""

    kid: str
    key_type: str
    """``RSA`` or ``EC``: the only kinds we accept."""
    algorithm: str | None
    """The JWK's ``alg``, when the provider pins one."""
    curve: str | None
    key: Any
    """The public key, as PyJWT's ``jwt.decode`` takes it."""


def _signing_keys(document: Any) -> dict[str, ProviderKey]:
    """The RSA and EC signing keys of a JWKS; keys of other kinds or uses are left out."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the JWKS is not a JSON object with a 'keys' list")
    found = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid, kty = entry.get("kid"), entry.get("kty")
        if not isinstance(kid, str) or not kid or kty not in ("RSA", "EC"):
            continue
        try:
            parsed = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # a key PyJWT cannot use (e.g. an unsupported curve): never matches
        found[kid] = ProviderKey(kid, kty, entry.get("alg"), entry.get("crv"), parsed.key)
    if not found:
        raise ValueError("the JWKS holds no RSA or EC signing key with a key id")
    return found


def discover_jwks_url(issuer: str) -> str:
    """The ``jwks_uri`` of the provider's discovery document, checked."""
    url = issuer.rstrip("/") + DISCOVERY_PATH
    opener = urllib.request.build_opener(_NoRedirects())
    with opener.open(url, timeout=FETCH_TIMEOUT_S) as response:
        document: Any = json.loads(response.read(MAX_DISCOVERY_BYTES + 1)[:MAX_DISCOVERY_BYTES])
    if not isinstance(document, dict):
        raise ValueError("the discovery document is not a JSON object")
    # OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the one we asked.
    if document.get("issuer") != issuer:
        raise ValueError("the discovery document names another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise ValueError("the discovery document has no jwks_uri")
    try:
        return check_fetch_url(jwks_uri, "the discovered jwks_uri")
    except InvalidInputError as error:
        raise ValueError(error.message) from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead a fetch to a plain-http or internal address: refuse it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _short(error: BaseException) -> str:
    return str(error)[:200] or type(error).__name__
