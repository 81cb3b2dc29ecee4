"""Rollouts through the Python API: governance, states, the aliases the registry keeps, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest

import ratekeeper as rk
from ratekeeper.demo import train_glm
from registries import governed_team, open_registry

MODEL = "motor_frequency"
LENIENT = rk.GatePolicy(
    deviance_margin=1.0, gini_margin=1.0, dislocation_cap_10=1.0, dislocation_cap_25=1.0
)
CANARY = {"mode": "canary", "percent": 5}


@pytest.fixture
def team(registry_uri, tmp_path, portfolio):
    """A governed registry: alice (modeller) registered versions 1 and 2, carol (approver)
    approved version 1 for Production; dave is a deployer, vic a viewer."""
    team = governed_team(
        registry_uri,
        {"alice": ["modeller"], "carol": ["approver"], "dave": ["deployer"], "vic": ["viewer"]},
        artifacts=tmp_path / "artifacts",
        gate_policy=LENIENT,
    )
    for rows in (slice(0, 2000), slice(0, 1800)):
        train = portfolio.iloc[rows]
        team["alice"].register_model(
            train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
        )
    holdout = portfolio.iloc[2000:]
    team["carol"].approve(
        team["alice"].request_promotion(MODEL, 1, "Production", holdout=holdout).id
    )
    yield team
    for handle in team.values():
        handle.close()


def test_a_canary_needs_an_approved_request_carrying_its_plan_and_a_shadow_does_not(
    team, portfolio
) -> None:
    dave = team["dave"]
    with pytest.raises(rk.PermissionDeniedError, match="needs an approved Production request"):
        dave.start_rollout(MODEL, 2, mode="canary", percent=5)
    shadow = dave.start_rollout(MODEL, 2, mode="shadow")
    assert (shadow.mode, shadow.status, shadow.percent, shadow.champion_version) == (
        "shadow",
        "active",
        100.0,
        1,
    )
    assert dave.get_model(MODEL).aliases == {"champion": 1, "challenger": 2}
    with pytest.raises(rk.ConflictError, match="already has a active shadow rollout"):
        dave.start_rollout(MODEL, 2, mode="shadow")
    dave.complete_rollout(MODEL)
    assert dave.get_model(MODEL).aliases == {"champion": 1}
    assert dave.get_version(MODEL, 2).stage == rk.Stage.NONE  # a shadow promotes nothing

    request = team["alice"].request_promotion(
        MODEL, 2, "Production", holdout=portfolio.iloc[2000:], rollout=CANARY
    )
    assert request.rollout is not None and request.rollout["percent"] == 5
    team["carol"].approve(request.id, comment="5 % canary, then Production")
    assert dave.get_version(MODEL, 2).stage == rk.Stage.NONE  # approved, not moved yet
    with pytest.raises(rk.PermissionDeniedError, match=r"approved plans: request \d+: canary 5 %"):
        dave.start_rollout(MODEL, 2, mode="canary", percent=10)
    with pytest.raises(rk.PermissionDeniedError, match="may not rollout"):
        team["vic"].start_rollout(MODEL, 2, mode="canary", percent=5)
    canary = dave.start_rollout(MODEL, 2, mode="canary", percent=5)
    assert (canary.request_id, canary.live_percent) == (request.id, 5.0)

    done = dave.complete_rollout(MODEL)
    assert (done.status, done.reason) == ("completed", "version 2 moved to Production")
    assert [v.stage for v in dave.list_versions(MODEL)] == [rk.Stage.ARCHIVED, rk.Stage.PRODUCTION]
    assert dave.get_model(MODEL).aliases == {"champion": 2}
    with pytest.raises(rk.PermissionDeniedError, match="needs an approved Production request"):
        dave.start_rollout(MODEL, 1, mode="canary", percent=5)  # the request was used
    check = team["root"].verify_audit()
    assert (check.ok, check.state_differences) == (True, ())


def test_pause_resume_abort_each_an_audit_event_and_a_generation(team) -> None:
    dave = team["dave"]
    dave.start_rollout(MODEL, 2, mode="shadow", percent=50)
    moves = [
        (lambda: dave.pause_rollout(MODEL), "rollout.pause", "paused", 0.0),
        (lambda: dave.resume_rollout(MODEL), "rollout.resume", "active", 50.0),
        (
            lambda: dave.abort_rollout(MODEL, reason="premiums look odd"),
            "rollout.abort",
            "aborted",
            0.0,
        ),
    ]
    for move, action, status, live in moves:
        generation = dave.generation()
        rollout = move()
        assert (rollout.status, rollout.live_percent) == (status, live)
        assert dave.generation() > generation
        event = team["root"].audit_log(MODEL)[-1 if action != "rollout.abort" else -2]
        assert (event.action, event.actor, event.target) == (
            action,
            "dave",
            f"rollout {rollout.id}",
        )
    assert team["root"].audit_log(MODEL)[-1].action == "alias.follow"  # challenger removed
    assert dave.get_rollout(MODEL).reason == "premiums look odd"
    with pytest.raises(rk.NotFoundError, match="has no running rollout"):
        dave.pause_rollout(MODEL)
    assert team["root"].verify_audit().ok


@pytest.fixture
def two_versions(registry, portfolio):
    """An open registry: version 1 in Production, version 2 registered."""
    for rows in (slice(0, 2000), slice(0, 1800)):
        train = portfolio.iloc[rows]
        registry.register_model(train_glm(train), MODEL, training_data=train, exposure="exposure")
    registry.transition_stage(MODEL, 1, "Production")
    return registry


def test_a_staged_rollout_steps_after_each_bake_and_ends_in_production(two_versions) -> None:
    registry = two_versions
    started = registry.start_rollout(MODEL, 2, mode="staged", steps="10,50,100", bake="90s")
    assert (started.percent, started.steps, started.bake_seconds) == (10.0, (10, 50, 100), 90)
    assert registry.advance_rollouts(started.started_at + timedelta(seconds=89)) == []
    now = started.started_at + timedelta(seconds=91)
    for percent in (50.0, 100.0):
        (stepped,) = registry.advance_rollouts(now)
        assert (stepped.percent, stepped.status) == (percent, "active")
        assert registry.advance_rollouts(now) == []  # each step is taken once
        now += timedelta(seconds=91)
    (done,) = registry.advance_rollouts(now)
    assert (done.status, done.live_percent) == ("completed", 0.0)
    assert registry.resolve(f"models:/{MODEL}/Production").version == 2
    assert registry.get_version(MODEL, 1).stage == rk.Stage.ARCHIVED
    assert registry.get_model(MODEL).aliases == {"champion": 2}
    actions = [e.action for e in registry.audit_log(MODEL)]
    assert actions[-7:] == [
        "rollout.step",
        "rollout.step",
        "stage",
        "stage",
        "alias.follow",
        "rollout.complete",
        "alias.follow",
    ]
    kinds = [e["kind"] for e in registry.rollout_events(MODEL)]
    assert kinds == ["start", "step", "step", "complete"]


def test_a_guard_breach_rolls_back_once_and_the_kill_switch_ends_a_rollout(two_versions) -> None:
    registry = two_versions
    canary = registry.start_rollout(MODEL, 2, mode="canary", percent=20, key="policy_id")
    evidence = {"median_ratio": 3.0, "quotes": 200}
    back = registry.roll_back_rollout(MODEL, canary.id, "median ratio 3.00 > 1.10", evidence)
    assert back is not None and (back.status, back.live_percent) == ("rolled_back", 0.0)
    assert registry.roll_back_rollout(MODEL, canary.id, "again", evidence) is None
    event = registry.audit_log(MODEL)[-2]
    assert (event.action, event.actor, event.after["median_ratio"]) == (
        "rollout.rollback",
        "guards",
        3.0,
    )
    assert registry.get_model(MODEL).aliases == {"champion": 1}

    registry.start_rollout(MODEL, 2, mode="shadow")
    registry.transition_stage(MODEL, 1, "Archived")  # Production emptied: the rollout ends
    ended = registry.get_rollout(MODEL)
    assert (ended.status, ended.reason) == ("aborted", "version 1 left Production")
    assert registry.get_model(MODEL).aliases == {}


def test_plans_are_checked() -> None:
    with pytest.raises(rk.InvalidInputError, match="steps must rise and end at 100"):
        rk.RolloutPlan.build("staged", steps="10,5,100")
    with pytest.raises(rk.InvalidInputError, match="a staged rollout takes steps, not percent"):
        rk.RolloutPlan.build("staged", percent=5)
    with pytest.raises(rk.InvalidInputError, match="bake 'soon': give a duration"):
        rk.RolloutPlan.build("staged", bake="soon")
    with pytest.raises(rk.InvalidInputError, match="percent must be more than 0 and at most 100"):
        rk.RolloutPlan.build("canary", percent=150)
    with pytest.raises(rk.InvalidInputError, match="unknown rollout mode 'blue'"):
        rk.RolloutPlan.build("blue")
    with pytest.raises(rk.InvalidInputError, match="median_ratio must be"):
        rk.Guards(median_ratio=(1.2, 1.5))
    with pytest.raises(rk.InvalidInputError, match="guards: unknown field"):
        rk.Guards.from_dict({"max_ratio": 2})
    plan = rk.RolloutPlan.build("staged", bake="2h", guards=rk.Guards(move=0.1))
    assert plan.steps == (1, 10, 50, 100) and plan.bake_seconds == 7200
    assert rk.RolloutPlan.from_json(plan.canonical()) == plan


def test_the_remote_client_starts_and_moves_rollouts_and_posts_outcomes(team, portfolio) -> None:
    from registries import token_of
    from remote_server import serving

    with serving(team["root"]) as url:
        dave, alice, carol, vic = (
            rk.Registry(url, token=token_of(team[who])) for who in ("dave", "alice", "carol", "vic")
        )
        with pytest.raises(rk.PermissionDeniedError, match="needs an approved Production request"):
            dave.start_rollout(MODEL, 2, mode="staged", bake="1h")
        plan = rk.RolloutPlan.build("staged", steps=[5, 100], bake="1h", key="policy_id")
        request = alice.request_promotion(
            MODEL, 2, "Production", holdout=portfolio.iloc[2000:], rollout=plan
        )
        assert request.rollout == plan.to_dict()
        carol.approve(request.id)
        started = dave.start_rollout(MODEL, 2, mode="staged", steps=[5, 100], bake="1h",
                                     key="policy_id")  # fmt: skip
        assert (started.percent, started.request_id, started.key) == (5.0, request.id, "policy_id")
        assert dave.get_rollout(MODEL) == started
        assert dave.pause_rollout(MODEL, comment="look first").status == "paused"
        assert dave.resume_rollout(MODEL).status == "active"
        with pytest.raises(rk.PermissionDeniedError, match="may not rollback"):
            vic.abort_rollout(MODEL, reason="no")
        aborted = dave.abort_rollout(MODEL, reason="enough")
        assert (aborted.status, aborted.reason) == ("aborted", "enough")
        assert [e["kind"] for e in dave.rollout_events(MODEL)] == [
            "start", "pause", "resume", "abort"
        ]  # fmt: skip

        quote_id = "01JD0000000000000000000000"
        recorded = dave.record_outcome(quote_id, taken_up=True, written_premium=412.5)
        assert (recorded["quote_id"], recorded["taken_up"], recorded["recorded_by"]) == (
            quote_id, True, "dave"
        )  # fmt: skip
        with pytest.raises(rk.ConflictError, match="is already recorded"):
            dave.record_outcome(quote_id, taken_up=False)
        with pytest.raises(rk.PermissionDeniedError, match="may not record quote outcomes"):
            vic.record_outcome("01JD0000000000000000000001", taken_up=False)
        with pytest.raises(rk.InvalidInputError, match="a quote id is 26 characters"):
            dave.record_outcome("nope", taken_up=False)
        report = dave.rollout_report(MODEL)
        assert report["rollout"]["status"] == "aborted"
        for handle in (dave, alice, carol, vic):
            handle.close()


def run(capsys, *args: str) -> tuple[int, str, str]:
    from ratekeeper.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def test_the_cli_starts_shows_moves_and_reports_a_rollout(tmp_path, portfolio, capsys) -> None:
    folder = tmp_path / "registry"
    registry = open_registry(folder, user="root")
    for rows in (slice(0, 2000), slice(0, 1800)):
        train = portfolio.iloc[rows]
        registry.register_model(train_glm(train), MODEL, training_data=train, exposure="exposure")
    registry.transition_stage(MODEL, 1, "Production")
    reg = ("--registry", str(folder), "--user", "root")
    code, out, _ = run(capsys, *reg, "rollout", "start", MODEL, "2", "--mode", "staged",
                       "--steps", "5,100", "--bake", "10m")  # fmt: skip
    assert code == 0 and "staged 5 % → 100 %, each held 10m against version 1" in out
    code, out, _ = run(capsys, *reg, "rollout", "status", MODEL)
    assert code == 0 and "active" in out and "5 % (live 5 %)" in out
    assert run(capsys, *reg, "rollout", "pause", MODEL)[1].strip().endswith(": paused")
    code, _, err = run(capsys, *reg, "rollout", "pause", MODEL)
    assert (code, err.strip()) == (4, f"error: the rollout of {MODEL} version 2 is paused")
    code, out, _ = run(capsys, *reg, "rollout", "abort", MODEL, "--reason", "<b>odd</b>")
    assert code == 0 and out.strip().endswith("aborted (<b>odd</b>)")
    page = tmp_path / "report.html"
    assert run(capsys, *reg, "rollout", "report", MODEL, "-o", str(page))[0] == 0
    html = page.read_text()
    assert "&lt;b&gt;odd&lt;/b&gt;" in html and "<b>odd</b>" not in html
    assert "<svg" in html and "<script" not in html
    code, _, err = run(capsys, *reg, "rollout", "start", MODEL, "2", "--mode", "blue")
    assert code == 2 and "Invalid value for '--mode'" in err
    registry.close()
