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
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from ratekeeper.errors import ConflictError, InvalidInputError, NotFoundError
from ratekeeper.store.tables import ROLES, tokens, user_roles, users


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[str]
    created_by: str
    created_at: datetime


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
    if not name or len(name) > 200:
        raise InvalidInputError("a user name must be 1 to 200 characters")
    if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first() is not None:
        raise ConflictError(f"user {name!r} already exists")
    now = datetime.now(UTC)
    user_id = conn.execute(
        sa.insert(users).values(name=name, created_by=actor, created_at=now).returning(users.c.id)
    ).scalar_one()
    conn.execute(sa.insert(user_roles), [{"user_id": user_id, "role": r} for r in sorted(clean)])
    return User(name, clean, actor, now)


def set_roles(conn: sa.Connection, name: str, roles: Iterable[str]) -> User:
    clean = check_roles(roles)
    user = get_user(conn, name)
    user_id = _user_id(conn, name)
    conn.execute(sa.delete(user_roles).where(user_roles.c.user_id == user_id))
    conn.execute(sa.insert(user_roles), [{"user_id": user_id, "role": r} for r in sorted(clean)])
    return User(name, clean, user.created_by, user.created_at)


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
