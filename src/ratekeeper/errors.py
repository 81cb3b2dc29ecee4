"""One small error hierarchy for the whole package.

No framework imports here: the HTTP layer and the CLI map these classes to status codes and exit
codes in exactly one place each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class RatekeeperError(Exception):
    """Base class of every error ratekeeper raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class NotFoundError(RatekeeperError):
    """A model, version, stage, alias or artifact that does not exist."""

    code = "not_found"


class ConflictError(RatekeeperError):
    """The request contradicts the registry's current state (e.g. a stale move)."""

    code = "conflict"


class InvalidInputError(RatekeeperError):
    """Input that breaks a contract: a bad URI, a bad argument, policies that fail the signature."""

    code = "invalid_input"

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.problems:
            body["problems"] = [p.to_dict() for p in self.problems]
        return body


class UnsupportedModelError(InvalidInputError):
    """A model object ratekeeper cannot package safely (no pickle fallback, ever)."""

    code = "unsupported_model"


class PermissionDeniedError(RatekeeperError):
    """The actor may not perform this action."""

    code = "permission_denied"


class UnavailableError(RatekeeperError):
    """The service cannot answer right now (models still loading, a version that failed to load)."""

    code = "unavailable"


class StoreUnavailableError(UnavailableError):
    """The artifact store (S3-compatible object storage) cannot be reached: retried, then this."""


class StoreAccessDeniedError(StoreUnavailableError):
    """The artifact store refused the server's credentials, or has no such bucket."""


class SchemaVersionError(UnavailableError):
    """The registry's database schema is older (run ``ratekeeper migrate``) or newer (upgrade
    ratekeeper) than the one this code reads and writes."""

    def __init__(self, message: str, *, found: str, needed: str) -> None:
        super().__init__(message)
        self.found = found
        self.needed = needed


class IntegrityError(RatekeeperError):
    """Stored content does not match its digest, or is missing: never score with it."""

    code = "integrity_error"


class ImplausiblePriceError(RatekeeperError):
    """The model produced a price that is not finite, is negative or is beyond plausibility.

    The price is never returned: a defective or crafted model must not quote it.
    """

    code = "implausible_price"


@dataclass(frozen=True)
class Problem:
    """One problem with one field of one policy.

    ``row`` is the 0-based position of the policy in the request (``None`` for a single policy).
    ``code`` is one of ``missing``, ``unknown_field``, ``wrong_type``, ``unseen_level``,
    ``not_finite``, ``out_of_range``; in batch scoring also ``implausible_price`` (field
    ``prediction``) for a row the model prices beyond plausibility.
    """

    field: str
    code: str
    message: str
    row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"field": self.field, "code": self.code, "message": self.message}
        if self.row is not None:
            body["row"] = self.row
        return body


class RateLimitedError(RatekeeperError):
    """A client asked for more than its share (e.g. cold loads of pinned versions)."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
