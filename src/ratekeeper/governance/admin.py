"""Users, tokens and the audit trail, as ``Registry`` methods (mixed into ``Registry``)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from ratekeeper.governance import audit, identity
from ratekeeper.governance import policy as policy_rules
from ratekeeper.governance.audit import AuditEvent, AuditVerification
from ratekeeper.governance.identity import TokenInfo, User
from ratekeeper.store import database


class IdentityAndAudit:
    engine: sa.Engine
    user: str

    # -- users --------------------------------------------------------------------------------
    def add_user(self, name: str, roles: Iterable[str]) -> User:
        """Add a user with roles (modeller, approver, deployer, viewer, admin); admin only."""
        with database.write_transaction(self.engine) as conn:
            policy_rules.authorize(conn, self.user, "manage_users")
            user = identity.add_user(conn, name, roles, self.user)
            audit.append(
                conn,
                actor=self.user,
                action="user.add",
                target=name,
                after={"roles": sorted(user.roles)},
            )
            return user

    def set_roles(self, name: str, roles: Iterable[str]) -> User:
        with database.write_transaction(self.engine) as conn:
            policy_rules.authorize(conn, self.user, "manage_users")
            before = identity.get_user(conn, name)
            user = identity.set_roles(conn, name, roles)
            audit.append(
                conn,
                actor=self.user,
                action="user.roles",
                target=name,
                before={"roles": sorted(before.roles)},
                after={"roles": sorted(user.roles)},
            )
            return user

    def list_users(self) -> list[User]:
        with database.read_transaction(self.engine) as conn:
            return identity.list_users(conn)

    # -- tokens -------------------------------------------------------------------------------
    def create_token(self, user: str, *, description: str | None = None) -> str:
        """A new API token for ``user``, returned once in plain text (stored hashed)."""
        with database.write_transaction(self.engine) as conn:
            policy_rules.authorize(conn, self.user, "manage_users")
            plain, info = identity.create_token(conn, user, self.user, description)
            audit.append(
                conn,
                actor=self.user,
                action="token.create",
                target=user,
                after={"prefix": info.prefix, "description": description},
            )
            return plain

    def revoke_token(self, prefix: str) -> TokenInfo:
        with database.write_transaction(self.engine) as conn:
            policy_rules.authorize(conn, self.user, "manage_users")
            info = identity.revoke_token(conn, prefix, self.user)
            audit.append(
                conn,
                actor=self.user,
                action="token.revoke",
                target=info.user,
                before={"prefix": prefix, "revoked": False},
                after={"revoked": True},
            )
            return info

    def list_tokens(self) -> list[TokenInfo]:
        with database.read_transaction(self.engine) as conn:
            return identity.list_tokens(conn)

    def authenticate(self, token: str) -> User | None:
        """The user behind a valid, unrevoked token (None otherwise)."""
        with database.read_transaction(self.engine) as conn:
            return identity.authenticate(conn, token)

    # -- audit --------------------------------------------------------------------------------
    def verify_audit(self) -> AuditVerification:
        """Recompute the audit hash chain; ``first_bad_id`` names the first bad event."""
        with database.read_transaction(self.engine) as conn:
            return audit.verify(conn)

    def audit_log(self, model: str | None = None, *, limit: int | None = None) -> list[AuditEvent]:
        with database.read_transaction(self.engine) as conn:
            return audit.events(conn, model=model, limit=limit)
