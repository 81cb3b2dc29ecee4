"""Reading registry rows into entities (one place for every SELECT the registry runs)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ratekeeper.errors import InvalidInputError, NotFoundError
from ratekeeper.packaging.profile import ReferenceProfile
from ratekeeper.packaging.signature import Signature
from ratekeeper.registry.entities import (
    ModelVersion,
    RegisteredModel,
    Stage,
    StageTransition,
)
from ratekeeper.store.tables import aliases, model_versions, models, stage_transitions, version_tags

_VERSION_COLUMNS = (models.c.name, *model_versions.c)

# The statements of every stage and alias move are built once, here: building a SQLAlchemy
# statement (and its cache key) costs several times what SQLite takes to run it.
_MODEL_ID = sa.select(models.c.id).where(models.c.name == sa.bindparam("name"))
_VERSION_ROW = (
    sa.select(*_VERSION_COLUMNS)
    .join(models, models.c.id == model_versions.c.model_id)
    .where(models.c.name == sa.bindparam("name"), model_versions.c.version == sa.bindparam("n"))
)
_PRODUCTION_VERSION = sa.select(model_versions.c.version).where(
    model_versions.c.model_id == sa.bindparam("model_id"),
    model_versions.c.stage == Stage.PRODUCTION.value,
)
_LAST_PROMOTED = (
    sa.select(model_versions.c.version)
    .join(stage_transitions, stage_transitions.c.version_id == model_versions.c.id)
    .where(
        model_versions.c.model_id == sa.bindparam("model_id"),
        stage_transitions.c.to_stage == Stage.PRODUCTION.value,
    )
    .order_by(stage_transitions.c.id.desc())
    .limit(1)
)
_LAST_PROMOTED_OTHER = _LAST_PROMOTED.where(model_versions.c.version != sa.bindparam("current"))
_TAGS_OF_ONE = sa.select(version_tags.c.key, version_tags.c.value).where(
    version_tags.c.version_id == sa.bindparam("version_id")
)
_ALIASES_OF_ONE = (
    sa.select(aliases.c.alias)
    .where(aliases.c.version_id == sa.bindparam("version_id"))
    .order_by(aliases.c.alias)
)


def model_id(conn: sa.Connection, name: str) -> int:
    found = conn.execute(_MODEL_ID, {"name": name}).scalar()
    if found is None:
        raise NotFoundError(f"model {name!r} does not exist")
    return int(found)


MAX_VERSION = 2**31 - 1  # the column is a 32-bit INTEGER on PostgreSQL


def version_row(conn: sa.Connection, name: str, version: int) -> sa.Row[Any]:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(f"version must be a positive integer, not {version!r}")
    if version > MAX_VERSION:
        model_id(conn, name)
        raise NotFoundError(f"model {name!r} has no version {version}")
    row = conn.execute(_VERSION_ROW, {"name": name, "n": version}).first()
    if row is None:
        model_id(conn, name)  # raises "model does not exist" first when that is the problem
        raise NotFoundError(f"model {name!r} has no version {version}")
    return row


def production_version(conn: sa.Connection, model: int) -> int | None:
    found = conn.execute(_PRODUCTION_VERSION, {"model_id": model}).scalar()
    return int(found) if found is not None else None


def previous_production_version(conn: sa.Connection, model: int, current: int | None) -> int | None:
    """The last version other than ``current`` that was moved to Production."""
    if current is None:
        found = conn.execute(_LAST_PROMOTED, {"model_id": model}).scalar()
    else:
        found = conn.execute(_LAST_PROMOTED_OTHER, {"model_id": model, "current": current}).scalar()
    return int(found) if found is not None else None


def find_versions(
    conn: sa.Connection,
    *,
    name: str | None = None,
    stage: Stage | None = None,
    alias: str | None = None,
    tag: tuple[str, str | None] | None = None,
    newest_first: bool = False,
    limit: int | None = None,
) -> list[ModelVersion]:
    query = sa.select(*_VERSION_COLUMNS).join(models, models.c.id == model_versions.c.model_id)
    if name is not None:
        query = query.where(models.c.name == name)
    if stage is not None:
        query = query.where(model_versions.c.stage == stage.value)
    if alias is not None:
        query = query.join(aliases, aliases.c.version_id == model_versions.c.id).where(
            aliases.c.alias == alias
        )
    if tag is not None:
        key, value = tag
        match = sa.select(version_tags.c.version_id).where(version_tags.c.key == key)
        if value is not None:
            match = match.where(version_tags.c.value == value)
        query = query.where(model_versions.c.id.in_(match))
    order = model_versions.c.version.desc() if newest_first else model_versions.c.version
    query = query.order_by(models.c.name, order).limit(limit)
    return to_versions(conn, conn.execute(query).all())


def to_version(conn: sa.Connection, row: sa.Row[Any]) -> ModelVersion:
    """One version row with its tags and aliases (the prebuilt statements of a single move)."""
    tags = {t.key: t.value for t in conn.execute(_TAGS_OF_ONE, {"version_id": row.id})}
    names = tuple(conn.execute(_ALIASES_OF_ONE, {"version_id": row.id}).scalars())
    return _version(row, tags, names)


def to_versions(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> list[ModelVersion]:
    if len(rows) == 1:
        return [to_version(conn, rows[0])]
    ids = [row.id for row in rows]
    tags: dict[int, dict[str, str]] = {i: {} for i in ids}
    names: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        for t in conn.execute(sa.select(version_tags).where(version_tags.c.version_id.in_(ids))):
            tags[t.version_id][t.key] = t.value
        for a in conn.execute(
            sa.select(aliases).where(aliases.c.version_id.in_(ids)).order_by(aliases.c.alias)
        ):
            names[a.version_id].append(a.alias)
    return [_version(row, tags[row.id], tuple(names[row.id])) for row in rows]


def _version(row: sa.Row[Any], tags: dict[str, str], alias_names: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        name=row.name,
        version=row.version,
        flavor=row.flavor,
        artifact_digest=row.artifact_digest,
        artifact_size=row.artifact_size,
        stage=Stage(row.stage),
        stage_changed_at=row.stage_changed_at,
        created_by=row.created_by,
        created_at=row.created_at,
        description=row.description,
        signature=Signature.from_dict(json.loads(row.signature)),
        profile=ReferenceProfile.from_dict(json.loads(row.profile)),
        metrics=json.loads(row.metrics),
        lineage=json.loads(row.lineage),
        tags=tags,
        aliases=alias_names,
    )


def list_models(conn: sa.Connection, name: str | None = None) -> list[RegisteredModel]:
    latest = (
        sa.select(model_versions.c.model_id, sa.func.max(model_versions.c.version).label("latest"))
        .group_by(model_versions.c.model_id)
        .subquery()
    )
    production = (
        sa.select(model_versions.c.model_id, model_versions.c.version.label("production"))
        .where(model_versions.c.stage == Stage.PRODUCTION.value)
        .subquery()
    )
    query = (
        sa.select(models, latest.c.latest, production.c.production)
        .outerjoin(latest, latest.c.model_id == models.c.id)
        .outerjoin(production, production.c.model_id == models.c.id)
        .order_by(models.c.name)
    )
    if name is not None:
        query = query.where(models.c.name == name)
    rows = conn.execute(query).all()
    alias_rows = conn.execute(
        sa.select(aliases.c.model_id, aliases.c.alias, model_versions.c.version)
        .join(model_versions, model_versions.c.id == aliases.c.version_id)
        .order_by(aliases.c.alias)
    ).all()
    by_model: dict[int, dict[str, int]] = {}
    for a in alias_rows:
        by_model.setdefault(a.model_id, {})[a.alias] = a.version
    return [
        RegisteredModel(
            name=r.name,
            description=r.description,
            created_by=r.created_by,
            created_at=r.created_at,
            latest_version=r.latest or 0,
            production_version=r.production,
            aliases=by_model.get(r.id, {}),
        )
        for r in rows
    ]


def transitions(conn: sa.Connection, name: str, version: int | None) -> list[StageTransition]:
    query = (
        sa.select(models.c.name, model_versions.c.version, stage_transitions)
        .join(model_versions, model_versions.c.id == stage_transitions.c.version_id)
        .join(models, models.c.id == model_versions.c.model_id)
        .where(models.c.name == name)
        .order_by(stage_transitions.c.id)
    )
    if version is not None:
        query = query.where(model_versions.c.version == version)
    return [
        StageTransition(
            r.name, r.version, Stage(r.from_stage), Stage(r.to_stage), r.actor, r.at, r.comment
        )
        for r in conn.execute(query)
    ]
