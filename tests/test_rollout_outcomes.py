"""Quote outcomes, the conversion test (checked against scipy) and the comparison report, through
the in-process app with a real ledger."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient
from scipy import stats
from tests.http_helpers import bearer_tokens

import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.engine.ledger import LedgerConfig
from ratekeeper.http.app import AppConfig, create_app
from ratekeeper.rollouts.outcomes import sample_size, two_proportions
from ratekeeper.rollouts.report import render_html
from ratekeeper.synthetic import CATEGORICAL_FACTORS, RATING_FACTORS, motor_portfolio
from registries import open_registry

MODEL = "motor_frequency"


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"), [(120, 1000, 150, 1000), (30, 400, 31, 380), (5, 60, 19, 70)]
)
def test_the_two_proportion_test_agrees_with_scipy(x1, n1, x2, n2) -> None:
    test = two_proportions(x1, n1, x2, n2)
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    chi2, p_value, _dof, _expected = stats.chi2_contingency(table, correction=False)
    assert test.z**2 == pytest.approx(chi2, rel=1e-9)
    assert test.p_value == pytest.approx(p_value, rel=1e-9)
    p1, p2 = x1 / n1, x2 / n2
    z_a, z_b = stats.norm.ppf(0.975), stats.norm.ppf(0.80)
    mean = (p1 + p2) / 2
    spread = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    needed = spread**2 / (p1 - p2) ** 2
    assert test.needed_per_arm == math.ceil(needed)
    assert test.still_needed == max(0, math.ceil(needed) - min(n1, n2))


def test_no_difference_needs_no_sample_and_no_quotes_give_no_rate() -> None:
    assert sample_size(0.2, 0.2) is None
    empty = two_proportions(0, 0, 3, 10)
    assert (empty.p1, empty.z, empty.p_value, empty.needed_per_arm) == (None, None, None, None)


@pytest.fixture
def world(tmp_path):
    book = motor_portfolio(1500, seed=9)
    registry = open_registry(tmp_path / "registry", user="root")
    other = book.assign(claim_count=book["claim_count"].where(book["policy_id"] % 6 != 0, 0))
    for data in (book, other):
        registry.register_model(
            train_glm(data), MODEL, training_data=data, exposure="exposure", id_column="policy_id"
        )
    registry.transition_stage(MODEL, 1, "Production")
    rows = book[[*RATING_FACTORS, "exposure", "policy_id"]].to_dict("records")
    sent = [{k: (str(v) if k in CATEGORICAL_FACTORS else v) for k, v in r.items()} for r in rows]
    yield registry, sent, tmp_path
    registry.close()


def test_outcomes_give_conversion_per_arm_in_the_report(world) -> None:
    registry, sent, folder = world
    tokens = bearer_tokens(registry)
    admin, viewer = {"authorization": tokens["admin"]}, {"authorization": tokens["viewer"]}
    calm = rk.Guards(median_ratio=(0.5, 2), move=1.0, max_moved_share=1.0, max_p99_ms=10_000)
    registry.start_rollout(MODEL, 2, mode="canary", percent=50, guards=calm)
    ledger = folder / "ledger"
    app = create_app(registry, AppConfig(ledger=LedgerConfig(ledger, flush_interval=0.1)))
    assert app.state.load_models()
    arms: dict[str, str] = {}
    with TestClient(app) as client:
        assert client.get(f"/v1/models/{MODEL}/rollout").status_code == 401
        state = client.get(f"/v1/models/{MODEL}/rollout", headers=viewer).json()
        assert (state["rollout"]["mode"], state["served_here"]["percent"]) == ("canary", 50.0)
        for policy in sent[:300]:
            answer = client.post(f"/v1/models/{MODEL}/quote", json=policy).json()
            assert answer["version"] == (2 if answer["arm"] == "challenger" else 1)
            arms[answer["quote_id"]] = answer["arm"]
        scored = client.post(f"/v1/models/{MODEL}/score", json=sent[:4]).json()
        assert scored["arm"] == "rollout"
        assert [r["arm"] for r in scored["results"]] == [
            rk.rollouts.hashing.arm_of(MODEL, p, 50, "policy_id", RATING_FACTORS) for p in sent[:4]
        ]
        # The challenger's quotes are taken up more often: every one, against every other.
        for i, (quote_id, arm) in enumerate(arms.items()):
            body = {"taken_up": arm == "challenger" or i % 2 == 0}
            response = client.post(f"/v1/quotes/{quote_id}/outcome", json=body, headers=admin)
            assert response.status_code == 201, response.text
        first = next(iter(arms))

        def post(quote_id: str, body: dict, headers: dict | None) -> tuple[int, str]:
            response = client.post(f"/v1/quotes/{quote_id}/outcome", json=body, headers=headers)
            return response.status_code, response.json()["error"]["code"]

        taken = {"taken_up": True}
        assert [
            post(first, taken, None),
            post(first, taken, viewer),  # in an open registry too: the server checks the role
            post(first, taken, admin),  # one outcome per quote
            post("x", taken, admin),
            post(first, {"taken_up": "yes"}, admin),
            post(first, {"taken_up": False, "x": 1}, admin),
        ] == [
            (401, "unauthenticated"),
            (403, "permission_denied"),
            (409, "conflict"),
            (422, "invalid_input"),
            (422, "invalid_input"),
            (422, "invalid_input"),
        ]
    report = registry.rollout_report(MODEL, ledger=ledger)
    conversion = report["conversion"]
    challenger = sum(arm == "challenger" for arm in arms.values())
    champion = len(arms) - challenger
    scored = _challengers(sent[:4])  # the four quotes of /score, without outcomes
    assert conversion["quotes"] == {
        "champion": champion + 4 - scored,
        "challenger": challenger + scored,
    }
    assert conversion["with_outcome"] == {"champion": champion, "challenger": challenger}
    assert conversion["taken_up"]["challenger"] == challenger
    assert conversion["test"]["p2"] == 1.0 and 0.3 < conversion["test"]["p1"] < 0.7
    assert conversion["test"]["p_value"] < 1e-6
    html = render_html(report)
    assert "Two-proportion z-test" in html and "<svg" in html


def _challengers(policies: list[dict]) -> int:
    return sum(
        rk.rollouts.hashing.arm_of(MODEL, p, 50, "policy_id", RATING_FACTORS) == "challenger"
        for p in policies
    )
