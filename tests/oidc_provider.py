"""A real OIDC identity provider on loopback, for the single sign-on tests.

It serves ``/.well-known/openid-configuration`` and ``/jwks.json`` over HTTP from a thread, on
127.0.0.1 and a free port, with keys it generates, and signs tokens with PyJWT. It counts the
requests per path (to check caching) and can be taken down (``fail_with(503)``) or have its keys
rotated.

    with LoopbackProvider() as idp:
        settings = idp.settings(tmp_path, roles={"pricing": ("modeller",)})
        token = idp.token(sub="carol", groups=["pricing"])
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from ratekeeper.settings import Settings

AUDIENCE = "ratekeeper"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_key(kind: str = "RSA") -> PrivateKey:
    """A fresh private key: ``RSA`` (2048 bits), ``EC`` (P-256) or ``EC384`` (P-384)."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "EC":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "EC384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(f"unknown key kind {kind!r}")


@functools.cache
def shared_key(kind: str = "RSA") -> PrivateKey:
    """One key per kind for the whole run: RSA generation costs ~0.1-0.4 s a key."""
    return new_key(kind)


def public_jwk(key: PrivateKey, kid: str, alg: str | None = None) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, use="sig")
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def default_algorithm(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return "ES384" if key.curve.name == "secp384r1" else "ES256"


class LoopbackProvider:
    """An identity provider on ``http://127.0.0.1:<port>``; start it by ``with`` or ``start()``."""

    def __init__(self, key_kind: str = "RSA", *, audience: str = AUDIENCE) -> None:
        self.audience = audience
        self.keys: dict[str, PrivateKey] = {}
        self.published: list[dict[str, Any]] = []
        self.kid = self.add_key("key-1", shared_key(key_kind))
        self.requests: Counter[str] = Counter()
        self.status = 200
        self.discovery_overrides: dict[str, Any] = {}
        """Fields that replace those of the discovery document (to serve a bad one)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks.json"

    def add_key(self, kid: str, key: PrivateKey, *, publish: bool = True) -> str:
        """Hold ``key`` for signing under ``kid``; publish its public half unless told not to."""
        self.keys[kid] = key
        if publish:
            self.published.append(public_jwk(key, kid))
        return kid

    def fail_with(self, status: int) -> None:
        """Answer every request with ``status`` (e.g. 503: the provider is down); 200 restores."""
        self.status = status

    def token(
        self,
        sub: str = "carol",
        groups: Sequence[str] | str | None = ("pricing",),
        *,
        kid: str | None = None,
        key: PrivateKey | None = None,
        algorithm: str | None = None,
        lifetime_s: int = 300,
        **claims: Any,
    ) -> str:
        """A token signed with the key ``kid`` names (or ``key``); ``claims`` override defaults.

        A claim given as ``None`` is left out (``exp=None`` makes a token with no expiry).
        """
        kid = kid or self.kid
        signer = key if key is not None else self.keys[kid]
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + lifetime_s,
            "preferred_username": sub,
        }
        if groups is not None:
            payload["groups"] = groups if isinstance(groups, str) else list(groups)
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(
            payload,
            signer,
            algorithm=algorithm or default_algorithm(signer),
            headers={"kid": kid},
        )

    def settings(
        self,
        home: Path,
        roles: Mapping[str, tuple[str, ...]] | None = None,
        *,
        discover: bool = False,
        **overrides: Any,
    ) -> Settings:
        """Settings that trust this provider (the JWKS URL found by discovery if ``discover``)."""
        values: dict[str, Any] = {
            "home": home,
            "oidc_issuer": self.issuer,
            "oidc_audience": self.audience,
            "oidc_jwks_url": None if discover else self.jwks_url,
            "oidc_roles": roles if roles is not None else {"pricing": ("modeller",)},
        }
        values.update(overrides)
        return Settings(**values)

    def start(self) -> LoopbackProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> LoopbackProvider:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _documents(self) -> dict[str, Any]:
        return {
            "/.well-known/openid-configuration": {
                "issuer": self.issuer,
                "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                **self.discovery_overrides,
            },
            "/jwks.json": {"keys": self.published},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests[self.path] += 1
                document = provider._documents().get(self.path)
                status = provider.status if document is not None else 404
                body = json.dumps(document if status == 200 else {"error": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        return Handler
