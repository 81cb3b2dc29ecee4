"""Company single sign-on: a bearer JWT from the company's OIDC identity provider → a ``User``.

Trusted: the provider's signing keys (its JWKS) and, in a token they verify, the issuer, audience,
times, the user claim and the groups claim. Roles are never taken from the token: its groups are
mapped to ratekeeper roles by ``RATEKEEPER_OIDC_ROLES``; a person none of whose groups is mapped is
refused. Verification is PyJWT's (``jwt.decode``), with an allowlist of asymmetric algorithms
matched to the key's type, so neither ``none`` nor an HMAC token "signed" with the public key can
pass.

Names: an SSO user is recorded under the user claim's value as given (``preferred_username`` by
default, else ``sub``), in the same namespace as local registry users, so one person has one name
whether they hold a registry token or sign on, and four-eyes (which compares names) holds across
both. The provider's user claim must therefore be unique, stable and not editable by its owner;
see docs/sso.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jwt

from ratekeeper.errors import InvalidInputError, PermissionDeniedError
from ratekeeper.governance.identity import User, check_roles
from ratekeeper.governance.oidc_keys import ProviderKey, ProviderKeys, check_fetch_url
from ratekeeper.settings import Settings

# Asymmetric algorithms only, by key type: never HS* (the key-confusion attack) or ``none``.
ALGORITHMS_BY_KEY_TYPE = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256"}),
    "EC": frozenset({"ES256", "ES384"}),
}
ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KEY_TYPE.values())
EC_CURVES = {"ES256": "P-256", "ES384": "P-384"}
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
LEEWAY_S = 30
MAX_TOKEN_CHARS = 16 * 1024
MAX_NAME_CHARS = 200

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (three base64url parts); registry tokens (``rk_<prefix>_<secret>``) are not."""
    return len(token) <= MAX_TOKEN_CHARS and _JWT_SHAPE.fullmatch(token) is not None


class SingleSignOn:
    """Verifies the provider's tokens; safe to share between threads (one per server)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        roles: Mapping[str, tuple[str, ...]],
        *,
        jwks_url: str | None = None,
        groups_claim: str = "groups",
        user_claim: str = "preferred_username",
        keys_lifespan: float = 300.0,
        refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = check_fetch_url(issuer, "RATEKEEPER_OIDC_ISSUER")
        if jwks_url is not None:
            check_fetch_url(jwks_url, "RATEKEEPER_OIDC_JWKS_URL")
        if not audience:
            raise InvalidInputError("RATEKEEPER_OIDC_AUDIENCE must not be empty")
        self.audience = audience
        self.roles = _check_role_map(roles)
        self.groups_claim = groups_claim
        self.user_claim = user_claim
        self.keys = ProviderKeys(
            issuer,
            jwks_url,
            lifespan=keys_lifespan,
            refetch_interval=refetch_interval,
            clock=clock,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SingleSignOn | None:
        """The configured provider; None when SSO is not configured at all."""
        given = {
            "RATEKEEPER_OIDC_ISSUER": settings.oidc_issuer,
            "RATEKEEPER_OIDC_AUDIENCE": settings.oidc_audience,
            "RATEKEEPER_OIDC_ROLES": settings.oidc_roles or None,
        }
        if not any(given.values()) and settings.oidc_jwks_url is None:
            return None
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise InvalidInputError(
                f"single sign-on is configured partially: set {', '.join(missing)} as well"
            )
        assert settings.oidc_issuer is not None and settings.oidc_audience is not None
        return cls(
            settings.oidc_issuer,
            settings.oidc_audience,
            settings.oidc_roles,
            jwks_url=settings.oidc_jwks_url,
            groups_claim=settings.oidc_groups_claim,
            user_claim=settings.oidc_user_claim,
        )

    def authenticate(self, token: str) -> User:
        """The person the token names, with the roles their groups map to.

        PermissionDeniedError says why a token is refused; UnavailableError means the provider's
        keys cannot be fetched right now. This may fetch keys over the network: call it off an
        event loop.
        """
        if not looks_like_jwt(token):
            raise PermissionDeniedError("the SSO token is not a JWT")
        header, unverified = _unverified_parts(token)
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise PermissionDeniedError(
                f"the SSO token's algorithm {str(algorithm)[:20]!r} is not allowed: use one of"
                f" {', '.join(sorted(ALGORITHMS))}"
            )
        # Refuse another issuer's token before touching the network for its keys.
        if unverified.get("iss") != self.issuer:
            raise PermissionDeniedError(_WRONG_ISSUER)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise PermissionDeniedError("the SSO token names no key id (kid)")
        key = self.keys.key(kid)
        _check_key_fits(key, algorithm)
        claims = self._verified_claims(token, key, algorithm)
        return User(
            name=self._name(claims),
            roles=self._mapped_roles(claims),
            created_by=f"sso:{self.issuer}",
            created_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
        )

    def _verified_claims(self, token: str, key: ProviderKey, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as error:
            raise PermissionDeniedError(_reason(error)) from None
        # Checked here too: PyJWT versions differ on whether an iat in the future is refused.
        iat = claims["iat"]
        if not isinstance(iat, int | float) or iat > time.time() + LEEWAY_S:
            raise PermissionDeniedError("the SSO token is not yet valid (iat is in the future)")
        return claims

    def _name(self, claims: Mapping[str, Any]) -> str:
        claim = self.user_claim if self.user_claim in claims else "sub"
        name = claims[claim]
        if (
            not isinstance(name, str)
            or not name.strip()
            or len(name) > MAX_NAME_CHARS
            or not name.isprintable()
        ):
            raise PermissionDeniedError(
                f"the SSO token's {claim!r} claim is not a usable user name"
                f" (1 to {MAX_NAME_CHARS} printable characters)"
            )
        return name

    def _mapped_roles(self, claims: Mapping[str, Any]) -> frozenset[str]:
        groups = claims.get(self.groups_claim)
        if groups is None:
            raise PermissionDeniedError(f"the SSO token has no {self.groups_claim!r} claim")
        if isinstance(groups, str):
            groups = groups.split()
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise PermissionDeniedError(
                f"the SSO token's {self.groups_claim!r} claim is not a list of group names"
            )
        roles = frozenset(r for g in groups for r in self.roles.get(g, ()))
        if not roles:
            raise PermissionDeniedError(
                f"none of the person's groups is mapped to a ratekeeper role"
                f" (RATEKEEPER_OIDC_ROLES maps {', '.join(sorted(self.roles))})"
            )
        return roles


_WRONG_ISSUER = "the SSO token was not issued by RATEKEEPER_OIDC_ISSUER"


def _check_role_map(roles: Mapping[str, tuple[str, ...]]) -> dict[str, frozenset[str]]:
    if not roles:
        raise InvalidInputError("RATEKEEPER_OIDC_ROLES maps no group to a role")
    checked = {}
    for group, names in roles.items():
        try:
            checked[group] = check_roles(names)
        except InvalidInputError as error:
            raise InvalidInputError(
                f"RATEKEEPER_OIDC_ROLES, group {group!r}: {error.message}"
            ) from None
    return checked


def _unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, read before verification only to choose the key and refuse early."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise PermissionDeniedError("the SSO token is malformed") from None
    return header, claims


def _check_key_fits(key: ProviderKey, algorithm: str) -> None:
    """The token's algorithm must be one the key is for (RSA ≠ EC; a pinned ``alg`` wins)."""
    fits = algorithm in ALGORITHMS_BY_KEY_TYPE[key.key_type]
    if key.algorithm is not None:
        fits = fits and key.algorithm == algorithm
    if algorithm in EC_CURVES:
        fits = fits and key.curve == EC_CURVES[algorithm]
    if not fits:
        raise PermissionDeniedError(
            f"the SSO token's algorithm {algorithm} does not match its key ({key.key_type})"
        )


def _reason(error: jwt.PyJWTError) -> str:
    """A clear reason for the person refused; never the token itself."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the SSO token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the SSO token is not yet valid"
    if isinstance(error, jwt.InvalidIssuerError):
        return _WRONG_ISSUER
    if isinstance(error, jwt.InvalidAudienceError):
        return "the SSO token is not meant for RATEKEEPER_OIDC_AUDIENCE"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the SSO token has no {error.claim!r} claim"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the SSO token's signature does not verify"
    return f"the SSO token is invalid ({type(error).__name__})"
