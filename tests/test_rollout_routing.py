"""The engine side of rollouts with real scorers: the sticky split, the shadow, the guards."""

from __future__ import annotations

import hashlib
import time

import pytest

import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.engine.deployments import Deployments
from ratekeeper.rollouts import hashing
from ratekeeper.rollouts.routing import RolloutEngine
from ratekeeper.synthetic import RATING_FACTORS
from registries import open_registry

MODEL = "motor_frequency"


@pytest.mark.parametrize("percent", [1, 10, 50])
def test_the_split_over_10000_keys_is_within_half_a_point_and_recomputable(percent) -> None:
    keys = [f"P{i:06d}" for i in range(10_000)]
    chosen = [hashing.bucket(MODEL, key) < hashing.threshold(percent) for key in keys]
    assert abs(100 * sum(chosen) / len(keys) - percent) <= 0.5
    # What IT recomputes from the docs: SHA-256 of "model\x1fkey", first 8 bytes, mod 10,000.
    digest = hashlib.sha256(f"{MODEL}\x1f{keys[7]}".encode()).digest()
    assert hashing.bucket(MODEL, keys[7]) == int.from_bytes(digest[:8], "big") % 10_000
    # Sticky as the share grows: a challenger at 1 % is still one at 10 and 50 %.
    low = {k for k in keys if hashing.bucket(MODEL, k) < hashing.threshold(1)}
    assert all(hashing.bucket(MODEL, k) < hashing.threshold(percent) for k in low)


def test_without_a_key_the_rating_factors_decide() -> None:
    policy = {"area": "C", "fuel": "Diesel", "driver_age": 40}
    factors = ("area", "fuel", "driver_age")
    assert hashing.policy_key(policy, "policy_id", factors) == "C\x1fDiesel\x1f40"
    assert hashing.policy_key({**policy, "policy_id": "P-1"}, "policy_id", factors) == "P-1"


@pytest.fixture
def served(tmp_path, portfolio):
    """An open registry: version 1 in Production, version 2 pricing three times higher."""
    registry = open_registry(tmp_path / "registry", user="root")
    train = portfolio.iloc[:2000]
    registry.register_model(train_glm(train), MODEL, training_data=train, exposure="exposure")
    tripled = train.assign(claim_count=train["claim_count"] * 3)
    registry.register_model(train_glm(tripled), MODEL, training_data=tripled, exposure="exposure")
    registry.transition_stage(MODEL, 1, "Production")
    yield registry
    registry.close()


def policies(portfolio, n: int) -> list[dict]:
    frame = portfolio.iloc[:n][[*RATING_FACTORS, "exposure"]]  # within the training ranges
    return frame.to_dict("records")


def follow(registry: rk.Registry, engine: RolloutEngine) -> Deployments:
    deployments = Deployments(
        registry, on_refresh=lambda d: engine.update(d.served_table(), d.rollouts)
    )
    deployments.refresh(force=True)
    return deployments


def test_a_challenger_pricing_three_times_higher_is_rolled_back_by_the_premium_guard(
    served, portfolio
) -> None:
    guards = rk.Guards(min_quotes=30, sample=1.0, max_p99_ms=10_000)
    rollout = served.start_rollout(MODEL, 2, mode="canary", percent=30, guards=guards)
    engine = RolloutEngine(served)
    follow(served, engine)
    route = engine.route(MODEL)
    assert route is not None
    arms = [engine.price(route, p, None, "quote").arm for p in policies(portfolio, 200)]
    assert 0.2 < arms.count("challenger") / len(arms) < 0.4
    deadline = time.monotonic() + 5
    while engine.route(MODEL) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.close()
    assert engine.route(MODEL) is None
    (name, rollout_id, why) = engine.rollbacks[0]
    assert (name, rollout_id) == (MODEL, rollout.id)
    assert why.startswith("median premium ratio 3.")
    back = served.get_rollout(MODEL)
    assert (back.status, back.reason) == ("rolled_back", why)
    assert served.audit_log(MODEL)[-2].actor == "guards"


def test_a_shadow_prices_every_quote_in_the_background_and_hands_both_prices_on(
    served, portfolio
) -> None:
    served.start_rollout(MODEL, 2, mode="shadow", guards=rk.Guards(median_ratio=(0.1, 10), move=5))
    seen: list[tuple] = []
    engine = RolloutEngine(
        served,
        on_shadow=lambda qid, _e, champion, _p, price, challenger, other: seen.append(
            (qid, champion.version, price, challenger.version, other)
        ),
    )
    follow(served, engine)
    route = engine.route(MODEL)
    priced = [
        engine.price(route, p, f"q{i}", "quote") for i, p in enumerate(policies(portfolio, 50))
    ]
    engine.close()
    assert {p.arm for p in priced} == {"champion"}
    assert len(seen) == 50
    by_id = {s[0]: s for s in seen}
    for i, p in enumerate(priced):
        _id, champion, price, challenger, other = by_id[f"q{i}"]
        assert (champion, challenger, price) == (1, 2, p.price)
        assert other == pytest.approx(3 * price, rel=0.35)
    assert route.stats.compared == 50 and route.stats.shadow_priced == 50
