"""Who may do what.

A registry's policy is chosen when it is created:

- ``governed`` (the default): every actor must be a user of the registry with a role that allows
  the action; Production needs an approved promotion request (four-eyes), Staging needs passing
  gates, and direct moves to either are refused.
- ``open`` (a personal sandbox): any actor may do anything, directly; everything is still audited.

The user who creates a registry becomes its first ``admin``.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from ratekeeper.errors import InvalidInputError, PermissionDeniedError
from ratekeeper.governance import identity
from ratekeeper.store.tables import registry_state

GOVERNED: Final = "governed"
OPEN: Final = "open"
POLICIES = (GOVERNED, OPEN)

# action → roles that may perform it (in a governed registry)
PERMISSIONS: dict[str, frozenset[str]] = {
    "register": frozenset({"modeller", "admin"}),
    "request": frozenset({"modeller", "deployer", "approver", "admin"}),
    "approve": frozenset({"approver"}),
    "override": frozenset({"admin"}),
    "reject": frozenset({"approver", "admin"}),
    "archive": frozenset({"deployer", "approver", "admin"}),
    "rollback": frozenset({"deployer", "approver"}),
    "alias": frozenset({"deployer", "approver", "admin"}),
    "manage_users": frozenset({"admin"}),
    "read": frozenset({"viewer", "modeller", "approver", "deployer", "admin"}),
}


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidInputError(f"unknown registry policy {policy!r}: use governed or open")
    return policy


def registry_policy(conn: sa.Connection) -> str:
    return str(conn.execute(sa.select(registry_state.c.policy)).scalar_one())


def authorize(conn: sa.Connection, actor: str, action: str) -> frozenset[str]:
    """The actor's roles; PermissionDeniedError when a governed registry forbids the action."""
    user = identity.find_user(conn, actor)
    roles = user.roles if user is not None else frozenset()
    if registry_policy(conn) == OPEN:
        return roles
    if user is None:
        raise PermissionDeniedError(
            f"{actor!r} is not a user of this governed registry "
            "(an admin adds users with `ratekeeper users add`)"
        )
    allowed = PERMISSIONS[action]
    if not roles & allowed:
        raise PermissionDeniedError(
            f"{actor} ({', '.join(sorted(roles))}) may not {action.replace('_', ' ')}: "
            f"that needs the {' or '.join(sorted(allowed))} role"
        )
    return roles
