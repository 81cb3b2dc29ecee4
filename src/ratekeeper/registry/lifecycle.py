"""Stage and alias moves, each inside the caller's transaction, each audited.

Every function here runs in one write transaction opened by the caller, locks the model row
first (so concurrent moves of one model serialise), writes the change, its transition-history
rows and its audit events, and bumps the generation counter that rating servers watch.

The registry keeps two aliases itself (``follow_alias``, audited as ``alias.follow``):
``champion`` names the Production version (every move into or out of Production moves it) and
``challenger`` the version under rollout (``rollouts/``). A move of the Production version also
ends the model's running rollout: completed when the challenger itself was promoted.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import sqlalchemy as sa

from ratekeeper.errors import ConflictError, NotFoundError, PermissionDeniedError
from ratekeeper.governance import audit
from ratekeeper.registry import queries
from ratekeeper.registry.entities import ModelVersion, Stage
from ratekeeper.store import database
from ratekeeper.store.tables import (
    aliases,
    model_versions,
    promotion_requests,
    protected_aliases,
    stage_transitions,
)

CHAMPION, CHALLENGER = "champion", "challenger"
"""The aliases the registry keeps: the Production version, and the version under rollout."""

# Built once: a move runs about ten statements, and building each afresh (with its cache key)
# cost several times what SQLite takes to run it. Values not named by a bind parameter are
# given as execution parameters, keyed by column name.
_STAGE_OF = sa.select(model_versions.c.stage).where(model_versions.c.id == sa.bindparam("vid"))
_PRODUCTION_OF = sa.select(model_versions.c.id, model_versions.c.version).where(
    model_versions.c.model_id == sa.bindparam("model_id"),
    model_versions.c.stage == Stage.PRODUCTION.value,
)
_SET_STAGE = sa.update(model_versions).where(model_versions.c.id == sa.bindparam("vid"))
_INSERT_TRANSITION = sa.insert(stage_transitions)
_ALIAS_TARGET = (
    sa.select(model_versions.c.version)
    .join(aliases, aliases.c.version_id == model_versions.c.id)
    .where(aliases.c.model_id == sa.bindparam("mid"), aliases.c.alias == sa.bindparam("name"))
)
_INSERT_ALIAS = sa.insert(aliases)
_MOVE_ALIAS = sa.update(aliases).where(
    aliases.c.model_id == sa.bindparam("mid"), aliases.c.alias == sa.bindparam("name")
)
_IS_PROTECTED = sa.select(protected_aliases.c.alias).where(
    protected_aliases.c.alias == sa.bindparam("alias")
)
_APPROVED_FOR_ALIAS = sa.select(promotion_requests.c.id).where(
    promotion_requests.c.version_id == sa.bindparam("vid"),
    promotion_requests.c.target_alias == sa.bindparam("alias"),
    promotion_requests.c.status == "approved",
)
_DELETE_ALIAS = sa.delete(aliases).where(
    aliases.c.model_id == sa.bindparam("mid"), aliases.c.alias == sa.bindparam("name")
)


def move_stage(
    conn: sa.Connection,
    actor: str,
    name: str,
    version: int,
    target: Stage,
    comment: str | None,
    *,
    request_id: int | None = None,
) -> ModelVersion:
    """Move a version; promoting to Production archives the previous Production version."""
    row = queries.version_row(conn, name, version)
    current = Stage(row.stage)
    if database.lock_model(conn, row.model_id):  # PostgreSQL: re-read under the lock
        current = Stage(conn.execute(_STAGE_OF, {"vid": row.id}).scalar_one())
    if current == target:
        raise ConflictError(f"{name} version {version} is already in {target.value}")
    now = datetime.now(UTC)
    if target == Stage.PRODUCTION:
        previous = conn.execute(_PRODUCTION_OF, {"model_id": row.model_id}).first()
        if previous is not None:
            why = f"archived: version {version} promoted to Production"
            _record_move(
                conn,
                actor,
                name,
                previous.version,
                previous.id,
                Stage.PRODUCTION,
                Stage.ARCHIVED,
                now,
                why,
                request_id,
            )
    _record_move(
        conn, actor, name, version, row.id, current, target, now, comment, request_id, last=True
    )
    if Stage.PRODUCTION in (current, target):
        _follow_production(conn, actor, name, row.model_id, version, target)
    moved = queries.to_version(conn, row)
    return replace(moved, stage=target, stage_changed_at=now)


def _follow_production(
    conn: sa.Connection, actor: str, name: str, model_id: int, version: int, target: Stage
) -> None:
    """``champion`` onto the new Production version (or away, when none is left), and the
    model's running rollout ended."""
    from ratekeeper.rollouts import records  # the rollout tables only (no cycle)

    promoted = version if target == Stage.PRODUCTION else None
    follow_alias(conn, actor, name, model_id, CHAMPION, promoted)
    why = (
        f"version {version} moved to Production"
        if promoted is not None
        else f"version {version} left Production"
    )
    ended = records.end_running(conn, actor, model_id, promoted, why)
    if ended is not None:
        follow_alias(conn, actor, name, model_id, CHALLENGER, None)


def follow_alias(
    conn: sa.Connection, actor: str, name: str, model_id: int, alias: str, version: int | None
) -> None:
    """Point an alias the registry keeps at ``version`` (None: delete it), audited as
    ``alias.follow``; nothing when it already points there."""
    key = {"mid": model_id, "name": alias}
    before = conn.execute(_ALIAS_TARGET, key).scalar()
    if before == version:
        return
    if version is None:
        conn.execute(_DELETE_ALIAS, key)
    else:
        version_id = queries.version_row(conn, name, version).id
        pointer = {"version_id": version_id, "updated_by": actor, "updated_at": datetime.now(UTC)}
        if before is None:
            conn.execute(_INSERT_ALIAS, {"model_id": model_id, "alias": alias, **pointer})
        else:
            conn.execute(_MOVE_ALIAS, {**key, **pointer})
    audit.append(
        conn,
        actor=actor,
        action="alias.follow",
        model=name,
        version=version if version is not None else before,
        target=alias,
        before={"version": before},
        after={"version": version},
    )  # the caller's move bumps the generation


def rollback(conn: sa.Connection, actor: str, name: str, comment: str | None) -> ModelVersion:
    """Put back the last version, other than the current one, that was moved to Production."""
    model_id = queries.model_id(conn, name)
    database.lock_model(conn, model_id)
    current = queries.production_version(conn, model_id)
    previous = queries.previous_production_version(conn, model_id, current)
    if previous is None:
        raise ConflictError(f"model {name!r} has no previous Production version")
    why = f"rollback from version {current}" if current else "rollback"
    audit.append(
        conn,
        actor=actor,
        action="rollback",
        model=name,
        version=previous,
        before={"production": current},
        after={"production": previous},
        comment=comment,
    )
    return move_stage(
        conn, actor, name, previous, Stage.PRODUCTION, f"{why}: {comment}" if comment else why
    )


def set_alias(conn: sa.Connection, actor: str, name: str, alias: str, version: int) -> ModelVersion:
    row = queries.version_row(conn, name, version)
    database.lock_model(conn, row.model_id)
    key = {"mid": row.model_id, "name": alias}
    before = conn.execute(_ALIAS_TARGET, key).scalar()
    pointer = {"version_id": row.id, "updated_by": actor, "updated_at": datetime.now(UTC)}
    if before is None:
        conn.execute(_INSERT_ALIAS, {"model_id": row.model_id, "alias": alias, **pointer})
    else:  # the model is locked: the alias cannot appear or vanish in between
        conn.execute(_MOVE_ALIAS, {**key, **pointer})
    audit.append(
        conn,
        actor=actor,
        action="alias.set",
        model=name,
        version=version,
        target=alias,
        before={"version": before},
        after={"version": version},
        bump_generation=True,
    )
    return queries.to_version(conn, row)


def check_protected_alias(conn: sa.Connection, name: str, alias: str, version: int) -> None:
    """PermissionDeniedError unless ``alias`` is unprotected or an approved request pointed it
    at ``version`` (the database's trigger refuses the same; this says it clearly)."""
    if conn.execute(_IS_PROTECTED, {"alias": alias}).first() is None:
        return
    row = queries.version_row(conn, name, version)
    if conn.execute(_APPROVED_FOR_ALIAS, {"vid": row.id, "alias": alias}).first() is None:
        raise PermissionDeniedError(
            f"alias {alias!r} is protected: it moves to {name} version {version} through an "
            f"approved request (request_promotion({name!r}, {version}, '@{alias}', holdout=...))"
        )


def delete_alias(conn: sa.Connection, actor: str, name: str, alias: str) -> None:
    model_id = queries.model_id(conn, name)
    database.lock_model(conn, model_id)
    key = {"mid": model_id, "name": alias}
    before = conn.execute(_ALIAS_TARGET, key).scalar()
    if before is None:
        raise NotFoundError(f"model {name!r} has no alias {alias!r}")
    conn.execute(_DELETE_ALIAS, key)
    audit.append(
        conn,
        actor=actor,
        action="alias.delete",
        model=name,
        version=before,
        target=alias,
        before={"version": before},
        after=None,
        bump_generation=True,
    )


def _record_move(
    conn: sa.Connection,
    actor: str,
    name: str,
    version: int,
    version_id: int,
    old: Stage,
    new: Stage,
    now: datetime,
    comment: str | None,
    request_id: int | None,
    *,
    last: bool = False,
) -> None:
    """The stage column, a history row and an audit event; the ``last`` write of a move also
    bumps the generation that rating servers watch."""
    conn.execute(_SET_STAGE, {"vid": version_id, "stage": new.value, "stage_changed_at": now})
    conn.execute(
        _INSERT_TRANSITION,
        {
            "version_id": version_id,
            "from_stage": old.value,
            "to_stage": new.value,
            "actor": actor,
            "at": now,
            "comment": comment,
            "request_id": request_id,
        },
    )
    audit.append(
        conn,
        actor=actor,
        action="stage",
        model=name,
        version=version,
        before={"stage": old.value},
        after={"stage": new.value},
        comment=comment,
        target=f"request {request_id}" if request_id is not None else None,
        bump_generation=last,
    )
