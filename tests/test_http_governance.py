"""The promotion workflow over HTTP: bearer tokens, the same roles, 401 / 403 / 409."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.http.app import AppConfig, create_app
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio
from registries import governed_team, token_of

MODEL = "motor_frequency"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    book = motor_portfolio(3000, seed=9)
    train, holdout = book.iloc[:2000], book.iloc[2000:]
    team = governed_team(
        tmp_path_factory.mktemp("gov"), {"alice": ["modeller"], "carol": ["approver"]}
    )
    admin = team["root"]
    team["alice"].register_model(
        train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
    )
    tokens = {name: token_of(team[name]) for name in ("alice", "carol")}
    rows = holdout[[*RATING_FACTORS, "exposure", "claim_count"]].copy()
    for name in ("area", "fuel", "cover"):
        rows[name] = rows[name].astype(str)
    client = TestClient(create_app(admin))
    return admin, tokens, rows.to_dict("records"), client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_the_workflow_end_to_end_with_the_same_rules(world) -> None:
    admin, tokens, holdout, client = world
    body = {
        "model": MODEL,
        "version": 1,
        "stage": "Production",
        "holdout": holdout,
        "comment": "2027 tariff",
    }
    assert client.post("/v1/requests", json=body).status_code == 401
    assert client.post("/v1/requests", json=body, headers=bearer("rk_nope_x")).status_code == 401
    created = client.post("/v1/requests", json=body, headers=bearer(tokens["alice"]))
    assert created.status_code == 201, created.text
    request = created.json()
    assert (request["status"], request["requested_by"], request["gates_passed"]) == (
        "pending",
        "alice",
        True,
    )
    url = f"/v1/requests/{request['id']}"

    # the modeller's own token cannot approve: 403 with the reason
    denied = client.post(f"{url}/approve", headers=bearer(tokens["alice"]))
    assert denied.status_code == 403
    assert denied.json()["error"]["message"] == (
        "alice (modeller) may not approve: that needs the approver role"
    )
    report = client.get(f"{url}/report", headers=bearer(tokens["carol"]))
    assert report.status_code == 200 and "<svg" in report.text
    approved = client.post(
        f"{url}/approve", json={"comment": "signed off"}, headers=bearer(tokens["carol"])
    )
    assert approved.status_code == 200 and approved.json()["decided_by"] == "carol"
    assert admin.get_version(MODEL, 1).stage == rk.Stage.PRODUCTION
    again = client.post(f"{url}/approve", headers=bearer(tokens["carol"]))
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    listed = client.get("/v1/requests", params={"model": MODEL}, headers=bearer(tokens["alice"]))
    assert [r["status"] for r in listed.json()["requests"]] == ["approved"]
    audit = client.get("/v1/audit", params={"model": MODEL}, headers=bearer(tokens["alice"]))
    assert [e["action"] for e in audit.json()["events"]][-4:] == [
        "request",
        "approve",
        "stage",
        "alias.follow",
    ]
    assert client.get("/v1/audit/verify", headers=bearer(tokens["carol"])).json()["ok"] is True


def test_a_revoked_token_stops_working(world) -> None:
    admin, tokens, _, client = world
    token = rk.Registry(admin.url, token=tokens["carol"]).create_token(description="spare")
    admin.revoke_token(token.split("_")[1])
    response = client.get("/v1/requests", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "the bearer token is unknown or revoked"


def test_a_holdout_is_spooled_privately_and_never_left_behind(world) -> None:
    # The body of a promotion request travels to the request process as a spooled file
    # (http/isolated.py): 0700 folder, 0600 file, deleted whatever the request's fate.
    admin, tokens, holdout, _ = world
    client = TestClient(create_app(admin, AppConfig(max_holdout_bytes=50_000)))
    alice = bearer(tokens["alice"])
    with client:
        big = {"model": MODEL, "version": 1, "stage": "Production", "holdout": holdout}
        too_large = client.post("/v1/requests", json=big, headers=alice)
        assert too_large.status_code == 413, too_large.text
        assert too_large.json()["error"]["message"] == "the request body exceeds 50,000 bytes"
        broken = client.post("/v1/requests", content=b'{"model": ', headers=alice)
        assert broken.status_code == 400
        assert broken.json()["error"]["code"] == "malformed_json"
        small = {**big, "holdout": holdout[:5]}
        refused = client.post("/v1/requests", json=small, headers=alice)
        assert refused.status_code in (409, 422), refused.text  # v1 is already in Production
        spool = client.app.state.requests_process.spool
        assert spool is not None and spool.stat().st_mode & 0o777 == 0o700
        assert list(spool.iterdir()) == []
    assert not spool.exists()  # removed at shutdown
