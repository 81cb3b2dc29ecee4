"""The database triggers that protect the records (migrations 0002 and 0003): are they all there?

Each guard is named with its table and the message it refuses with; a guard counts as present
when a trigger of that name exists on that table, is enabled (PostgreSQL's ``ALTER TABLE ...
DISABLE TRIGGER`` keeps the trigger but switches it off) and still refuses with its message
(a trigger recreated to do nothing would lose it). What this cannot see: a trigger bypassed for
one session only (PostgreSQL's ``session_replication_role = replica``) and then left as it was,
or one recreated with its message but a condition that never holds; the state replay catches
what was changed meanwhile.
"""

from __future__ import annotations

import sqlalchemy as sa

_APPEND_ONLY = "audit events are append-only"
_IMMUTABLE = "model versions are immutable"
_KEPT = "model versions are never deleted"
_PROTECTED_ALIAS = "a protected alias moves only through an approved request"

# name → (table, message), as the migrations create them.
_FOUR_EYES = {
    "requests_four_eyes": ("promotion_requests", "four-eyes: this approval is refused"),
    "requests_born_pending": ("promotion_requests", "a promotion request starts pending"),
    "production_needs_approval": (
        "model_versions",
        "Production needs an approved promotion request",
    ),
    "protected_alias_insert": ("aliases", _PROTECTED_ALIAS),
    "protected_alias_update": ("aliases", _PROTECTED_ALIAS),
}
GUARDS: dict[str, dict[str, tuple[str, str]]] = {
    "sqlite": {
        "audit_events_no_update": ("audit_events", _APPEND_ONLY),
        "audit_events_no_delete": ("audit_events", _APPEND_ONLY),
        "model_versions_immutable": ("model_versions", _IMMUTABLE),
        "model_versions_kept": ("model_versions", _KEPT),
        **_FOUR_EYES,
    },
    "postgresql": {
        "audit_events_append_only": ("audit_events", _APPEND_ONLY),
        "model_versions_immutable": ("model_versions", _IMMUTABLE),
        "model_versions_kept": ("model_versions", _KEPT),
        **_FOUR_EYES,
    },
}

_SQLITE_TRIGGERS = sa.text(
    "SELECT name, tbl_name, sql AS definition, 1 AS enabled "
    "FROM sqlite_master WHERE type = 'trigger'"
)
# The trigger's own definition holds 0002's message (an argument of ratekeeper_refuse); its
# function's source holds 0003's.
_POSTGRES_TRIGGERS = sa.text(
    "SELECT t.tgname AS name, c.relname AS tbl_name, "
    "pg_get_triggerdef(t.oid) || ' ' || p.prosrc AS definition, "
    "t.tgenabled <> 'D' AS enabled "
    "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid "
    "WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
)


def missing_guards(conn: sa.Connection) -> list[str]:
    """One line per protecting trigger that is missing, disabled or no longer refuses."""
    postgres = conn.dialect.name == "postgresql"
    found = {r.name: r for r in conn.execute(_POSTGRES_TRIGGERS if postgres else _SQLITE_TRIGGERS)}
    problems = []
    for name, (table, message) in GUARDS[conn.dialect.name].items():
        trigger = found.get(name)
        if trigger is None or trigger.tbl_name != table:
            problems.append(f"trigger {name} on {table}: missing (it refuses {message!r})")
        elif not trigger.enabled:
            problems.append(f"trigger {name} on {table}: disabled (it refuses {message!r})")
        elif message not in trigger.definition:
            problems.append(f"trigger {name} on {table}: redefined (it no longer refuses)")
    return problems
