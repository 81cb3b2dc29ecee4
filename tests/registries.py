"""Making registries in tests: open ones for the store's contract, governed teams with tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ratekeeper as rk

TEST_KEY = "5f" * 32
"""The signing key of registries on the test PostgreSQL server (tests only)."""


def open_registry(
    uri: str | Path, *, user: str = "modeller", artifacts: str | Path | None = None, **kw: Any
) -> rk.Registry:
    """A new open registry (a personal sandbox: direct moves, names as actors)."""
    registry, _token = rk.Registry.create(
        uri, admin=user, policy="open", artifacts=artifacts, **kw
    )
    return registry


def governed_team(
    uri: str | Path,
    users: Mapping[str, Sequence[str]],
    *,
    admin: str = "root",
    artifacts: str | Path | None = None,
    **kw: Any,
) -> dict[str, rk.Registry]:
    """A new governed registry and one handle per person, each with their own token (enrolled
    with the code the admin got when adding them): ``{admin: ..., name: ...}``."""
    first, _token = rk.Registry.create(uri, admin=admin, artifacts=artifacts, **kw)
    team = {admin: first}
    for name, roles in users.items():
        code = first.add_user(name, list(roles)).enrollment_code
        newcomer = rk.Registry(uri, settings=kw.get("settings"))
        token = newcomer.enroll(code)
        newcomer.close()  # PostgreSQL: a pooled connection left open fails the test (warnings)
        team[name] = rk.Registry(uri, token=token, **kw)
    return team


def token_of(registry: rk.Registry) -> str:
    """The token behind a handle made by ``governed_team`` or ``Registry.create``."""
    secret = registry._credential.secret
    assert secret is not None, "this handle has no token"
    return secret
