"""Who may read the registry or price an unapproved version over HTTP: a bearer token's roles.

The roles are those of ``governance.policy.PERMISSIONS`` whatever the registry's policy: a rating
server is reachable by more people than the registry's own users, so an open registry's server
does not open these doors either.
"""

from __future__ import annotations

from starlette.requests import Request

from ratekeeper.errors import PermissionDeniedError
from ratekeeper.governance.identity import User
from ratekeeper.governance.policy import PERMISSIONS
from ratekeeper.http.governance_routes import TokenAuth

WHAT = {
    "read": "read the registry",
    "test": "price a version that is not approved (not Production, Staging or a protected alias)",
    "outcome": "record quote outcomes",
}


def require(auth: TokenAuth, request: Request, action: str) -> User:
    """The token's user; 401 without a valid token, 403 when no role of theirs allows ``action``."""
    user = auth.user(request)
    allowed = PERMISSIONS[action]
    if not user.roles & allowed:
        roles = ", ".join(sorted(user.roles)) or "no role"
        raise PermissionDeniedError(
            f"{user.name} ({roles}) may not {WHAT.get(action, action)}: that needs the "
            f"{' or '.join(sorted(allowed))} role"
        )
    return user
