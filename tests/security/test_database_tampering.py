"""Issue 10, "What breaks" 5: SQL edits of the governed state, with the triggers dropped (and put
back after, so that only the edit is left), are caught by the state replay of `audit verify`;
with the triggers in place the worst edits are refused; the kill switch still works (SQLite and
PostgreSQL)."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

import ratekeeper as rk
from ratekeeper.demo import train_glm
from registries import TEST_KEY, governed_team, token_of
from tampering import drop_trigger, sql, version_id

MODEL = "motor_frequency"
# Tests about the records, not the gates: versions trained on other samples may move premiums.
LENIENT = rk.GatePolicy(
    deviance_margin=1.0, gini_margin=1.0, dislocation_cap_10=1.0, dislocation_cap_25=1.0
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def history(request, tmp_path_factory, portfolio):
    """A governed history, made once per backend (five gate runs): alice (modeller) registers
    versions 1-3; carol (approver) approves 1 for Production and for @champion; 2 reaches Staging
    by its gates, then Production; dave (deployer) points @challenger at 2 and rolls back to 1;
    alice's request for 3 is pending. Yields a clone-maker and everyone's token."""
    with pytest.MonkeyPatch.context() as env:
        if request.param == "postgres":
            server = request.getfixturevalue("postgres_server")
            env.setenv("RATEKEEPER_AUDIT_KEY", TEST_KEY)
            template = server.create_database()
            uri: str | Path = server.url(template)
        else:
            uri = tmp_path_factory.mktemp("template") / "registry"
        team = governed_team(
            uri,
            {"alice": ["modeller"], "carol": ["approver"], "dave": ["deployer"]},
            artifacts=tmp_path_factory.mktemp("artifacts"),
            gate_policy=LENIENT,
        )
        _make_history(team, portfolio)
        tokens = {name: token_of(handle) for name, handle in team.items()}
        for handle in team.values():
            handle.close()  # PostgreSQL copies a template nobody is connected to

        def clone(folder: Path) -> str | Path:
            if request.param == "postgres":
                return server.url(server.create_database(template=template))
            shutil.copytree(uri, folder / "registry")
            return folder / "registry"

        yield clone, tokens
        if request.param == "postgres":
            server.drop_database(template)


def _make_history(team: dict[str, rk.Registry], portfolio) -> None:
    alice, carol, dave = team["alice"], team["carol"], team["dave"]
    holdout = portfolio.iloc[2000:]
    for rows in (slice(0, 2000), slice(0, 1800), slice(200, 2000)):
        train = portfolio.iloc[rows]
        alice.register_model(
            train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
        )
    carol.approve(alice.request_promotion(MODEL, 1, "Production", holdout=holdout).id)
    assert alice.request_promotion(MODEL, 2, "Staging", holdout=holdout).status == "approved"
    carol.approve(alice.request_promotion(MODEL, 1, "@champion", holdout=holdout).id)
    dave.set_alias(MODEL, "challenger", 2)
    carol.approve(alice.request_promotion(MODEL, 2, "Production", holdout=holdout).id)
    dave.rollback(MODEL, comment="kill switch")
    alice.request_promotion(MODEL, 3, "Production", holdout=holdout)
    assert [(v.version, v.stage.value) for v in alice.list_versions(MODEL)] == [
        (1, "Production"),
        (2, "Archived"),
        (3, "None"),
    ]


@pytest.fixture
def registry_uri(request, history, tmp_path, monkeypatch):
    """A copy of the history (its own database, the same signing key)."""
    clone, _tokens = history
    uri = clone(tmp_path)
    if isinstance(uri, Path):
        yield uri
        return
    server = request.getfixturevalue("postgres_server")
    monkeypatch.setenv("RATEKEEPER_AUDIT_KEY", TEST_KEY)
    yield uri
    gc.collect()  # a connection left open is reported against this test
    server.drop_database(str(uri).rsplit("/", 1)[1])


@pytest.fixture
def team(registry_uri, history):
    """Everyone's handle on this test's copy."""
    _clone, tokens = history
    team = {
        name: rk.Registry(registry_uri, token=token, gate_policy=LENIENT)
        for name, token in tokens.items()
    }
    yield team
    for handle in team.values():
        handle.close()


def caught(registry: rk.Registry, difference: str) -> rk.governance.audit.AuditVerification:
    """verify fails on the state replay alone (chain, seal and triggers intact), naming it."""
    result = registry.verify_audit()
    assert not result.ok
    assert (result.sealed, result.missing_guards) == (True, ())
    assert difference in result.state_differences, result.state_differences
    assert result.reason == (
        f"the tables differ from the audit trail: {result.state_differences[0]}"
    )
    return result


def test_the_governed_history_replays_to_the_tables(team) -> None:
    result = team["root"].verify_audit()
    assert (result.ok, result.reason, result.sealed) == (True, None, True)
    assert (result.state_differences, result.missing_guards) == ((), ())
    actions = [e.action for e in team["root"].audit_log(MODEL)]
    assert actions.count("request.applied") == 1  # version 2 → Staging, by its passing gates


def test_a_stage_edited_to_production(team) -> None:
    sql(
        team["root"],
        "UPDATE model_versions SET stage = 'Archived' WHERE id = :one",
        "UPDATE model_versions SET stage = 'Production' WHERE id = :three",
        bypass=True,
        one=version_id(team["root"], MODEL, 1),
        three=version_id(team["root"], MODEL, 3),
    )
    result = caught(
        team["root"],
        f"models/{MODEL} version 3: stage is Production in the table, None by the audit trail",
    )
    assert result.state_differences[0] == (
        f"models/{MODEL} version 1: stage is Archived in the table, Production by the audit trail"
    )


def test_the_policy_edited_to_open(team) -> None:
    sql(team["root"], "UPDATE registry_state SET policy = 'open'")
    caught(team["root"], "policy: open in the table, governed by the audit trail")


def test_roles_edited(team) -> None:
    sql(
        team["root"],
        "INSERT INTO user_roles (user_id, role, granted_by) "
        "SELECT id, r.role, 'root' FROM users, "
        "(SELECT 'approver' AS role UNION SELECT 'admin') r WHERE name = 'alice'",
    )
    caught(
        team["root"],
        "user alice: roles admin+approver+modeller in the table, modeller by the audit trail",
    )


def test_an_alias_edited_to_another_version(team) -> None:
    sql(
        team["root"],
        "UPDATE aliases SET version_id = :three WHERE alias = 'champion'",
        bypass=True,
        three=version_id(team["root"], MODEL, 3),
    )
    caught(
        team["root"],
        f"alias {MODEL}@champion: version 3 in the table, version 1 by the audit trail",
    )


def test_a_request_approved_by_its_own_requester(team) -> None:
    pending = team["root"].list_requests(MODEL, status="pending")[0]
    sql(
        team["root"],
        "UPDATE promotion_requests SET status = 'approved', decided_by = requested_by "
        "WHERE id = :id",
        bypass=True,
        id=pending.id,
    )
    what = f"request {pending.id} (models/{MODEL} version 3 → Production)"
    caught(team["root"], f"{what}: status approved in the table, pending by the audit trail")
    caught(team["root"], f"{what}: decided by alice in the table, none by the audit trail")


def test_a_transition_row_edited(team) -> None:
    with team["root"].engine.connect() as conn:
        first = conn.execute(sa.text("SELECT min(id) FROM stage_transitions")).scalar_one()
    sql(team["root"], "UPDATE stage_transitions SET actor = 'mallory' WHERE id = :id", id=first)
    caught(
        team["root"],
        f"stage transition {first} (models/{MODEL} version 1, None → Production): "
        "actor mallory in the table, carol by the audit trail",
    )


def test_an_artifact_digest_swapped_for_another_blob(team) -> None:
    registry = team["root"]
    one, two = (registry.get_version(MODEL, n).artifact_digest for n in (1, 2))
    assert one != two
    sql(
        registry,
        "UPDATE model_versions SET artifact_digest = :two WHERE id = :one",
        bypass=True,
        two=two,
        one=version_id(registry, MODEL, 1),
    )
    caught(
        registry,
        f"models/{MODEL} version 1: artifact digest {two[:12]}… in the table, "
        f"{one[:12]}… by the audit trail",
    )


def test_policy_open_a_one_person_promotion_and_governed_again(team, registry_uri) -> None:
    """The issue's sequence: every table ends as governed as it began, the chain is intact and
    sealed (the API wrote and sealed it) — the replay sees a Production move nobody approved."""
    sql(team["root"], "UPDATE registry_state SET policy = 'open'")
    mallory = rk.Registry(registry_uri, user="mallory")
    mallory.transition_stage(MODEL, 3, "Production", comment="quick fix")
    mallory.close()
    sql(team["root"], "UPDATE registry_state SET policy = 'governed'")
    result = team["root"].verify_audit()
    assert (result.ok, result.sealed, result.missing_guards) == (False, True, ())
    # the last three: version 1 archived, version 3 promoted, champion following it
    archived, promoted = (e.id for e in team["root"].audit_log(MODEL)[-3:-1])
    assert result.state_differences == (
        f"event {archived}: mallory moved models/{MODEL} version 1 to Archived, not being a "
        "user of the registry, while the registry was governed",
        f"event {promoted}: mallory moved models/{MODEL} version 3 to Production without an "
        "approved request while the registry was governed",
    )


def test_a_dropped_or_disabled_trigger_is_named(team) -> None:
    drop_trigger(team["root"], "requests_four_eyes", "promotion_requests")
    result = team["root"].verify_audit()
    assert not result.ok
    assert result.missing_guards == (
        "trigger requests_four_eyes on promotion_requests: missing "
        "(it refuses 'four-eyes: this approval is refused')",
    )
    assert result.reason == f"a protecting trigger is gone: {result.missing_guards[0]}"
    if team["root"].engine.dialect.name == "postgresql":
        sql(team["root"], "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        assert team["root"].verify_audit().missing_guards[0] == (
            "trigger audit_events_append_only on audit_events: disabled "
            "(it refuses 'audit events are append-only')"
        )


# -- with the triggers in place, the database itself refuses --------------------------------


def test_the_database_refuses_a_self_approval(team) -> None:
    pending = team["root"].list_requests(MODEL, status="pending")[0]
    with pytest.raises(sa.exc.IntegrityError, match="four-eyes: this approval is refused"):
        sql(
            team["root"],
            "UPDATE promotion_requests SET status = 'approved', decided_by = requested_by "
            "WHERE id = :id",
            id=pending.id,
        )
    assert team["root"].get_request(pending.id).status == "pending"


def test_the_database_refuses_production_without_an_approved_request(team) -> None:
    with pytest.raises(
        sa.exc.IntegrityError, match="Production needs an approved promotion request"
    ):
        sql(
            team["root"],
            "UPDATE model_versions SET stage = 'Production' WHERE id = :three",
            three=version_id(team["root"], MODEL, 3),
        )


def test_the_database_refuses_a_protected_alias_moved_without_a_request(team) -> None:
    with pytest.raises(
        sa.exc.IntegrityError, match="a protected alias moves only through an approved request"
    ):
        sql(
            team["root"],
            "UPDATE aliases SET version_id = :three WHERE alias = 'champion'",
            three=version_id(team["root"], MODEL, 3),
        )


def test_the_database_refuses_a_request_born_approved(team) -> None:
    with pytest.raises(sa.exc.IntegrityError, match="a promotion request starts pending"):
        sql(
            team["root"],
            "INSERT INTO promotion_requests (version_id, target_stage, artifact_digest, status, "
            "gates_passed, requested_by, requested_at, decided_by, override) "
            "SELECT id, 'Production', artifact_digest, 'approved', :yes, 'alice', created_at, "
            "'carol', :no FROM model_versions WHERE id = :three",
            three=version_id(team["root"], MODEL, 3),
            yes=True,
            no=False,
        )


def test_the_kill_switch_still_works_through_the_api(team) -> None:
    back = team["dave"].rollback(MODEL, comment="version 1 misprices young drivers")
    assert (back.version, back.stage.value) == (2, "Production")
    assert team["root"].get_version(MODEL, 1).stage.value == "Archived"
    assert team["root"].verify_audit().ok


def test_cli_audit_verify_prints_the_head_and_seal_and_exits_6_naming_each_difference(
    team, capsys
) -> None:
    from ratekeeper.cli.main import main

    registry = team["root"]
    head = registry.verify_audit().head
    with pytest.raises(SystemExit) as intact:
        main(["--registry", registry.url, "audit", "verify"])
    assert intact.value.code == 0
    assert capsys.readouterr().out.splitlines() == [
        "audit trail verified: 32 events checked",
        f"head: {head}  (export it: a later verify's chain must extend it)",
        "seal: checked with the signing key",
    ]
    sql(registry, "UPDATE registry_state SET policy = 'open'")
    sql(registry, "UPDATE stage_transitions SET actor = 'mallory' WHERE to_stage = 'Staging'")
    with pytest.raises(SystemExit) as broken:
        main(["--registry", registry.url, "audit", "verify"])
    assert broken.value.code == 6  # integrity_error
    printed = capsys.readouterr()
    assert printed.out.splitlines()[2:] == [
        "seal: checked with the signing key",
        "differs: policy: open in the table, governed by the audit trail",
        f"differs: stage transition 2 (models/{MODEL} version 2, None → Staging): actor mallory "
        "in the table, alice by the audit trail",
    ]
    assert printed.err == (
        "error: audit trail broken: the tables differ from the audit trail: "
        "policy: open in the table, governed by the audit trail\n"
    )
