"""The remote registry client: a team works through a real rating server, with tokens only.

``rk.Registry("http://...", token=...)`` must behave like the embedded registry: same results,
same typed errors with the same messages, and no write without a valid token.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

import ratekeeper as rk
from ratekeeper.cli.main import main
from ratekeeper.registry.remote import RemoteRegistry
from ratekeeper.synthetic import RATING_FACTORS
from registries import governed_team, token_of
from remote_server import serving

TEAM = {"mo": ["modeller"], "ap": ["approver"], "both": ["modeller", "approver"]}


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A governed registry served by a rating server; ``url`` plus one embedded handle each."""
    monkeypatch.delenv("RATEKEEPER_TOKEN", raising=False)
    handles = governed_team(tmp_path / "registry", TEAM)
    opened: list[rk.Registry] = []
    with serving(handles["root"]) as url:
        yield {"url": url, "opened": opened, **handles}
        for handle in opened:
            handle.close()
    for handle in handles.values():
        handle.close()


def client(team: dict[str, Any], **options: Any) -> rk.Registry:
    """``rk.Registry(url, ...)``, closed after the test."""
    handle = rk.Registry(team["url"], **options)
    team["opened"].append(handle)
    return handle


def remote(team: dict[str, Any], who: str) -> rk.Registry:
    return client(team, token=token_of(team[who]))


def register(registry: rk.Registry, model: Any, data: Any) -> rk.ModelVersion:
    return registry.register_model(
        model,
        "motor",
        training_data=data,
        target="claim_count",
        exposure="exposure",
        id_column="policy_id",
    )


def raw(url: str, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    """One request with the standard library, to see statuses the client turns into errors."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    kind = response.getheader("content-type", "")
    return response.status, json.loads(body) if kind.startswith("application/json") else body


def refusal(call: Any) -> tuple[type[Exception], str]:
    with pytest.raises(rk.RatekeeperError) as caught:
        call()
    return type(caught.value), caught.value.message


# -- the team's workflow --------------------------------------------------------------------------
def test_a_team_promotes_through_the_rating_server_with_tokens_only(
    team: dict[str, Any], motor_glm: Any, portfolio: Any
) -> None:
    modeller, approver = remote(team, "mo"), remote(team, "ap")
    assert isinstance(modeller, RemoteRegistry)
    assert (modeller.user, modeller.policy) == ("mo", "governed")

    version = register(modeller, motor_glm, portfolio)
    assert (version.name, version.version, version.created_by) == ("motor", 1, "mo")
    assert team["root"].get_version("motor", 1) == version  # what the server stored

    request = modeller.request_promotion("motor", 1, "Production", holdout=portfolio)
    assert (request.status, request.gates_passed, request.requested_by) == ("pending", True, "mo")
    assert modeller.request_report(request.id).to_dict() == (
        team["root"].request_report(request.id).to_dict()
    )

    # The modeller may not approve: the same typed error, with the same message, both ways.
    embedded = refusal(lambda: team["mo"].approve(request.id))
    assert refusal(lambda: modeller.approve(request.id)) == embedded
    assert embedded == (
        rk.PermissionDeniedError,
        "mo (modeller) may not approve: that needs the approver role",
    )

    approved = approver.approve(request.id, comment="signed off")
    assert (approved.status, approved.decided_by) == ("approved", "ap")
    assert modeller.get_version("motor", 1).stage == rk.Stage.PRODUCTION
    assert modeller.production_at("motor", datetime.now(UTC)).request == approved
    assert [(t.to_stage, t.actor) for t in modeller.get_transitions("motor", 1)] == [
        (rk.Stage.PRODUCTION, "ap")
    ]

    # Priced through the remote handle (blobs downloaded and verified here) as embedded.
    head = portfolio.head(200)
    here = modeller.load_model("models:/motor/Production").predict(head)
    there = team["root"].load_model("models:/motor/Production").predict(head)
    np.testing.assert_array_equal(here, there)
    expected = motor_glm.predict(head[list(RATING_FACTORS)]) * head["exposure"].to_numpy()
    np.testing.assert_allclose(here, expected, rtol=1e-9)

    actions = [(e.actor, e.action) for e in approver.audit_log("motor")]
    assert actions == [
        ("mo", "register"),
        ("mo", "request"),
        ("ap", "approve"),
        ("ap", "stage"),
        ("ap", "alias.follow"),  # champion onto the new Production version
    ]
    verified = approver.verify_audit()
    assert (verified.ok, verified.sealed) == (True, True)


def test_four_eyes_holds_remotely_with_the_embedded_message(
    team: dict[str, Any], motor_glm: Any, portfolio: Any
) -> None:
    both = remote(team, "both")
    register(both, motor_glm, portfolio)
    request = both.request_promotion("motor", 1, "Production", holdout=portfolio)

    embedded = refusal(lambda: team["both"].approve(request.id))
    assert refusal(lambda: both.approve(request.id)) == embedded
    assert embedded == (
        rk.PermissionDeniedError,
        "four-eyes: both created motor version 1 and may not approve its promotion",
    )
    # A direct move to Production is refused the same way too.
    embedded = refusal(lambda: team["both"].transition_stage("motor", 1, "Production"))
    assert refusal(lambda: both.transition_stage("motor", 1, "Production")) == embedded
    assert embedded[0] is rk.PermissionDeniedError
    assert both.get_request(request.id).status == "pending"
    assert both.get_version("motor", 1).stage == rk.Stage.NONE


def test_a_handle_without_a_token_is_refused(
    team: dict[str, Any], motor_glm: Any, portfolio: Any
) -> None:
    nobody = client(team, user="ap")  # a name is not a credential
    missing = "send a bearer token: Authorization: Bearer rk_..."
    for call in (
        lambda: register(nobody, motor_glm, portfolio),
        lambda: nobody.set_alias("motor", "challenger", 1),
        lambda: nobody.list_models(),
    ):
        assert refusal(call) == (rk.PermissionDeniedError, missing)

    forged = client(team, token="rk_00000000_forged")
    assert refusal(forged.list_models) == (
        rk.PermissionDeniedError,
        "the bearer token is unknown or revoked",
    )
    assert team["root"].list_models() == []


def test_roles_are_the_servers_not_the_clients(
    team: dict[str, Any], motor_glm: Any, portfolio: Any
) -> None:
    approver = remote(team, "ap")
    embedded = refusal(lambda: register(team["ap"], motor_glm, portfolio))
    assert refusal(lambda: register(approver, motor_glm, portfolio)) == embedded
    assert embedded == (
        rk.PermissionDeniedError,
        "ap (approver) may not register: that needs the admin or modeller role",
    )
    assert team["root"].list_models() == []


# -- users, enrollment, tokens -------------------------------------------------------------------
def test_enrollment_over_http(team: dict[str, Any]) -> None:
    admin = remote(team, "root")
    added = admin.add_user("carol", ["viewer"])
    assert (added.name, added.roles, added.created_by) == ("carol", frozenset({"viewer"}), "root")
    assert added.enrollment_code.startswith("rke_")

    token = client(team).enroll(added.enrollment_code)
    carol = client(team, token=token)
    assert (carol.whoami().name, carol.whoami().roles) == ("carol", frozenset({"viewer"}))
    assert refusal(lambda: client(team).enroll(added.enrollment_code)) == (
        rk.PermissionDeniedError,
        "the enrollment code for carol was already redeemed: ask an admin for a new one",
    )
    assert refusal(lambda: carol.add_user("dave", ["admin"])) == (
        rk.PermissionDeniedError,
        "carol (viewer) may not manage users: that needs the admin role",
    )

    second = carol.create_token(description="laptop")
    mine = [t for t in admin.list_tokens() if t.user == "carol"]
    assert [t.description for t in mine] == ["enrollment", "laptop"]
    revoked = client(team, token=second).revoke_token(mine[1].prefix)
    assert (revoked.user, revoked.revoked_at is not None) == ("carol", True)

    admin.set_roles("carol", ["viewer", "deployer"])
    assert {u.name: u.roles for u in admin.list_users()}["carol"] == {"viewer", "deployer"}
    actions = [e.action for e in admin.audit_log(limit=6)]  # the latest, oldest first
    assert actions == [
        "user.add",
        "enroll",
        "enroll.refused",
        "token.create",
        "token.revoke",
        "user.roles",
    ]


def test_protected_aliases_over_http(team: dict[str, Any]) -> None:
    admin = remote(team, "root")
    assert admin.protected_aliases() == frozenset({"champion"})
    admin.protect_alias("gold")
    assert admin.protected_aliases() == frozenset({"champion", "gold"})
    admin.unprotect_alias("gold")
    assert team["root"].protected_aliases() == frozenset({"champion"})
    assert refusal(lambda: remote(team, "mo").protect_alias("gold")) == (
        rk.PermissionDeniedError,
        "mo (modeller) may not manage users: that needs the admin role",
    )


# -- the CLI --------------------------------------------------------------------------------------
def test_the_cli_works_against_a_rating_server(
    team: dict[str, Any],
    motor_glm: Any,
    portfolio: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register(remote(team, "mo"), motor_glm, portfolio)
    monkeypatch.setenv("RATEKEEPER_TOKEN", token_of(team["mo"]))
    with pytest.raises(SystemExit) as done:
        main(["--registry", team["url"], "versions", "show", "motor", "1", "--json"])
    assert done.value.code == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["name"], shown["version"], shown["created_by"]) == ("motor", 1, "mo")
    assert shown == team["root"].get_version("motor", 1).to_dict()


def test_a_registry_url_is_refused_where_it_cannot_apply(team: dict[str, Any]) -> None:
    with pytest.raises(
        rk.InvalidInputError, match=r"^a registry behind a rating server is created"
    ):
        rk.Registry.create(team["url"], admin="x")
    with pytest.raises(rk.InvalidInputError, match=r"^a remote registry keeps its artifacts on"):
        rk.Registry(team["url"], artifacts="elsewhere")
    with pytest.raises(rk.InvalidInputError, match=r"^a registry server URL has no query"):
        rk.Registry("http://user:secret@127.0.0.1:1/", token="t")
    with pytest.raises(rk.UnavailableError, match=r"^cannot reach the registry server at http://"):
        rk.Registry("http://127.0.0.1:9", token="t").list_models()


def test_the_registry_setting_may_name_a_rating_server(
    team: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATEKEEPER_REGISTRY_URI", team["url"])
    monkeypatch.setenv("RATEKEEPER_TOKEN", token_of(team["mo"]))
    handle = rk.Registry()
    assert handle.url == team["url"].rstrip("/") and handle.user == "mo"
    handle.close()
