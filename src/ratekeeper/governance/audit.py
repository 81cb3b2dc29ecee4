"""The audit trail: an append-only, hash-chained log of every state change.

Each event's hash is the SHA-256 of its previous event's hash and its own canonical content
(time, actor, action, model, version, target, before, after, comment). The chain's head and
length are kept in ``registry_state`` in the same transaction, so ``verify`` detects an edited,
deleted, inserted or reordered event — and a deleted tail. The database also refuses UPDATE and
DELETE on audit events (triggers, migration 0002); the chain catches a raw edit that gets past
them (a dropped trigger, a file edited by hand).

Appending locks the ``registry_state`` row, so concurrent writers extend the chain one at a time.

The chain alone is only self-consistent: someone with database access could append a forged event,
cut the tail, or edit an event and re-chain everything after it, moving the head to match. So
each write transaction ends by *sealing* the head: an HMAC of ``head:count`` under the server's
signing key, which lives outside the database (``governance/signing.py``). ``verify`` checks the
seal when it holds the key. What a seal cannot tell: a whole earlier state put back (head, count
and seal of a day ago, with every later event deleted) — compare ``verify``'s head with one
exported earlier (``audit verify`` prints it) to catch that.

A sealed chain proves the events; ``verify`` then proves the tables by them: it replays the events
into the governed state, checking each against the rules in force when it was written
(``replay.py``), compares that state with the tables (``reconcile.py``) and checks that the
protecting triggers are all there (``guards.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ratekeeper.governance import reconcile, replay
from ratekeeper.governance.guards import missing_guards
from ratekeeper.governance.signing import SigningKey
from ratekeeper.store import database
from ratekeeper.store.tables import GENESIS, audit_events, registry_state

SEAL_PURPOSE = "audit-head"


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
    head: str | None = None
    """The chain's head (the last event's hash): export it to compare with a later verify."""
    sealed: bool | None = None
    """True: the head's seal was checked with the key; None: it could not be (no key)."""
    state_differences: tuple[str, ...] = ()
    """Where the tables differ from the state the events rebuild, and events that broke the rules
    in force when they were written (first one first)."""
    missing_guards: tuple[str, ...] = ()
    """Protecting triggers (migrations 0002, 0003) that are missing, disabled or redefined."""


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
    if bump_generation:
        database.notify_generation(conn)  # delivered at commit (PostgreSQL; SQLite: polled)
    return digest


_SEAL_HEAD = (
    sa.update(registry_state)
    .where(registry_state.c.id == 1)
    .values(audit_seal=sa.bindparam("seal"), audit_key_id=sa.bindparam("key_id"))
)


def seal_message(head: str, count: int) -> str:
    return f"{head}:{count}"


def seal_head(conn: sa.Connection, key: SigningKey) -> None:
    """Seal the chain's current head with the server's key (the last step of a write)."""
    head, count = conn.execute(_READ_HEAD).one()
    conn.execute(
        _SEAL_HEAD,
        {"seal": key.seal(SEAL_PURPOSE, seal_message(head, count)), "key_id": key.key_id},
    )


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


def verify(conn: sa.Connection, key: SigningKey | None) -> AuditVerification:
    """Prove the records: the chain, the head's seal, the tables against the state the events
    rebuild, and the protecting triggers. ``reason`` names the first thing that does not fit, in
    that order; ``state_differences`` and ``missing_guards`` list everything found."""
    rows = conn.execute(sa.select(audit_events).order_by(audit_events.c.id)).all()
    chain = _check_chain(rows) or _check_seal(conn, key, rows)
    state, violations = replay.replay(_to_event(r) for r in rows)
    differences = (*violations, *reconcile.differences(conn, state))
    guards = tuple(missing_guards(conn))
    reason = chain.reason
    if reason is None and differences:
        reason = f"the tables differ from the audit trail: {differences[0]}"
    if reason is None and guards:
        reason = f"a protecting trigger is gone: {guards[0]}"
    return replace(
        chain,
        ok=reason is None,
        reason=reason,
        state_differences=differences,
        missing_guards=guards,
    )


def _check_chain(rows: Sequence[sa.Row[Any]]) -> AuditVerification | None:
    """Recompute the hash chain over the events, oldest first (None: it holds)."""
    expected_prev = GENESIS
    for checked, row in enumerate(rows, start=1):
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
    return None


def _check_seal(
    conn: sa.Connection, key: SigningKey | None, rows: Sequence[sa.Row[Any]]
) -> AuditVerification:
    """The head and count kept beside the (intact) chain, then their seal under the key."""
    head = rows[-1].hash if rows else GENESIS
    checked, last_id = len(rows), rows[-1].id if rows else None
    state = conn.execute(
        sa.select(
            registry_state.c.audit_head,
            registry_state.c.audit_count,
            registry_state.c.audit_seal,
            registry_state.c.audit_key_id,
        )
    ).one()
    if state.audit_head != head or state.audit_count != checked:
        return AuditVerification(
            False,
            checked,
            last_id,
            f"events after it were deleted (the chain should hold {state.audit_count} events)",
            head=head,
        )
    if key is None:
        return AuditVerification(
            False,
            checked,
            None,
            "the head's seal cannot be checked without the signing key "
            "(RATEKEEPER_AUDIT_KEY_FILE): events appended, cut or re-chained with database "
            "access alone would go unseen",
            head=head,
        )
    if state.audit_key_id is not None and state.audit_key_id != key.key_id:
        return AuditVerification(
            False,
            checked,
            None,
            f"the head was sealed with key {state.audit_key_id}, not with this key ({key.key_id})",
            head=head,
        )
    if not key.check(SEAL_PURPOSE, seal_message(head, checked), state.audit_seal):
        return AuditVerification(
            False,
            checked,
            last_id,
            "the head's seal does not match: events were appended, cut or re-chained "
            "without the signing key",
            head=head,
            sealed=False,
        )
    return AuditVerification(True, checked, head=head, sealed=True)


def events(
    conn: sa.Connection, *, model: str | None = None, limit: int | None = None
) -> list[AuditEvent]:
    """The events, oldest first; with ``limit``, the latest ``limit`` events (oldest first)."""
    query = sa.select(audit_events).order_by(audit_events.c.id.desc())
    if model is not None:
        query = query.where(audit_events.c.model == model)
    if limit is not None:
        query = query.limit(limit)
    rows = list(conn.execute(query))
    rows.reverse()
    return [_to_event(r) for r in rows]


def _to_event(row: sa.Row[Any]) -> AuditEvent:
    return AuditEvent(
        row.id,
        row.at,
        row.actor,
        row.action,
        row.model,
        row.version,
        row.target,
        json.loads(row.before) if row.before else None,
        json.loads(row.after) if row.after else None,
        row.comment,
        row.hash,
    )


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
