"""Who may do what.

A registry's policy is chosen when it is created:

- ``governed`` (the default): every actor must be a user of the registry with a role that allows
  the action; Production needs an approved promotion request (four-eyes), Staging needs passing
  gates, and direct moves to either are refused.
- ``open`` (a personal sandbox): any actor may do anything, directly; everything is still audited.

The user who creates a registry becomes its first ``admin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from ratekeeper.errors import InvalidInputError, PermissionDeniedError
from ratekeeper.store.tables import registry_state, user_roles, users

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
    # Price a version customers are not priced by (not Production, not approved for Staging).
    "test": frozenset({"modeller", "approver", "deployer", "admin"}),
}

# Aliases that move only through an approved request, like Production (clients quote them).
PROTECTED_ALIASES: frozenset[str] = frozenset({"champion"})

# Built once; one round trip answers "which policy, and which roles does the actor hold":
# one row per role, or a single row with no user (NULL id) or no role.
_POLICY = sa.select(registry_state.c.policy)
_POLICY_AND_ROLES = (
    sa.select(registry_state.c.policy, users.c.id, user_roles.c.role)
    .select_from(
        registry_state.outerjoin(users, users.c.name == sa.bindparam("actor")).outerjoin(
            user_roles, user_roles.c.user_id == users.c.id
        )
    )
    .where(registry_state.c.id == 1)
)


@dataclass(frozen=True)
class Access:
    """The registry's policy and what one actor holds in it, read once per transaction."""

    actor: str
    policy: str
    is_user: bool
    roles: frozenset[str]

    def require(self, action: str) -> frozenset[str]:
        """The actor's roles; PermissionDeniedError when a governed registry forbids the action."""
        if self.policy == OPEN:
            return self.roles
        if not self.is_user:
            raise PermissionDeniedError(
                f"{self.actor!r} is not a user of this governed registry "
                "(an admin adds users with `ratekeeper users add`)"
            )
        allowed = PERMISSIONS[action]
        if not self.roles & allowed:
            raise PermissionDeniedError(
                f"{self.actor} ({', '.join(sorted(self.roles))}) may not "
                f"{action.replace('_', ' ')}: that needs the {' or '.join(sorted(allowed))} role"
            )
        return self.roles


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidInputError(f"unknown registry policy {policy!r}: use governed or open")
    return policy


def registry_policy(conn: sa.Connection) -> str:
    return str(conn.execute(_POLICY).scalar_one())


def access(conn: sa.Connection, actor: str) -> Access:
    """The policy and the actor's roles, in one statement."""
    rows = conn.execute(_POLICY_AND_ROLES, {"actor": actor}).all()
    return Access(
        actor=actor,
        policy=str(rows[0].policy),
        is_user=rows[0].id is not None,
        roles=frozenset(r.role for r in rows if r.role is not None),
    )


def authorize(conn: sa.Connection, actor: str, action: str) -> frozenset[str]:
    """The actor's roles; PermissionDeniedError when a governed registry forbids the action."""
    return access(conn, actor).require(action)
