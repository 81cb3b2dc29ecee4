"""The audit trail: every state change recorded, hash-chained, and guarded by the database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import ratekeeper as rk
from ratekeeper.demo import train_glm
from registries import open_registry

MODEL = "motor_frequency"


@pytest.fixture
def registry(registry_uri, tmp_path, portfolio):
    registry = open_registry(registry_uri, artifacts=tmp_path / "artifacts", user="root")
    train = portfolio.iloc[:1500]
    registry.register_model(train_glm(train), MODEL, training_data=train, exposure="exposure")
    registry.register_model(
        train_glm(portfolio.iloc[:1400]),
        MODEL,
        training_data=portfolio.iloc[:1400],
        exposure="exposure",
    )
    registry.transition_stage(MODEL, 1, "Production", comment="first")
    registry.set_alias(MODEL, "champion", 1)
    registry.transition_stage(MODEL, 2, "Production")
    registry.rollback(MODEL, comment="kill switch")
    registry.delete_alias(MODEL, "champion")
    yield registry
    registry.close()


def raw(registry: rk.Registry, *statements: str, bypass: bool = False) -> None:
    """Run SQL straight against the database, optionally switching the guards off first."""
    with registry.engine.begin() as conn:
        if bypass:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            else:
                conn.execute(sa.text("DROP TRIGGER audit_events_no_update"))
                conn.execute(sa.text("DROP TRIGGER audit_events_no_delete"))
        for statement in statements:
            conn.execute(sa.text(statement))


def test_every_state_change_is_an_event_with_actor_before_and_after(registry) -> None:
    events = registry.audit_log(MODEL)
    assert [e.action for e in events] == [
        "register",
        "register",
        "stage",
        "alias.follow",  # the registry keeps champion on the Production version
        "alias.set",
        "stage",
        "stage",
        "alias.follow",
        "rollback",
        "stage",
        "stage",
        "alias.follow",
        "alias.delete",
    ]
    promote = events[2]
    assert (promote.actor, promote.version, promote.before, promote.after, promote.comment) == (
        "root",
        1,
        {"stage": "None"},
        {"stage": "Production"},
        "first",
    )
    assert events[8].before == {"production": 2} and events[8].after == {"production": 1}
    every = registry.audit_log()
    assert [e.action for e in every[:2]] == ["registry.create", "token.create"]
    assert registry.verify_audit() == rk.governance.audit.AuditVerification(
        True, 15, head=every[-1].hash, sealed=True
    )


def test_the_database_refuses_to_edit_or_delete_audit_events(registry) -> None:
    with pytest.raises(sa.exc.DatabaseError, match="audit events are append-only"):
        raw(registry, "UPDATE audit_events SET actor = 'mallory' WHERE id = 3")
    with pytest.raises(sa.exc.DatabaseError, match="audit events are append-only"):
        raw(registry, "DELETE FROM audit_events WHERE id = 3")
    assert registry.verify_audit().ok


def test_the_database_refuses_to_change_a_version(registry) -> None:
    with pytest.raises(sa.exc.DatabaseError, match="model versions are immutable"):
        raw(registry, "UPDATE model_versions SET metrics = '{\"gini\": 0.9}' WHERE version = 1")
    with pytest.raises(sa.exc.DatabaseError, match="model versions are never deleted"):
        raw(registry, "DELETE FROM model_versions WHERE version = 2")
    raw(registry, "UPDATE model_versions SET stage = 'Archived' WHERE version = 2")  # stages move


@pytest.mark.parametrize(
    ("tamper", "first_bad", "reason"),
    [
        ("UPDATE audit_events SET actor = 'mallory' WHERE id = 4", 4, "content was edited"),
        ("DELETE FROM audit_events WHERE id = 5", 6, "predecessor is missing"),
        ("UPDATE audit_events SET id = id + 100 WHERE id = 3", 4, "predecessor is missing"),
        ("DELETE FROM audit_events WHERE id = 15", 14, "events after it were deleted"),
        (
            "INSERT INTO audit_events (id, at, actor, action, prev_hash, hash) "
            "SELECT 7000, at, 'x', "
            "'stage', hash, 'f00d' FROM audit_events WHERE id = 15",
            7000,
            "content was edited",
        ),
    ],
)
def test_verify_names_the_first_bad_event_after_a_raw_edit(
    registry, tamper, first_bad, reason
) -> None:
    raw(registry, tamper, bypass=True)
    result = registry.verify_audit()
    assert not result.ok
    assert result.first_bad_id == first_bad
    assert reason in result.reason


def test_cli_audit_verify_exits_non_zero_on_a_broken_chain(registry, capsys) -> None:
    from ratekeeper.cli.main import main

    raw(registry, "UPDATE audit_events SET comment = 'nothing happened' WHERE id = 7", bypass=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["--registry", registry.url, "audit", "verify"])
    assert exit_info.value.code == 6  # integrity_error
    printed = capsys.readouterr()
    assert printed.err.startswith("error: audit trail broken at event 7: its content was edited")
    assert printed.out.startswith("audit trail FAILED: 7 events checked\nhead: - (the chain")
