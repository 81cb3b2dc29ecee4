"""SQL as someone with database access (but without the signing key) would run it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

import ratekeeper as rk
from ratekeeper.governance import audit

_SQLITE_TRIGGERS = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
_POSTGRES_TRIGGERS = (
    "SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
    "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
)


def sql(registry: rk.Registry, *statements: str, bypass: bool = False, **params: Any) -> None:
    """Run ``statements`` in one transaction. ``bypass``: with every trigger dropped first and
    recreated as it was after, so that only the edit itself is left behind."""
    with registry.engine.begin() as conn:
        recreate = _drop_triggers(conn) if bypass else []
        for statement in statements:
            conn.execute(sa.text(statement), params)
        for definition in recreate:
            conn.execute(sa.text(definition))


def drop_trigger(registry: rk.Registry, name: str, table: str) -> None:
    postgres = registry.engine.dialect.name == "postgresql"
    sql(registry, f"DROP TRIGGER {name} ON {table}" if postgres else f"DROP TRIGGER {name}")


def _drop_triggers(conn: sa.Connection) -> list[str]:
    if conn.dialect.name == "postgresql":
        found = conn.execute(sa.text(_POSTGRES_TRIGGERS)).all()
        for name, table, _definition in found:
            conn.execute(sa.text(f"DROP TRIGGER {name} ON {table}"))
        return [definition for _name, _table, definition in found]
    found = conn.execute(sa.text(_SQLITE_TRIGGERS)).all()
    for name, _definition in found:
        conn.execute(sa.text(f"DROP TRIGGER {name}"))
    return [definition for _name, definition in found]


def version_id(registry: rk.Registry, name: str, version: int) -> int:
    with registry.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT v.id FROM model_versions v JOIN models m ON m.id = v.model_id "
                    "WHERE m.name = :name AND v.version = :version"
                ),
                {"name": name, "version": version},
            ).scalar_one()
        )


def chain(registry: rk.Registry) -> list[Any]:
    """The audit events as stored, oldest first."""
    with registry.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT * FROM audit_events ORDER BY id")).mappings())


def rechain(registry: rk.Registry, rows: list[dict[str, Any]], *, first_id: int) -> None:
    """Rewrite every event from ``first_id`` on as ``rows`` (re-hashed in order) and move the
    head and count to match: what the chain alone cannot tell from the real thing."""
    kept = [r for r in chain(registry) if r["id"] < first_id]
    head = kept[-1]["hash"] if kept else "0" * 64
    statements = ["DELETE FROM audit_events WHERE id >= :first_id"]
    params: dict[str, Any] = {"first_id": first_id}
    for n, row in enumerate(rows):
        fields = {**row, "at": _aware(row["at"])}
        digest = audit.event_hash(head, fields)
        names = ("id", "at", "actor", "action", "model", "version", "target", "before", "after")
        statements.append(
            "INSERT INTO audit_events (id, at, actor, action, model, version, target, before, "
            "after, comment, prev_hash, hash) VALUES ("
            + ", ".join(f":{k}{n}" for k in (*names, "comment", "prev_hash", "hash"))
            + ")"
        )
        params.update({f"{k}{n}": row[k] for k in (*names, "comment")})  # `at` as stored
        params.update({f"prev_hash{n}": head, f"hash{n}": digest})
        head = digest
    statements.append(
        "UPDATE registry_state SET audit_head = :new_head, audit_count = :new_count WHERE id = 1"
    )
    params.update({"new_head": head, "new_count": len(kept) + len(rows)})
    sql(registry, *statements, bypass=True, **params)


def _aware(at: Any) -> datetime:
    if isinstance(at, str):  # SQLite: the text SQLAlchemy stored
        at = datetime.fromisoformat(at)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
