"""Who may do what.

A registry's policy is chosen when it is created:

- ``governed`` (the default): every actor must be a user of the registry with a role that allows
  the action; Production needs an approved promotion request (four-eyes), Staging needs passing
  gates, and direct moves to either are refused.
- ``open`` (a personal sandbox): any actor may do anything, directly; everything is still audited.

The user who creates a registry becomes its first ``admin``. In a governed registry every write
needs a credential (a registry token or an SSO token): a name alone never authorizes one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import sqlalchemy as sa

from ratekeeper.errors import InvalidInputError, PermissionDeniedError
from ratekeeper.governance.identity import token_digest
from ratekeeper.store.tables import registry_state, tokens, user_roles, users

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
    # The kill switch: whoever runs or signs off the service may pull it.
    "rollback": frozenset({"deployer", "approver", "admin"}),
    "alias": frozenset({"deployer", "approver", "admin"}),
    # Start, pause, resume or complete a rollout (rollouts/); aborting one is a "rollback".
    "rollout": frozenset({"deployer", "admin"}),
    # Record whether a quote was taken up (POST /v1/quotes/{id}/outcome): the policy system.
    "outcome": frozenset({"deployer", "admin"}),
    "manage_users": frozenset({"admin"}),
    "read": frozenset({"viewer", "modeller", "approver", "deployer", "admin"}),
    # Price a version customers are not priced by (not Production, not approved for Staging).
    "test": frozenset({"modeller", "approver", "deployer", "admin"}),
}

_STATE = sa.select(
    registry_state.c.policy, registry_state.c.identity, registry_state.c.audit_key_id
).where(registry_state.c.id == 1)
_ROLES_BY_NAME = (
    sa.select(users.c.id, user_roles.c.role)
    .select_from(users.outerjoin(user_roles, user_roles.c.user_id == users.c.id))
    .where(users.c.name == sa.bindparam("name"))
)
_ROLES_BY_TOKEN = (
    sa.select(users.c.id, users.c.name, user_roles.c.role)
    .select_from(
        tokens.join(users, users.c.id == tokens.c.user_id).outerjoin(
            user_roles, user_roles.c.user_id == users.c.id
        )
    )
    .where(tokens.c.token_sha256 == sa.bindparam("digest"), tokens.c.revoked_at.is_(None))
)

MISSING_CREDENTIAL = (
    "needs a credential: pass token=... (or set RATEKEEPER_TOKEN, or --token); a name given "
    "with user=, --user or RATEKEEPER_USER is not one"
)


@dataclass(frozen=True)
class Credential:
    """Who a registry handle acts as, and how that was established.

    - ``declared``: a name (``user=``, ``--user``, ``RATEKEEPER_USER``): reads and open
      registries only, or, in a registry created with OS-account identity, the OS account;
    - ``token``: a registry token, checked against the database on every write;
    - ``verified``: an identity a server established itself (a bearer token or an SSO JWT it
      checked); SSO identities carry their roles from the identity provider's groups.
    """

    kind: str
    name: str
    secret: str | None = field(default=None, repr=False)
    roles: frozenset[str] | None = None


@dataclass(frozen=True)
class Access:
    """The registry's policy and what one actor holds in it, read once per transaction."""

    actor: str
    policy: str
    is_user: bool
    roles: frozenset[str]
    authenticated: bool = True
    key_id: str | None = None
    """The id of the key that seals this registry's audit head (None: not sealed yet)."""

    def require(self, action: str) -> frozenset[str]:
        """The actor's roles; PermissionDeniedError when a governed registry forbids the action."""
        if self.policy == OPEN:
            return self.roles
        if not self.authenticated:
            raise PermissionDeniedError(
                f"this registry is governed: {action.replace('_', ' ')} {MISSING_CREDENTIAL}"
            )
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


_POLICY = sa.select(registry_state.c.policy)


def registry_policy(conn: sa.Connection) -> str:
    return str(conn.execute(_POLICY).scalar_one())


def access(conn: sa.Connection, credential: Credential, os_account: str) -> Access:
    """The policy and the credential's actor and roles (two small statements)."""
    state = conn.execute(_STATE).one()
    common = {"policy": str(state.policy), "key_id": state.audit_key_id}
    if credential.kind == "verified" and credential.roles is not None:  # SSO: roles from groups
        return Access(credential.name, is_user=True, roles=credential.roles, **common)
    if credential.kind == "token":
        rows = conn.execute(_ROLES_BY_TOKEN, {"digest": token_digest(credential.secret or "")})
        found = rows.all()
        if not found:
            raise PermissionDeniedError("the token is unknown or revoked")
        return Access(
            str(found[0].name),
            is_user=True,
            roles=frozenset(r.role for r in found if r.role is not None),
            **common,
        )
    name, authenticated = credential.name, credential.kind == "verified"
    if credential.kind == "declared" and state.identity == "os":
        name, authenticated = os_account, True  # honest-user governance, chosen at creation
    named = conn.execute(_ROLES_BY_NAME, {"name": name}).all()
    return Access(
        name,
        is_user=bool(named),
        roles=frozenset(r.role for r in named if r.role is not None),
        authenticated=authenticated,
        **common,
    )
