"""The rollout tables, read and written inside the caller's transaction.

Every change of a rollout writes its row, a ``rollout_events`` row and an audit event in one
transaction, and bumps the generation counter the rating servers watch (so every worker and
replica follows within one poll). The registry's stage moves call ``end_running`` too: a model
whose Production version changes ends its running rollout.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ratekeeper.governance import audit
from ratekeeper.rollouts.plan import Guards
from ratekeeper.rollouts.rollout import RUNNING, Rollout
from ratekeeper.store.tables import model_versions, models, rollout_events, rollouts

_QUERY = (
    sa.select(rollouts, models.c.name, model_versions.c.version)
    .join(models, models.c.id == rollouts.c.model_id)
    .join(model_versions, model_versions.c.id == rollouts.c.version_id)
)


def to_rollout(row: Any) -> Rollout:
    return Rollout(
        id=row.id,
        name=row.name,
        version=row.version,
        champion_version=row.champion_version,
        mode=row.mode,
        status=row.status,
        percent=float(row.percent),
        steps=tuple(float(s) for s in row.steps.split(",")) if row.steps else (),
        step_index=row.step_index,
        bake_seconds=row.bake_seconds,
        key=row.key,
        guards=Guards.from_dict(json.loads(row.guards)),
        request_id=row.request_id,
        started_by=row.started_by,
        started_at=row.started_at,
        step_started_at=row.step_started_at,
        ended_at=row.ended_at,
        reason=row.reason,
    )


def running(conn: sa.Connection, model_id: int) -> Rollout | None:
    row = conn.execute(
        _QUERY.where(rollouts.c.model_id == model_id, rollouts.c.status.in_(RUNNING))
    ).first()
    return to_rollout(row) if row is not None else None


def latest(conn: sa.Connection, model_id: int) -> Rollout | None:
    """The model's running rollout, else its last one."""
    row = conn.execute(
        _QUERY.where(rollouts.c.model_id == model_id).order_by(rollouts.c.id.desc()).limit(1)
    ).first()
    return to_rollout(row) if row is not None else None


def by_id(conn: sa.Connection, rollout_id: int) -> Rollout:
    return to_rollout(conn.execute(_QUERY.where(rollouts.c.id == rollout_id)).one())


def all_running(conn: sa.Connection) -> list[Rollout]:
    rows = conn.execute(_QUERY.where(rollouts.c.status.in_(RUNNING)).order_by(rollouts.c.id))
    return [to_rollout(r) for r in rows]


def add_event(
    conn: sa.Connection,
    rollout_id: int,
    kind: str,
    actor: str,
    percent: float,
    detail: Any = None,
    at: datetime | None = None,
) -> None:
    conn.execute(
        sa.insert(rollout_events).values(
            rollout_id=rollout_id,
            at=at or datetime.now(UTC),
            kind=kind,
            actor=actor,
            percent=percent,
            detail=json.dumps(detail, sort_keys=True) if detail is not None else None,
        )
    )


def events(conn: sa.Connection, rollout_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(rollout_events)
        .where(rollout_events.c.rollout_id == rollout_id)
        .order_by(rollout_events.c.id)
    )
    return [
        {
            "at": r.at.isoformat(),
            "kind": r.kind,
            "actor": r.actor,
            "percent": r.percent,
            "detail": json.loads(r.detail) if r.detail else None,
        }
        for r in rows
    ]


def change(
    conn: sa.Connection,
    rollout: Rollout,
    *,
    actor: str,
    kind: str,
    values: dict[str, Any],
    detail: Any = None,
    comment: str | None = None,
    bump_generation: bool = True,
) -> Rollout:
    """Update the rollout, and record the change as a rollout event and an audit event
    (``rollout.<kind>``) that bumps the generation."""
    conn.execute(sa.update(rollouts).where(rollouts.c.id == rollout.id).values(**values))
    changed = by_id(conn, rollout.id)
    add_event(conn, rollout.id, kind, actor, changed.live_percent, detail)
    audit.append(
        conn,
        actor=actor,
        action=f"rollout.{kind}",
        model=rollout.name,
        version=rollout.version,
        target=f"rollout {rollout.id}",
        before={"status": rollout.status, "percent": rollout.percent},
        after={"status": changed.status, "percent": changed.percent, **(detail or {})},
        comment=comment,
        bump_generation=bump_generation,
    )
    return changed


def end_running(
    conn: sa.Connection, actor: str, model_id: int, promoted: int | None, why: str
) -> Rollout | None:
    """End the model's running rollout because its Production version moved: completed when
    the challenger itself was promoted, else aborted. None when none was running."""
    current = running(conn, model_id)
    if current is None:
        return None
    status = "completed" if promoted == current.version else "aborted"
    return change(
        conn,
        current,
        actor=actor,
        kind="complete" if status == "completed" else "abort",
        values={"status": status, "ended_at": datetime.now(UTC), "reason": why},
        detail={"reason": why, "cause": "stage"},
        bump_generation=False,  # the stage move bumps it
    )
