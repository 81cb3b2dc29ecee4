"""Governance rules, each with a test that tries to break it (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

import ratekeeper as rk
from ratekeeper.demo import train_glm
from registries import governed_team, open_registry, token_of

MODEL = "motor_frequency"
# Tests about the workflow, not the gates: versions trained on other samples may move premiums.
LENIENT = rk.GatePolicy(
    deviance_margin=1.0, gini_margin=1.0, dislocation_cap_10=1.0, dislocation_cap_25=1.0
)


@pytest.fixture
def team(registry_uri, tmp_path, portfolio):
    """A governed registry: root (admin), alice (modeller), carol (approver), dave (deployer),
    erin (approver + admin), vic (viewer), each with their own token; alice has registered
    version 1."""
    team = governed_team(
        registry_uri,
        {
            "alice": ["modeller"],
            "carol": ["approver"],
            "dave": ["deployer"],
            "erin": ["approver", "admin"],
            "vic": ["viewer"],
        },
        artifacts=tmp_path / "artifacts",
        gate_policy=LENIENT,
    )
    train = portfolio.iloc[:2000]
    team["alice"].register_model(
        train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
    )
    yield team
    for handle in team.values():
        handle.close()


@pytest.fixture
def holdout(portfolio):
    return portfolio.iloc[2000:]


def test_a_new_registry_is_governed_and_its_creator_is_admin(registry_uri, tmp_path) -> None:
    registry, token = rk.Registry.create(registry_uri, artifacts=tmp_path / "a", admin="founder")
    assert registry.policy == "governed"
    assert token.startswith("rk_") and registry.user == "founder"
    assert [(u.name, sorted(u.roles)) for u in registry.list_users()] == [("founder", ["admin"])]
    registry.close()
    with pytest.raises(rk.ConflictError, match="a registry already exists at"):
        open_registry(registry_uri, artifacts=tmp_path / "a")


def test_production_needs_an_approval_by_a_second_person(team, holdout) -> None:
    request = team["alice"].request_promotion(MODEL, 1, "Production", holdout=holdout)
    assert (request.status, request.gates_passed, request.requested_by) == (
        "pending",
        True,
        "alice",
    )
    assert team["alice"].get_version(MODEL, 1).stage == rk.Stage.NONE
    approved = team["carol"].approve(request.id, comment="signed off")
    assert (approved.status, approved.decided_by) == ("approved", "carol")
    version = team["carol"].get_version(MODEL, 1)
    assert version.stage == rk.Stage.PRODUCTION
    transition = team["carol"].get_transitions(MODEL, 1)[-1]
    assert (transition.actor, transition.to_stage) == ("carol", rk.Stage.PRODUCTION)


def test_self_approval_is_refused(team, holdout, portfolio) -> None:
    # erin is an approver; a version she created cannot be approved by her.
    erin = team["erin"]
    erin.set_roles("erin", ["approver", "admin", "modeller"])
    erin.register_model(
        train_glm(portfolio.iloc[:1500]),
        MODEL,
        training_data=portfolio.iloc[:1500],
        target="claim_count",
        exposure="exposure",
    )
    request = team["alice"].request_promotion(MODEL, 2, "Production", holdout=holdout)
    with pytest.raises(
        rk.PermissionDeniedError, match="four-eyes: erin created motor_frequency version 2"
    ):
        erin.approve(request.id)
    # carol requested it herself: she cannot approve her own request either.
    own = team["carol"].request_promotion(MODEL, 1, "Production", holdout=holdout)
    with pytest.raises(rk.PermissionDeniedError, match="four-eyes: carol requested this promotion"):
        team["carol"].approve(own.id)
    assert team["carol"].get_request(own.id).status == "pending"


@pytest.mark.parametrize("who", ["alice", "dave", "root", "vic"])
def test_an_approver_role_is_needed(team, holdout, who) -> None:
    request = team["alice"].request_promotion(MODEL, 1, "Production", holdout=holdout)
    with pytest.raises(
        rk.PermissionDeniedError, match=f"^{who} .* may not approve: that needs the approver role"
    ):
        team[who].approve(request.id)


def test_promoting_around_the_workflow_is_refused(team) -> None:
    for who in ("alice", "carol", "root"):
        with pytest.raises(
            rk.PermissionDeniedError,
            match="governed: Production needs an approved promotion request",
        ):
            team[who].transition_stage(MODEL, 1, "Production")
        with pytest.raises(rk.PermissionDeniedError, match="governed: Staging needs"):
            team[who].transition_stage(MODEL, 1, "Staging")
    with pytest.raises(rk.PermissionDeniedError, match=r"alice .* may not archive"):
        team["alice"].transition_stage(MODEL, 1, "Archived")
    assert team["dave"].transition_stage(MODEL, 1, "Archived").stage == rk.Stage.ARCHIVED
    with pytest.raises(rk.PermissionDeniedError, match="governed: alias needs a credential"):
        team["root"].as_user("mallory").set_alias(MODEL, "challenger", 1)


def test_a_stale_request_cannot_be_approved(team, holdout, portfolio) -> None:
    first = team["alice"].request_promotion(MODEL, 1, "Production", holdout=holdout)
    team["carol"].approve(first.id)
    team["alice"].register_model(
        train_glm(portfolio.iloc[:1800]),
        MODEL,
        training_data=portfolio.iloc[:1800],
        target="claim_count",
        exposure="exposure",
    )
    team["alice"].register_model(
        train_glm(portfolio.iloc[:1600]),
        MODEL,
        training_data=portfolio.iloc[:1600],
        target="claim_count",
        exposure="exposure",
    )
    old = team["alice"].request_promotion(MODEL, 2, "Production", holdout=holdout)
    assert old.champion_version == 1
    newer = team["alice"].request_promotion(MODEL, 3, "Production", holdout=holdout)
    team["carol"].approve(newer.id)
    with pytest.raises(
        rk.ConflictError, match="stale: Production is now version 3, the gates compared against 1"
    ):
        team["carol"].approve(old.id)
    with pytest.raises(rk.ConflictError, match=f"request {newer.id} is approved, not pending"):
        team["carol"].approve(newer.id)


def test_failed_gates_need_a_recorded_admin_override(team, holdout, portfolio) -> None:
    strict = rk.Registry(
        team["alice"].url,
        token=token_of(team["alice"]),
        gate_policy=rk.GatePolicy(psi_threshold=1e-9),
    )
    request = strict.request_promotion(MODEL, 1, "Production", holdout=holdout)
    strict.close()
    assert not request.gates_passed
    with pytest.raises(rk.ConflictError, match="the gates failed; only an admin may approve it"):
        team["carol"].approve(request.id)
    with pytest.raises(rk.PermissionDeniedError, match=r"carol .* may not override"):
        team["carol"].approve(request.id, override=True)
    approved = team["erin"].approve(request.id, override=True, comment="PSI noise, accepted")
    assert approved.override
    actions = [e.action for e in team["root"].audit_log(MODEL)]
    assert actions[-3:] == ["override", "stage", "alias.follow"]


def test_prohibited_rating_factors_are_refused_at_request_time(team, portfolio, holdout) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import PoissonRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = portfolio.iloc[:2000]
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("c", OneHotEncoder(drop="first"), ["area", "gender"]),
                        ("n", "passthrough", ["driver_age"]),
                    ]
                ),
            ),
            ("glm", PoissonRegressor(solver="newton-cholesky")),
        ]
    ).fit(
        train[["area", "gender", "driver_age"]],
        train["claim_count"] / train["exposure"],
        glm__sample_weight=train["exposure"],
    )
    team["alice"].register_model(
        model, MODEL, training_data=train, target="claim_count", exposure="exposure"
    )
    with pytest.raises(
        rk.InvalidInputError, match="version 2 uses prohibited rating factor\\(s\\) gender"
    ):
        team["alice"].request_promotion(MODEL, 2, "Production", holdout=holdout)
    assert team["root"].list_requests(MODEL) == []


def test_staging_moves_when_the_gates_pass_and_rollback_needs_a_deployer(
    team, holdout, portfolio
) -> None:
    staged = team["alice"].request_promotion(MODEL, 1, "Staging", holdout=holdout)
    assert (staged.status, staged.decided_by) == ("approved", "policy")
    assert team["root"].get_version(MODEL, 1).stage == rk.Stage.STAGING
    team["carol"].approve(
        team["alice"].request_promotion(MODEL, 1, "Production", holdout=holdout).id
    )
    team["alice"].register_model(
        train_glm(portfolio.iloc[:1700]),
        MODEL,
        training_data=portfolio.iloc[:1700],
        target="claim_count",
        exposure="exposure",
    )
    team["carol"].approve(
        team["alice"].request_promotion(MODEL, 2, "Production", holdout=holdout).id
    )
    with pytest.raises(rk.PermissionDeniedError, match=r"alice .* may not rollback"):
        team["alice"].rollback(MODEL)
    assert team["dave"].rollback(MODEL).version == 1


def test_tokens_are_hashed_shown_once_and_revocable(team) -> None:
    token = team["carol"].create_token(description="approvals from the web")
    assert token.startswith("rk_")
    assert team["root"].authenticate(token).name == "carol"
    assert team["root"].authenticate(token + "x") is None
    with team["root"].engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT token_sha256 FROM tokens")).scalars().all()
    assert all(token not in digest and len(digest) == 64 for digest in stored)
    prefix = token.split("_")[1]
    with pytest.raises(rk.PermissionDeniedError, match=r"dave .* may not manage users"):
        team["dave"].revoke_token(prefix)  # another's token: only its owner or an admin
    team["root"].revoke_token(prefix)
    assert team["root"].authenticate(token) is None
    with pytest.raises(rk.PermissionDeniedError, match="the token is unknown or revoked"):
        rk.Registry(team["root"].url, token=token)
    actions = [e.action for e in team["root"].audit_log()]
    assert actions[-2:] == ["token.create", "token.revoke"]


def test_production_at_answers_who_approved_and_on_what_evidence(team, holdout, portfolio) -> None:
    before = datetime.now(UTC)
    request = team["alice"].request_promotion(
        MODEL, 1, "Production", holdout=holdout, comment="2027 tariff"
    )
    team["carol"].approve(request.id, comment="signed off")
    middle = datetime.now(UTC)
    team["alice"].register_model(
        train_glm(portfolio.iloc[:1700]),
        MODEL,
        training_data=portfolio.iloc[:1700],
        target="claim_count",
        exposure="exposure",
    )
    team["carol"].approve(
        team["alice"].request_promotion(MODEL, 2, "Production", holdout=holdout).id
    )
    with pytest.raises(rk.NotFoundError, match="had no Production version"):
        team["vic"].production_at(MODEL, before)
    record = team["vic"].production_at(MODEL, middle)
    assert (record.version, record.promoted_by) == (1, "carol")
    assert (record.request.requested_by, record.request.decided_by) == ("alice", "carol")
    assert record.request.decision_comment == "signed off"
    report = team["vic"].request_report(record.request.id)
    assert report.challenger_version == 1 and report.passed
    assert team["vic"].production_at(MODEL, datetime.now(UTC)).version == 2
