"""Users, roles and API tokens.

Roles: ``modeller`` registers models and requests promotions; ``approver`` approves or rejects
them (never for a version they created or requested); ``deployer`` archives, rolls back and moves
aliases; ``viewer`` reads; ``admin`` manages users and tokens and may override failed gates.

Tokens are shown once, stored as SHA-256 hashes, and revocable. A token looks like
``rk_<prefix>_<secret>``; the prefix identifies it in listings without revealing it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from ratekeeper.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from ratekeeper.store.tables import ROLES, enrollments, tokens, user_roles, users

ENROLLMENT_LIFETIME = timedelta(hours=72)
"""How long a new user's enrollment code can be redeemed (once)."""


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[str]
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class NewUser(User):
    """A user just added, with the one-time code they redeem for their own token."""

    enrollment_code: str = field(default="", repr=False)
    enrollment_expires_at: datetime | None = None


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user: str
    prefix: str
    description: str | None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


def check_roles(roles: Iterable[str]) -> frozenset[str]:
    clean = frozenset(str(r).strip().lower() for r in roles)
    unknown = sorted(clean - set(ROLES))
    if unknown or not clean:
        raise InvalidInputError(
            f"unknown role(s) {', '.join(unknown) or '(none given)'}: use {', '.join(ROLES)}"
        )
    return clean


def add_user(conn: sa.Connection, name: str, roles: Iterable[str], actor: str) -> User:
    clean = check_roles(roles)
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or name != name.strip():
        raise InvalidInputError("a user name must be 1 to 200 characters, without outer spaces")
    if name == "policy" or name.startswith("sso:"):
        raise InvalidInputError(f"{name!r} is reserved: choose another user name")
    if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first() is not None:
        raise ConflictError(f"user {name!r} already exists")
    now = datetime.now(UTC)
    user_id = conn.execute(
        sa.insert(users).values(name=name, created_by=actor, created_at=now).returning(users.c.id)
    ).scalar_one()
    conn.execute(
        sa.insert(user_roles),
        [{"user_id": user_id, "role": r, "granted_by": actor} for r in sorted(clean)],
    )
    return User(name, clean, actor, now)


def set_roles(conn: sa.Connection, name: str, roles: Iterable[str], actor: str) -> User:
    """Replace a user's roles; a role kept keeps who granted it, a new one records ``actor``."""
    clean = check_roles(roles)
    user = get_user(conn, name)
    user_id = _user_id(conn, name)
    conn.execute(
        sa.delete(user_roles).where(
            user_roles.c.user_id == user_id, user_roles.c.role.not_in(sorted(clean))
        )
    )
    added = sorted(clean - user.roles)
    if added:
        conn.execute(
            sa.insert(user_roles),
            [{"user_id": user_id, "role": r, "granted_by": actor} for r in added],
        )
    return User(name, clean, user.created_by, user.created_at)


def role_grantors(conn: sa.Connection, name: str, role: str) -> tuple[str | None, str | None]:
    """Who created the user, and who granted them ``role`` (None: no such user or role)."""
    row = conn.execute(
        sa.select(users.c.created_by, user_roles.c.granted_by)
        .select_from(users.outerjoin(user_roles, user_roles.c.user_id == users.c.id))
        .where(users.c.name == name, user_roles.c.role == role)
    ).first()
    return (row.created_by, row.granted_by) if row is not None else (None, None)


def account_makers(conn: sa.Connection, name: str) -> set[str]:
    """Who created the account ``name`` or granted it any role (itself excluded)."""
    rows = conn.execute(
        sa.select(users.c.created_by, user_roles.c.granted_by)
        .select_from(users.outerjoin(user_roles, user_roles.c.user_id == users.c.id))
        .where(users.c.name == name)
    ).all()
    makers = {r.created_by for r in rows} | {r.granted_by for r in rows if r.granted_by}
    return makers - {name}


def start_enrollment(
    conn: sa.Connection, name: str, actor: str, lifetime: timedelta = ENROLLMENT_LIFETIME
) -> tuple[str, datetime]:
    """A one-time code for ``name`` (stored hashed), redeemable until the time returned."""
    code = f"rke_{secrets.token_urlsafe(24)}"
    now = datetime.now(UTC)
    expires = now + lifetime
    conn.execute(
        sa.insert(enrollments).values(
            user_id=_user_id(conn, name),
            code_sha256=token_digest(code),
            created_by=actor,
            created_at=now,
            expires_at=expires,
        )
    )
    return code, expires


def redeem_enrollment(conn: sa.Connection, code: str) -> str:
    """The user a valid, unredeemed, unexpired code was made for; the code is used up.

    PermissionDeniedError names why it was refused (the caller audits the refusal).
    """
    row = conn.execute(
        sa.select(enrollments, users.c.name)
        .join(users, users.c.id == enrollments.c.user_id)
        .where(enrollments.c.code_sha256 == token_digest(code or ""))
    ).first()
    if row is None:
        raise PermissionDeniedError("the enrollment code is unknown")
    if row.redeemed_at is not None:
        raise PermissionDeniedError(
            f"the enrollment code for {row.name} was already redeemed: ask an admin for a new one"
        )
    now = datetime.now(UTC)
    if row.expires_at <= now:
        raise PermissionDeniedError(
            f"the enrollment code for {row.name} expired at {row.expires_at:%Y-%m-%d %H:%M} UTC: "
            "ask an admin for a new one"
        )
    done = conn.execute(
        sa.update(enrollments)
        .where(enrollments.c.id == row.id, enrollments.c.redeemed_at.is_(None))
        .values(redeemed_at=now)
    )
    if done.rowcount != 1:  # redeemed by a concurrent call in between
        raise PermissionDeniedError(f"the enrollment code for {row.name} was already redeemed")
    return str(row.name)


def get_user(conn: sa.Connection, name: str) -> User:
    found = list_users(conn, name)
    if not found:
        raise NotFoundError(f"user {name!r} does not exist")
    return found[0]


def find_user(conn: sa.Connection, name: str) -> User | None:
    found = list_users(conn, name)
    return found[0] if found else None


def list_users(conn: sa.Connection, name: str | None = None) -> list[User]:
    query = sa.select(users).order_by(users.c.name)
    if name is not None:
        query = query.where(users.c.name == name)
    rows = conn.execute(query).all()
    roles: dict[int, set[str]] = {r.id: set() for r in rows}
    if rows:
        for link in conn.execute(sa.select(user_roles).where(user_roles.c.user_id.in_(roles))):
            roles[link.user_id].add(link.role)
    return [User(r.name, frozenset(roles[r.id]), r.created_by, r.created_at) for r in rows]


def create_token(
    conn: sa.Connection, user: str, actor: str, description: str | None
) -> tuple[str, TokenInfo]:
    """A new token for ``user``: the plain text (shown once) and what is stored about it."""
    user_id = _user_id(conn, user)
    prefix = secrets.token_hex(4)
    plain = f"rk_{prefix}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    token_id = conn.execute(
        sa.insert(tokens)
        .values(
            user_id=user_id,
            token_sha256=token_digest(plain),
            prefix=prefix,
            description=description,
            created_by=actor,
            created_at=now,
        )
        .returning(tokens.c.id)
    ).scalar_one()
    return plain, TokenInfo(token_id, user, prefix, description, actor, now, None)


def revoke_token(conn: sa.Connection, prefix: str, actor: str) -> TokenInfo:
    row = conn.execute(
        sa.select(tokens, users.c.name)
        .join(users, users.c.id == tokens.c.user_id)
        .where(tokens.c.prefix == prefix)
    ).first()
    if row is None:
        raise NotFoundError(f"no token with prefix {prefix!r}")
    if row.revoked_at is not None:
        raise ConflictError(f"token {prefix} was already revoked")
    now = datetime.now(UTC)
    conn.execute(
        sa.update(tokens).where(tokens.c.id == row.id).values(revoked_by=actor, revoked_at=now)
    )
    return TokenInfo(
        row.id, row.name, row.prefix, row.description, row.created_by, row.created_at, now
    )


def list_tokens(conn: sa.Connection) -> list[TokenInfo]:
    rows = conn.execute(
        sa.select(tokens, users.c.name)
        .join(users, users.c.id == tokens.c.user_id)
        .order_by(tokens.c.id)
    )
    return [
        TokenInfo(r.id, r.name, r.prefix, r.description, r.created_by, r.created_at, r.revoked_at)
        for r in rows
    ]


def authenticate(conn: sa.Connection, plain: str) -> User | None:
    """The user a valid, unrevoked token belongs to; None otherwise."""
    row = conn.execute(
        sa.select(users.c.name)
        .join(tokens, tokens.c.user_id == users.c.id)
        .where(tokens.c.token_sha256 == token_digest(plain), tokens.c.revoked_at.is_(None))
    ).first()
    return get_user(conn, row.name) if row is not None else None


def token_digest(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def _user_id(conn: sa.Connection, name: str) -> int:
    found = conn.execute(sa.select(users.c.id).where(users.c.name == name)).scalar()
    if found is None:
        raise NotFoundError(f"user {name!r} does not exist")
    return int(found)
