"""The audit trail: an append-only, hash-chained log of every state change.

Each event's hash is the SHA-256 of its previous event's hash and its own canonical content
(time, actor, action, model, version, target, before, after, comment). The chain's head and
length are kept in ``registry_state`` in the same transaction, so ``verify`` detects an edited,
deleted, inserted or reordered event — and a deleted tail. The database also refuses UPDATE and
DELETE on audit events (triggers, migration 0002); the chain catches a raw edit that gets past
them (a dropped trigger, a file edited by hand).

Appending locks the ``registry_state`` row, so concurrent writers extend the chain one at a time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ratekeeper.store.tables import GENESIS, audit_events, registry_state


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    action: str
    model: str | None
    version: int | None
    target: str | None
    before: Any
    after: Any
    comment: str | None
    hash: str


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None


# Built once (a stage or alias move appends at least one event): building a statement costs
# several times what the database takes to run it.
_READ_HEAD = (
    sa.select(registry_state.c.audit_head, registry_state.c.audit_count)
    .where(registry_state.c.id == 1)
    .with_for_update()
)
_INSERT_EVENT = sa.insert(audit_events)
_MOVE_HEAD = (
    sa.update(registry_state)
    .where(registry_state.c.id == 1)
    .values(audit_head=sa.bindparam("new_head"), audit_count=sa.bindparam("new_count"))
)
_MOVE_HEAD_AND_BUMP_GENERATION = _MOVE_HEAD.values(generation=registry_state.c.generation + 1)


def append(
    conn: sa.Connection,
    *,
    actor: str,
    action: str,
    model: str | None = None,
    version: int | None = None,
    target: str | None = None,
    before: Any = None,
    after: Any = None,
    comment: str | None = None,
    bump_generation: bool = False,
) -> str:
    """Append one event in the caller's transaction; returns its hash.

    ``bump_generation`` also bumps the counter that rating servers watch, in the same UPDATE
    of ``registry_state`` that moves the chain's head (stage and alias moves set it).
    """
    head, count = conn.execute(_READ_HEAD).one()
    fields = {
        "at": datetime.now(UTC),
        "actor": actor,
        "action": action,
        "model": model,
        "version": version,
        "target": target,
        "before": _json(before),
        "after": _json(after),
        "comment": comment,
    }
    digest = event_hash(head, fields)
    conn.execute(_INSERT_EVENT, {**fields, "prev_hash": head, "hash": digest})
    conn.execute(
        _MOVE_HEAD_AND_BUMP_GENERATION if bump_generation else _MOVE_HEAD,
        {"new_head": digest, "new_count": count + 1},
    )
    return digest


def event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    content = {
        "prev": prev_hash,
        "at": fields["at"].astimezone(UTC).isoformat(timespec="microseconds"),
        **{
            k: fields[k]
            for k in ("actor", "action", "model", "version", "target", "before", "after", "comment")
        },
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def verify(conn: sa.Connection) -> AuditVerification:
    """Recompute the chain; name the first event that does not fit."""
    expected_prev = GENESIS
    checked = 0
    last_id: int | None = None
    for row in conn.execute(sa.select(audit_events).order_by(audit_events.c.id)):
        checked += 1
        if row.prev_hash != expected_prev:
            return AuditVerification(
                False,
                checked,
                row.id,
                "its predecessor is missing, inserted or out of order (prev_hash does not match)",
            )
        if event_hash(row.prev_hash, row._asdict()) != row.hash:
            return AuditVerification(
                False, checked, row.id, "its content was edited (the hash does not match)"
            )
        expected_prev = row.hash
        last_id = row.id
    state = conn.execute(sa.select(registry_state.c.audit_head, registry_state.c.audit_count)).one()
    if state.audit_head != expected_prev or state.audit_count != checked:
        return AuditVerification(
            False,
            checked,
            last_id,
            f"events after it were deleted (the chain should hold {state.audit_count} events)",
        )
    return AuditVerification(True, checked)


def events(
    conn: sa.Connection, *, model: str | None = None, limit: int | None = None
) -> list[AuditEvent]:
    query = sa.select(audit_events).order_by(audit_events.c.id)
    if model is not None:
        query = query.where(audit_events.c.model == model)
    if limit is not None:
        query = query.limit(limit)
    return [
        AuditEvent(
            r.id,
            r.at,
            r.actor,
            r.action,
            r.model,
            r.version,
            r.target,
            json.loads(r.before) if r.before else None,
            json.loads(r.after) if r.after else None,
            r.comment,
            r.hash,
        )
        for r in conn.execute(query)
    ]


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
