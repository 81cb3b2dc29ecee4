"""Rollouts under attack: who may move them over HTTP, crafted keys and bodies, the outcome door."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.http.app import AppConfig, create_app
from ratekeeper.synthetic import CATEGORICAL_FACTORS, RATING_FACTORS, motor_portfolio
from registries import governed_team, token_of

MODEL = "motor_frequency"
LENIENT = rk.GatePolicy(
    deviance_margin=1.0, gini_margin=1.0, dislocation_cap_10=1.0, dislocation_cap_25=1.0
)


@pytest.fixture
def served(tmp_path):
    book = motor_portfolio(1500, seed=3)
    team = governed_team(
        tmp_path / "registry",
        {"alice": ["modeller"], "carol": ["approver"], "dave": ["deployer"], "vic": ["viewer"]},
        gate_policy=LENIENT,
    )
    for data in (book, book.assign(claim_count=book["claim_count"] * 2)):
        team["alice"].register_model(
            train_glm(data), MODEL, training_data=data, target="claim_count", exposure="exposure"
        )
    request = team["alice"].request_promotion(MODEL, 1, "Production", holdout=book)
    team["carol"].approve(request.id)
    app = create_app(team["root"], AppConfig())
    assert app.state.load_models()
    headers = {who: {"authorization": f"Bearer {token_of(team[who])}"} for who in team}
    rows = book[[*RATING_FACTORS, "exposure"]].head(5).to_dict("records")
    sent = [{k: (str(v) if k in CATEGORICAL_FACTORS else v) for k, v in r.items()} for r in rows]
    with TestClient(app) as client:
        yield team, client, headers, sent
    for handle in team.values():
        handle.close()


def test_only_the_roles_that_may_move_a_rollout_do(served) -> None:
    team, client, headers, _sent = served
    start = f"/v1/registry/models/{MODEL}/rollout"
    shadow = {"version": 2, "mode": "shadow"}
    assert client.post(start, json=shadow).status_code == 401
    for who in ("vic", "alice", "carol"):  # viewer, modeller, approver: not a deployer
        response = client.post(start, json=shadow, headers=headers[who])
        assert response.status_code == 403, who
        assert "may not rollout" in response.json()["error"]["message"]
    canary = client.post(start, json={**shadow, "mode": "canary"}, headers=headers["dave"])
    assert canary.status_code == 403  # no approved request carried a plan
    assert client.post(start, json=shadow, headers=headers["dave"]).status_code == 201
    assert client.post(f"{start}/pause", headers=headers["vic"]).status_code == 403
    # the kill switch: an approver may abort, a viewer may not
    assert (
        client.post(f"{start}/abort", json={"reason": "x"}, headers=headers["vic"]).status_code
        == 403
    )
    aborted = client.post(f"{start}/abort", json={"reason": "stop"}, headers=headers["carol"])
    assert (aborted.status_code, aborted.json()["status"]) == (200, "aborted")
    assert team["root"].verify_audit().ok


def test_crafted_bodies_get_a_4xx_and_crafted_keys_a_price(served) -> None:
    _team, client, headers, sent = served
    start = f"/v1/registry/models/{MODEL}/rollout"
    for body, status in [
        ([1, 2], 400),
        ({"version": "2", "mode": "shadow"}, 400),
        ({"version": 2**70, "mode": "shadow"}, 400),
        (b'{"version": 2, "mode": "shadow", "percent": 1e999}', 400),  # no JSON infinity
        ({"version": 2, "mode": "shadow", "percent": 0}, 422),
        ({"version": 2, "mode": "shadow", "guards": {"sample": 2}}, 422),
        ({"version": 2, "mode": "shadow", "guards": {"webhook": "file:///etc/passwd"}}, 422),
        ({"version": 2, "mode": "staged", "steps": "1,x"}, 422),
        ({"version": 2, "mode": "shadow", "extra": 1}, 422),
    ]:
        if isinstance(body, bytes):
            sent_headers = {**headers["dave"], "content-type": "application/json"}
            response = client.post(start, content=body, headers=sent_headers)
        else:
            response = client.post(start, json=body, headers=headers["dave"])
        assert (response.status_code, set(response.json())) == (status, {"error"}), body
    client.post(start, json={"version": 2, "mode": "shadow", "key": "policy_id"},
                headers=headers["dave"])  # fmt: skip
    for key in ("x" * 100_000, {"nested": [1, 2]}, None, "<script>"):
        answer = client.post(f"/v1/models/{MODEL}/quote", json={**sent[0], "policy_id": key})
        # The signature does not know policy_id: refused as an unknown field, never a 500.
        assert answer.status_code in (200, 422), answer.text
    answer = client.post(f"/v1/models/{MODEL}/quote", json=sent[0]).json()
    assert (answer["arm"], answer["version"]) == ("champion", 1)
    json_headers = {**headers["dave"], "content-type": "application/json"}
    path = f"/v1/quotes/{answer['quote_id']}/outcome"
    outcome = client.post(path, content=b"[1]", headers=json_headers)
    assert outcome.status_code == 400
