"""Users, enrollment, tokens and the audit trail, as ``Registry`` methods (mixed into ``Registry``).

An admin manages users and roles but never holds another user's credential: adding a user
returns a one-time enrollment code, which that user redeems for their own token. Every role
grant, enrollment (and refused enrollment) and token is audited.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from ratekeeper.errors import PermissionDeniedError
from ratekeeper.governance import audit, identity
from ratekeeper.governance.audit import AuditEvent, AuditVerification
from ratekeeper.governance.identity import NewUser, TokenInfo, User
from ratekeeper.governance.session import ActingSession
from ratekeeper.store import database
from ratekeeper.store.tables import protected_aliases


class IdentityAndAudit(ActingSession):
    # -- users --------------------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        roles: Iterable[str],
        *,
        enrollment_lifetime: timedelta = identity.ENROLLMENT_LIFETIME,
    ) -> NewUser:
        """Add a user with roles; admin only. The result's ``enrollment_code`` is shown once:
        give it to that person, who redeems it with ``rk.Registry(uri).enroll(code)``."""
        with self._write("manage_users") as (conn, access):
            user = identity.add_user(conn, name, roles, access.actor)
            code, expires = identity.start_enrollment(conn, name, access.actor, enrollment_lifetime)
            audit.append(
                conn,
                actor=access.actor,
                action="user.add",
                target=name,
                after={"roles": sorted(user.roles), "enrollment_expires": expires.isoformat()},
            )
            return NewUser(user.name, user.roles, user.created_by, user.created_at, code, expires)

    def renew_enrollment(
        self, name: str, *, lifetime: timedelta = identity.ENROLLMENT_LIFETIME
    ) -> NewUser:
        """A new one-time enrollment code for an existing user (a lost or expired one); admin."""
        with self._write("manage_users") as (conn, access):
            user = identity.get_user(conn, name)
            code, expires = identity.start_enrollment(conn, name, access.actor, lifetime)
            audit.append(
                conn,
                actor=access.actor,
                action="user.enrollment",
                target=name,
                after={"enrollment_expires": expires.isoformat()},
            )
            return NewUser(user.name, user.roles, user.created_by, user.created_at, code, expires)

    def enroll(self, code: str, *, description: str | None = None) -> str:
        """Redeem a one-time enrollment code: returns the new user's own token (shown once)."""
        try:
            with self._write(None) as (conn, _access):
                name = identity.redeem_enrollment(conn, code)
                plain, info = identity.create_token(conn, name, name, description or "enrollment")
                audit.append(
                    conn, actor=name, action="enroll", target=name, after={"prefix": info.prefix}
                )
                return plain
        except PermissionDeniedError as refused:
            with self._write(None) as (conn, _access):
                audit.append(
                    conn, actor="anonymous", action="enroll.refused", comment=refused.message
                )
            raise

    def set_roles(self, name: str, roles: Iterable[str]) -> User:
        with self._write("manage_users") as (conn, access):
            before = identity.get_user(conn, name)
            user = identity.set_roles(conn, name, roles, access.actor)
            audit.append(
                conn,
                actor=access.actor,
                action="user.roles",
                target=name,
                before={"roles": sorted(before.roles)},
                after={"roles": sorted(user.roles)},
            )
            return user

    def list_users(self) -> list[User]:
        with database.read_transaction(self.engine) as conn:
            return identity.list_users(conn)

    def whoami(self) -> User:
        """Who this handle acts as, and their roles, as the registry sees them now."""
        access = self._read_access()
        return User(access.actor, access.roles, "", _epoch())

    # -- tokens -------------------------------------------------------------------------------
    def create_token(self, *, description: str | None = None) -> str:
        """A new API token for the caller, returned once in plain text (stored hashed).

        Each user makes their own tokens: no one, an admin included, creates another's.
        """
        with self._write("read") as (conn, access):
            plain, info = identity.create_token(conn, access.actor, access.actor, description)
            audit.append(
                conn,
                actor=access.actor,
                action="token.create",
                target=access.actor,
                after={"prefix": info.prefix, "description": description},
            )
            return plain

    def revoke_token(self, prefix: str) -> TokenInfo:
        """Revoke a token: its own user, or an admin (for anyone's)."""
        with self._write(None) as (conn, access):
            owner = next((t for t in identity.list_tokens(conn) if t.prefix == prefix), None)
            if owner is None or owner.user != access.actor:
                access.require("manage_users")
            info = identity.revoke_token(conn, prefix, access.actor)
            audit.append(
                conn,
                actor=access.actor,
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

    # -- protected aliases --------------------------------------------------------------------
    def protected_aliases(self) -> frozenset[str]:
        """Aliases that move only through an approved request (``champion`` from the start)."""
        with database.read_transaction(self.engine) as conn:
            return frozenset(conn.execute(sa.select(protected_aliases.c.alias)).scalars())

    def protect_alias(self, alias: str) -> None:
        """Make an alias move only through an approved request; admin only, audited."""
        from ratekeeper.registry.uri import check_alias

        check_alias(alias)
        with self._write("manage_users") as (conn, access):
            inserted = database.insert_ignoring_conflict(
                conn,
                protected_aliases,
                {"alias": alias, "protected_by": access.actor, "protected_at": _now()},
            )
            if inserted:
                audit.append(
                    conn,
                    actor=access.actor,
                    action="alias.protect",
                    target=alias,
                    after={"protected": True},
                )

    def unprotect_alias(self, alias: str) -> None:
        with self._write("manage_users") as (conn, access):
            gone = conn.execute(
                sa.delete(protected_aliases).where(protected_aliases.c.alias == alias)
            )
            if gone.rowcount:
                audit.append(
                    conn,
                    actor=access.actor,
                    action="alias.unprotect",
                    target=alias,
                    after={"protected": False},
                )

    # -- audit --------------------------------------------------------------------------------
    def verify_audit(self) -> AuditVerification:
        """Recompute the audit hash chain and check the head's seal with this process's key;
        ``first_bad_id`` names the first bad event."""
        with database.read_transaction(self.engine) as conn:
            return audit.verify(conn, self.signing_key)

    def audit_log(self, model: str | None = None, *, limit: int | None = None) -> list[AuditEvent]:
        """The audit events (of one model), oldest first; ``limit``: only the latest ones."""
        with database.read_transaction(self.engine) as conn:
            return audit.events(conn, model=model, limit=limit)


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch() -> datetime:
    return datetime.fromtimestamp(0, UTC)
