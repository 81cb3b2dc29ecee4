"""Identity: a name alone never authorizes a governed write, and no one approves their own work.

Each test is an attack from issue 10 ("Identity is self-declared outside HTTP"), tried through
the Python API, the CLI and the environment, and held.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa

import ratekeeper as rk
from oidc_provider import LoopbackProvider
from ratekeeper.cli.main import main
from ratekeeper.demo import train_glm
from ratekeeper.registry.registry import os_account
from registries import governed_team, token_of

MODEL = "motor_frequency"
LENIENT = rk.GatePolicy(
    deviance_margin=1.0, gini_margin=1.0, dislocation_cap_10=1.0, dislocation_cap_25=1.0
)


@pytest.fixture
def team(tmp_path, portfolio):
    """root (admin), alice (modeller), carol (approver), dave (deployer); alice's version 1
    has a pending Production request."""
    team = governed_team(
        tmp_path / "reg",
        {"alice": ["modeller"], "carol": ["approver"], "dave": ["deployer"]},
        gate_policy=LENIENT,
    )
    train = portfolio.iloc[:2000]
    team["alice"].register_model(
        train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
    )
    team["request"] = team["alice"].request_promotion(
        MODEL, 1, "Production", holdout=portfolio.iloc[2000:]
    )
    yield team
    for name in ("root", "alice", "carol", "dave"):
        team[name].close()


def run_cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0), capsys.readouterr().err


def test_a_declared_name_does_not_approve_in_python(team, tmp_path) -> None:
    impostor = rk.Registry(tmp_path / "reg", user="carol")
    with pytest.raises(rk.PermissionDeniedError, match="governed: approve needs a credential"):
        impostor.approve(team["request"].id)
    with pytest.raises(rk.PermissionDeniedError, match="governed: approve needs a credential"):
        team["alice"].as_user("carol").approve(team["request"].id)
    impostor.close()
    assert team["root"].get_request(team["request"].id).status == "pending"


def test_a_declared_name_does_not_approve_in_the_cli(team, tmp_path, capsys) -> None:
    code, err = run_cli(
        capsys, "--registry", str(tmp_path / "reg"), "--user", "carol", "approve", "1"
    )
    assert code == 5
    assert err.startswith("error: this registry is governed: approve needs a credential")


def test_a_declared_name_in_the_environment_does_not_approve(team, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RATEKEEPER_TOKEN"}
    env["RATEKEEPER_USER"] = "carol"
    result = subprocess.run(
        [sys.executable, "-m", "ratekeeper", "--registry", str(tmp_path / "reg"), "approve", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 5
    assert "approve needs a credential" in result.stderr
    # ... while the same person's own token, in the environment, does approve.
    env["RATEKEEPER_TOKEN"] = token_of(team["carol"])
    result = subprocess.run(
        [sys.executable, "-m", "ratekeeper", "--registry", str(tmp_path / "reg"), "approve", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert team["root"].get_request(1).decided_by == "carol"


def test_an_admin_never_holds_another_users_token(team) -> None:
    # A user's token comes only from their own enrollment code or from themselves.
    token = team["root"].create_token(description="mine")
    assert team["root"].authenticate(token).name == "root"
    with pytest.raises(TypeError):
        team["root"].create_token("carol")  # type: ignore[misc]
    with team["root"].engine.connect() as conn:
        made = conn.execute(sa.text("SELECT created_by, user_id FROM tokens")).all()
        owners = dict(conn.execute(sa.text("SELECT id, name FROM users")).all())
    assert all(created_by == owners[user_id] for created_by, user_id in made)


def test_a_puppet_approver_made_by_the_requester_is_refused(team, portfolio) -> None:
    # root (admin) registers and requests, then creates a second account with the approver
    # role, enrolls it with the code it got, and tries to approve its own work through it.
    root = team["root"]
    root.set_roles("root", ["admin", "modeller"])
    train = portfolio.iloc[:1500]
    root.register_model(
        train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
    )
    request = root.request_promotion(MODEL, 2, "Staging", holdout=portfolio.iloc[2000:])
    assert request.status == "approved"  # Staging passes by the gates
    own = root.request_promotion(MODEL, 2, "Production", holdout=portfolio.iloc[2000:])
    code = root.add_user("puppet", ["approver"]).enrollment_code
    puppet = rk.Registry(root.url, token=rk.Registry(root.url).enroll(code))
    with pytest.raises(
        rk.PermissionDeniedError,
        match="four-eyes: root created the account puppet or gave it the approver role",
    ):
        puppet.approve(own.id)
    # Granting the approver role to an existing account is the same puppet.
    root.set_roles("dave", ["deployer", "approver"])
    with pytest.raises(rk.PermissionDeniedError, match="four-eyes: root created the account dave"):
        team["dave"].approve(own.id)
    puppet.close()


def test_an_enrollment_code_works_once_and_not_late_and_refusals_are_audited(team) -> None:
    root = team["root"]
    code = root.add_user("erin", ["viewer"]).enrollment_code
    anonymous = rk.Registry(root.url)
    assert anonymous.authenticate(anonymous.enroll(code)).name == "erin"
    with pytest.raises(rk.PermissionDeniedError, match="for erin was already redeemed"):
        anonymous.enroll(code)
    late = root.add_user("frank", ["viewer"], enrollment_lifetime=timedelta(0)).enrollment_code
    with pytest.raises(rk.PermissionDeniedError, match="the enrollment code for frank expired"):
        anonymous.enroll(late)
    with pytest.raises(rk.PermissionDeniedError, match="the enrollment code is unknown"):
        anonymous.enroll("rke_guess")
    refused = [e.comment for e in root.audit_log() if e.action == "enroll.refused"]
    assert len(refused) == 3
    assert refused[0].startswith("the enrollment code for erin was already redeemed")
    assert refused[1].startswith("the enrollment code for frank expired at")
    assert refused[2] == "the enrollment code is unknown"
    assert root.verify_audit().ok
    anonymous.close()


def test_role_grants_are_audited_with_who_granted_them(team) -> None:
    team["root"].set_roles("dave", ["deployer", "viewer"])
    event = team["root"].audit_log(limit=1)[0]
    assert (event.actor, event.action, event.target) == ("root", "user.roles", "dave")
    assert (event.before, event.after) == (
        {"roles": ["deployer"]},
        {"roles": ["deployer", "viewer"]},
    )


def test_a_deployer_alone_cannot_move_the_champion(team, portfolio) -> None:
    with pytest.raises(rk.PermissionDeniedError, match="alias 'champion' is protected"):
        team["dave"].set_alias(MODEL, "champion", 1)
    team["carol"].approve(team["request"].id)
    request = team["alice"].request_promotion(MODEL, 1, "@champion", holdout=portfolio.iloc[2000:])
    assert (request.alias, request.stage, request.status) == ("champion", None, "pending")
    with pytest.raises(rk.PermissionDeniedError, match=r"dave \(deployer\) may not approve"):
        team["dave"].approve(request.id)
    team["carol"].approve(request.id)
    assert team["root"].resolve(f"models:/{MODEL}@champion").version == 1
    # Back to a version an approved request pointed it at: allowed (the kill switch).
    team["dave"].delete_alias(MODEL, "champion")
    assert team["dave"].set_alias(MODEL, "champion", 1).version == 1
    # An unprotected alias needs no request.
    assert team["dave"].set_alias(MODEL, "challenger", 1).version == 1


def test_an_admin_may_pull_the_kill_switch(team, portfolio) -> None:
    team["carol"].approve(team["request"].id)
    train = portfolio.iloc[:1700]
    team["alice"].register_model(
        train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
    )
    second = team["alice"].request_promotion(MODEL, 2, "Production", holdout=portfolio.iloc[2000:])
    team["carol"].approve(second.id)
    assert team["root"].rollback(MODEL, comment="kill switch").version == 1


def test_os_identity_is_the_os_account_whatever_name_is_declared(tmp_path, portfolio) -> None:
    registry, _ = rk.Registry.create(tmp_path / "laptop", admin=os_account(), identity="os")
    declared = rk.Registry(tmp_path / "laptop", user="someone-else")
    train = portfolio.iloc[:1000]
    version = declared.register_model(
        train_glm(train), MODEL, training_data=train, exposure="exposure"
    )
    assert version.created_by == os_account()
    registry.close()
    declared.close()


def test_a_process_with_another_signing_key_cannot_write(team, tmp_path) -> None:
    wrong = rk.Registry(
        tmp_path / "reg",
        token=token_of(team["dave"]),
        settings=rk.Settings(home=tmp_path, audit_key="ab" * 32),
    )
    with pytest.raises(
        rk.PermissionDeniedError, match=r"sealed with key \w+, and this process holds key"
    ):
        wrong.set_alias(MODEL, "challenger", 1)
    wrong.close()


def test_the_registry_files_are_for_their_owner_only(team, tmp_path) -> None:
    folder = tmp_path / "reg"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("registry.db", "audit.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


def test_sso_identities_approve_under_four_eyes(tmp_path, portfolio) -> None:
    with LoopbackProvider() as idp:
        settings = idp.settings(
            tmp_path, roles={"pricing": ("modeller",), "chief-actuary": ("approver",)}
        )
        root, _ = rk.Registry.create(
            tmp_path / "sso", admin="root", settings=settings, gate_policy=LENIENT
        )
        alice = rk.Registry(
            tmp_path / "sso",
            token=idp.token(sub="alice", groups=["pricing"]),
            settings=settings,
            gate_policy=LENIENT,
        )
        train = portfolio.iloc[:2000]
        alice.register_model(
            train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
        )
        request = alice.request_promotion(MODEL, 1, "Production", holdout=portfolio.iloc[2000:])
        # The same person signed on with an approver group is still the requester.
        same = rk.Registry(
            tmp_path / "sso",
            token=idp.token(sub="alice", groups=["chief-actuary"]),
            settings=settings,
        )
        with pytest.raises(rk.PermissionDeniedError, match="four-eyes: alice created"):
            same.approve(request.id)
        carol = rk.Registry(
            tmp_path / "sso",
            token=idp.token(sub="carol", groups=["chief-actuary"]),
            settings=settings,
        )
        assert carol.approve(request.id).decided_by == "carol"
        with pytest.raises(
            rk.PermissionDeniedError, match="none of the person's groups is mapped to a ratekeeper"
        ):
            rk.Registry(
                tmp_path / "sso", token=idp.token(sub="mallory", groups=["x"]), settings=settings
            )
        for handle in (root, alice, same, carol):
            handle.close()


def test_sso_tokens_are_bearer_credentials_over_http(tmp_path, portfolio) -> None:
    from fastapi.testclient import TestClient

    from ratekeeper.http.app import create_app

    with LoopbackProvider() as idp:
        settings = idp.settings(tmp_path, roles={"chief-actuary": ("approver",)})
        team = governed_team(
            tmp_path / "web", {"alice": ["modeller"]}, settings=settings, gate_policy=LENIENT
        )
        train = portfolio.iloc[:2000]
        team["alice"].register_model(
            train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
        )
        request = team["alice"].request_promotion(
            MODEL, 1, "Production", holdout=portfolio.iloc[2000:]
        )
        client = TestClient(create_app(team["root"]))
        url = f"/v1/requests/{request.id}/approve"
        forged = idp.token(sub="carol", groups=["chief-actuary"])[:-4] + "AAAA"
        refused = client.post(url, headers={"authorization": f"Bearer {forged}"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
        token = idp.token(sub="carol", groups=["chief-actuary"])
        approved = client.post(url, headers={"authorization": f"Bearer {token}"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["decided_by"] == "carol"
        for handle in team.values():
            handle.close()


def test_an_admin_cannot_approve_work_done_through_an_account_they_made(team, portfolio) -> None:
    # The admin is handed every new user's enrollment code: they enroll a modeller account
    # themselves, register and request through it, make themselves an approver and approve.
    root = team["root"]
    code = root.add_user("sock", ["modeller"]).enrollment_code
    anonymous = rk.Registry(root.url)
    sock = rk.Registry(root.url, token=anonymous.enroll(code), gate_policy=LENIENT)
    train = portfolio.iloc[:1600]
    sock.register_model(
        train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
    )
    request = sock.request_promotion(MODEL, 2, "Production", holdout=portfolio.iloc[2000:])
    root.set_roles("root", ["admin", "approver"])
    with pytest.raises(
        rk.PermissionDeniedError, match="four-eyes: root created the account sock or gave it"
    ):
        root.approve(request.id)
    assert team["carol"].approve(request.id).decided_by == "carol"  # an independent approver
    for handle in (anonymous, sock):
        handle.close()
