"""The tables compared with the state the audit trail rebuilds (``replay.py``), one line per
difference, each naming the object: "models/motor version 2: stage is Production in the table,
Archived by the audit trail".

A fact an older event did not record (a ``register`` event before it held the digests of the
signature, profile and lineage columns) is not compared: nothing is assumed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ratekeeper.governance.replay import GovernedState, TransitionFacts, column_digest, where
from ratekeeper.store.tables import (
    aliases,
    enrollments,
    model_versions,
    models,
    promotion_requests,
    protected_aliases,
    registry_state,
    stage_transitions,
    tokens,
    user_roles,
    users,
)

# A transition row's time and its event's are taken a few statements apart in one transaction;
# more than this between them is a row whose time was rewritten.
TRANSITION_CLOCK_SLACK = timedelta(seconds=60)


def differences(conn: sa.Connection, state: GovernedState) -> list[str]:
    """Every difference between the tables and ``state``, in a fixed order."""
    return [
        *_registry(conn, state),
        *_users(conn, state),
        *_tokens(conn, state),
        *_protected(conn, state),
        *_versions(conn, state),
        *_aliases(conn, state),
        *_requests(conn, state),
        *_transitions(conn, state),
    ]


def _differ(what: str, field: str, table: Any, trail: Any) -> Iterator[str]:
    if table != trail:
        yield f"{what}: {field} {_show(table)} in the table, {_show(trail)} by the audit trail"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (set, frozenset)):
        return "+".join(sorted(value)) or "none"
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "…"  # a digest
    return str(value)


def _only(what: str, in_table: bool) -> str:
    where_ = "in the table, not in the audit trail" if in_table else "in the audit trail only"
    return f"{what}: {where_}"


def _registry(conn: sa.Connection, state: GovernedState) -> Iterator[str]:
    row = conn.execute(sa.select(registry_state.c.policy, registry_state.c.identity)).one()
    if row.policy != state.policy:
        yield f"policy: {row.policy} in the table, {state.policy} by the audit trail"
    if row.identity != state.identity:
        yield f"identity: {row.identity} in the table, {state.identity} by the audit trail"


def _users(conn: sa.Connection, state: GovernedState) -> Iterator[str]:
    table: dict[str, tuple[str, dict[str, str | None]]] = {
        r.name: (r.created_by, {}) for r in conn.execute(sa.select(users))
    }
    names = {r.id: r.name for r in conn.execute(sa.select(users.c.id, users.c.name))}
    for link in conn.execute(sa.select(user_roles)):
        table[names[link.user_id]][1][link.role] = link.granted_by
    for name in sorted(table.keys() | state.users.keys()):
        what = f"user {name}"
        if name not in state.users or name not in table:
            yield _only(what, name in table)
            continue
        created_by, roles = table[name]
        expected = state.users[name]
        yield from _differ(what, "roles", set(roles), set(expected.roles))
        yield from _differ(what, "created by", created_by, expected.created_by)
        for role in sorted(roles.keys() & expected.roles.keys()):
            yield from _differ(what, f"{role} role granted by", roles[role], expected.roles[role])
    codes = conn.execute(
        sa.select(
            users.c.name,
            sa.func.count(),
            sa.func.count(enrollments.c.redeemed_at),
        )
        .join(users, users.c.id == enrollments.c.user_id)
        .group_by(users.c.name)
    ).all()
    table_codes = {r[0]: [r[1], r[2]] for r in codes}
    for name in sorted(table_codes.keys() | state.enrollments.keys()):
        issued, redeemed = table_codes.get(name, [0, 0])
        expected_issued, expected_redeemed = state.enrollments.get(name, [0, 0])
        yield from _differ(f"user {name}", "enrollment codes", issued, expected_issued)
        yield from _differ(f"user {name}", "enrollment codes redeemed", redeemed, expected_redeemed)


def _tokens(conn: sa.Connection, state: GovernedState) -> Iterator[str]:
    rows = conn.execute(
        sa.select(tokens.c.prefix, tokens.c.created_by, tokens.c.revoked_by, users.c.name).join(
            users, users.c.id == tokens.c.user_id
        )
    ).all()
    table = {r.prefix: r for r in rows}
    for prefix in sorted(table.keys() | state.tokens.keys()):
        if prefix not in table or prefix not in state.tokens:
            owner = table[prefix].name if prefix in table else state.tokens[prefix].user
            yield _only(f"token {prefix} (of {owner})", prefix in table)
            continue
        row, expected = table[prefix], state.tokens[prefix]
        what = f"token {prefix} (of {expected.user})"
        yield from _differ(what, "user", row.name, expected.user)
        yield from _differ(what, "created by", row.created_by, expected.created_by)
        yield from _differ(what, "revoked by", row.revoked_by, expected.revoked_by)


def _protected(conn: sa.Connection, state: GovernedState) -> Iterator[str]:
    table = {r.alias: r.protected_by for r in conn.execute(sa.select(protected_aliases))}
    for alias in sorted(table.keys() | state.protected.keys()):
        what = f"protected alias {alias!r}"
        if alias not in table or alias not in state.protected:
            yield _only(what, alias in table)
        else:
            yield from _differ(what, "protected by", table[alias], state.protected[alias])


def _versions(conn: sa.Connection, state: GovernedState) -> Iterator[str]:
    model_rows = {r.name: r.created_by for r in conn.execute(sa.select(models))}
    for name in sorted(model_rows.keys() | state.models.keys()):
        if name not in model_rows or name not in state.models:
            yield _only(f"models/{name}", name in model_rows)
        else:
            yield from _differ(f"models/{name}", "created by", model_rows[name], state.models[name])
    rows = conn.execute(
        sa.select(models.c.name, model_versions)
        .join(models, models.c.id == model_versions.c.model_id)
        .order_by(models.c.name, model_versions.c.version)
    ).all()
    table = {(r.name, r.version): r for r in rows}
    for key in sorted(table.keys() | state.versions.keys()):
        what = where(*key)
        if key not in table or key not in state.versions:
            yield _only(what, key in table)
            continue
        row, expected = table[key], state.versions[key]
        yield from _differ(what, "stage is", row.stage, expected.stage)
        yield from _differ(what, "created by", row.created_by, expected.created_by)
        yield from _differ(what, "description", row.description, expected.description)
        recorded = expected.recorded
        facts = {
            "artifact": ("artifact digest", row.artifact_digest),
            "flavor": ("flavor", row.flavor),
            "metrics": ("metrics", json.loads(row.metrics)),
            "size": ("artifact size", row.artifact_size),
            "signature": ("signature digest", column_digest(row.signature)),
            "profile": ("reference profile digest", column_digest(row.profile)),
            "lineage": ("lineage digest", column_digest(row.lineage)),
        }
        for key_, (label, value) in facts.items():
            if key_ in recorded:
                yield from _differ(what, label, value, recorded[key_])


def _aliases(conn: sa.Connection, state: GovernedState) -> Iterator[str]:
    rows = conn.execute(
        sa.select(models.c.name, aliases.c.alias, model_versions.c.version, aliases.c.updated_by)
        .join(models, models.c.id == aliases.c.model_id)
        .join(model_versions, model_versions.c.id == aliases.c.version_id)
    ).all()
    table = {(r.name, r.alias): (r.version, r.updated_by) for r in rows}
    for key in sorted(table.keys() | state.aliases.keys()):
        what = f"alias {key[0]}@{key[1]}"
        if key not in table or key not in state.aliases:
            yield _only(what, key in table)
            continue
        (version, actor), (expected_version, expected_actor) = table[key], state.aliases[key]
        if version != expected_version:
            yield (
                f"{what}: version {version} in the table, "
                f"version {expected_version} by the audit trail"
            )
        yield from _differ(what, "set by", actor, expected_actor)


def _requests(conn: sa.Connection, state: GovernedState) -> Iterator[str]:
    rows = conn.execute(
        sa.select(promotion_requests, models.c.name, model_versions.c.version)
        .join(model_versions, model_versions.c.id == promotion_requests.c.version_id)
        .join(models, models.c.id == model_versions.c.model_id)
        .order_by(promotion_requests.c.id)
    ).all()
    table = {r.id: r for r in rows}
    for number in sorted(table.keys() | state.requests.keys()):
        if number not in table or number not in state.requests:
            yield _only(f"request {number}", number in table)
            continue
        row, expected = table[number], state.requests[number]
        goal = expected.stage or f"@{expected.alias}"
        what = f"request {number} ({where(expected.model, expected.version)} → {goal})"
        yield from _differ(what, "model", row.name, expected.model)
        yield from _differ(what, "version", row.version, expected.version)
        yield from _differ(what, "stage", row.target_stage, expected.stage)
        yield from _differ(what, "alias", row.target_alias, expected.alias)
        yield from _differ(what, "status", row.status, expected.status)
        yield from _differ(what, "requested by", row.requested_by, expected.requested_by)
        yield from _differ(what, "comment", row.comment, expected.comment)
        yield from _differ(what, "decided by", row.decided_by, expected.decided_by)
        yield from _differ(
            what, "decision comment", row.decision_comment, expected.decision_comment
        )
        yield from _differ(what, "override", bool(row.override), expected.override)
        recorded = expected.recorded
        yield from _differ(
            what, "gates passed", bool(row.gates_passed), recorded.get("gates_passed")
        )
        yield from _differ(what, "gate report", row.report_digest, recorded.get("report"))
        yield from _differ(what, "champion", row.champion_version, recorded.get("champion"))
        version = state.versions.get((expected.model, expected.version))
        if version is not None and "artifact" in version.recorded:
            yield from _differ(
                what, "artifact digest", row.artifact_digest, version.recorded["artifact"]
            )


def _transitions(conn: sa.Connection, state: GovernedState) -> Iterator[str]:
    """Each version's transition rows (by id) against its ``stage`` events (in chain order).

    Paired per version, not globally: on PostgreSQL two models move concurrently, and one
    transaction can take the lower row id yet append its event second. Moves of one model are
    serialised by its lock, so per version the two orders agree.
    """
    rows = conn.execute(
        sa.select(models.c.name, model_versions.c.version, stage_transitions)
        .join(model_versions, model_versions.c.id == stage_transitions.c.version_id)
        .join(models, models.c.id == model_versions.c.model_id)
        .order_by(stage_transitions.c.id)
    ).all()
    table: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for row in rows:
        table[(row.name, row.version)].append(row)
    trail: dict[tuple[str, int], list[TransitionFacts]] = defaultdict(list)
    for move in state.transitions:
        trail[(move.model, move.version)].append(move)
    for key in sorted(table.keys() | trail.keys()):
        found, expected = table.get(key, []), trail.get(key, [])
        for row, move in zip(found, expected, strict=False):
            yield from _compare_transition(row, move)
        for row in found[len(expected) :]:
            yield _only(f"stage transition {row.id} ({_move(row.name, row)})", True)
        for move in expected[len(found) :]:
            yield _only(
                f"stage transition ({_move(move.model, move)}, event {move.event_id})", False
            )


def _move(name: str, move: Any) -> str:
    """A transition row or a replayed one, as a line names it."""
    return f"{where(name, move.version)}, {move.from_stage} → {move.to_stage}"


def _compare_transition(row: Any, move: TransitionFacts) -> Iterator[str]:
    what = f"stage transition {row.id} ({_move(row.name, row)})"
    yield from _differ(
        what, "move", f"{row.from_stage} → {row.to_stage}", (f"{move.from_stage} → {move.to_stage}")
    )
    yield from _differ(what, "actor", row.actor, move.actor)
    yield from _differ(what, "request", row.request_id, move.request_id)
    yield from _differ(what, "comment", row.comment, move.comment)
    if abs(row.at - move.at) > TRANSITION_CLOCK_SLACK:
        yield (
            f"{what}: time {row.at:%Y-%m-%d %H:%M:%S} in the table, "
            f"{move.at:%Y-%m-%d %H:%M:%S} by the audit trail"
        )
