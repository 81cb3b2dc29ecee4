"""Promotion gates on real fitted models registered in a real registry.

Expected values come from the in-memory scikit-learn / LightGBM models and scikit-learn's
metrics, not from the registry's scorers, so the gates are checked end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import PoissonRegressor, TweedieRegressor
from sklearn.metrics import mean_poisson_deviance, mean_tweedie_deviance
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

import ratekeeper as rk
from ratekeeper.demo import train_gbm, train_glm
from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.lineage import data_fingerprint
from ratekeeper.packaging.signature import CATEGORICAL, INTEGER, NUMERIC, Field, Signature
from ratekeeper.synthetic import (
    CATEGORICAL_FACTORS,
    NUMERIC_FACTORS,
    RATING_FACTORS,
    motor_portfolio,
)
from ratekeeper.validation import (
    GATES,
    GatePolicy,
    GateReport,
    gini,
    lift_table,
    prohibited_factors_used,
    run_gates,
    signature_changes,
)


def fit_glm(frame, categorical, numeric, regressor=None, target="claim_count"):
    prepare = ColumnTransformer(
        [("categorical", OneHotEncoder(drop="first"), list(categorical))]
        + ([("numeric", "passthrough", list(numeric))] if numeric else [])
    )
    glm = regressor or PoissonRegressor(alpha=1e-6, solver="newton-cholesky", max_iter=300)
    model = Pipeline([("prepare", prepare), ("glm", glm)])
    rate = frame[target] / frame["exposure"]
    model.fit(frame[[*categorical, *numeric]], rate, glm__sample_weight=frame["exposure"])
    return model


@pytest.fixture(scope="module")
def book():
    portfolio = motor_portfolio(12_000, seed=5)
    rng = np.random.default_rng(5)
    severity = rng.gamma(2.0, 900.0, len(portfolio))
    return portfolio.assign(cost=portfolio["claim_count"] * severity)


@pytest.fixture(scope="module")
def train(book):
    return book.iloc[:8000]


@pytest.fixture(scope="module")
def holdout(book, train):
    """The last third, within the training ranges (so every model prices every policy)."""
    rest = book.iloc[8000:]
    inside = np.ones(len(rest), dtype=bool)
    for name in NUMERIC_FACTORS:
        inside &= rest[name].between(train[name].min(), train[name].max()).to_numpy()
    return rest[inside].reset_index(drop=True)


@pytest.fixture(scope="module")
def models(train):
    return {
        "glm": train_glm(train),
        "gbm": train_gbm(train, n_trees=60),
        "gender": fit_glm(train, [*CATEGORICAL_FACTORS, "gender"], NUMERIC_FACTORS),
        # Rates on area alone, fitted to twice the claims: ranks worse and prices too high.
        "poor": fit_glm(train.assign(claim_count=2 * train["claim_count"]), ["area"], []),
        "tweedie": fit_glm(
            train,
            CATEGORICAL_FACTORS,
            NUMERIC_FACTORS,
            TweedieRegressor(power=1.5, link="log", alpha=1e-6, solver="newton-cholesky"),
            target="cost",
        ),
    }


@pytest.fixture(scope="module")
def registry(tmp_path_factory, train, models):
    registry = rk.Registry.create(tmp_path_factory.mktemp("gates"), admin="modeller")[0]
    for key in ("glm", "gbm", "gender", "poor"):  # versions 1..4 of freq
        registry.register_model(
            models[key], "freq", training_data=train, exposure="exposure", target="claim_count"
        )
    registry.register_model(
        models["tweedie"], "pure", training_data=train, exposure="exposure", target="cost"
    )
    yield registry
    registry.close()


def scorer(registry, version, name="freq"):
    return registry.load_model(f"models:/{name}/{version}")


def in_memory(model, frame):
    """Expected claims of the in-memory model: its rate × the exposure."""
    columns = getattr(model, "feature_names_in_", RATING_FACTORS)
    return np.asarray(model.predict(frame[list(columns)])) * frame["exposure"].to_numpy()


def test_a_first_promotion_has_no_comparative_gates(registry, models, holdout) -> None:
    report = run_gates(scorer(registry, 1), None, holdout, target="claim_count")
    assert [r.name for r in report.results] == list(GATES)
    statuses = {r.name: r.status for r in report.results}
    assert statuses == {
        "signature_compatibility": "N/A",
        "prohibited_factors": "PASS",
        "deviance": "N/A",
        "gini": "N/A",
        "lift": "PASS",
        "double_lift": "N/A",
        "dislocation_10": "N/A",
        "dislocation_25": "N/A",
        "stability": "PASS",
        "fairness": "PASS",
    }
    assert report.passed
    assert (report.model, report.challenger_version, report.champion_version) == ("freq", 1, None)
    assert report.holdout_rows == len(holdout)
    assert report.excluded_rows == 0
    assert report.challenger_digest == registry.get_version("freq", 1).artifact_digest
    assert report.champion_digest is None
    assert report.holdout_sha256 == data_fingerprint(holdout)["content_sha256"]
    assert report.holdout_exposure == pytest.approx(holdout["exposure"].sum())
    assert (report.family, report.power) == ("poisson", None)
    expected = in_memory(models["glm"], holdout)
    deviance = mean_poisson_deviance(
        holdout["claim_count"] / holdout["exposure"],
        expected / holdout["exposure"],
        sample_weight=holdout["exposure"],
    )
    assert f"challenger poisson deviance {deviance:.6g}" in report.result("deviance").detail
    lift = lift_table(holdout["claim_count"], expected, holdout["exposure"])
    assert report.lift.actual == pytest.approx(lift.actual)
    assert report.lift.predicted == pytest.approx(lift.predicted, rel=1e-9)
    assert report.result("lift").value == pytest.approx(lift.lift)
    assert report.double_lift is None and report.dislocation is None
    assert report.signature_changes is None
    assert report.stability.psi < 0.1
    assert report.stability.expected == pytest.approx(
        [*scorer(registry, 1).package.profile.prediction.shares, 0.0]
    )


def test_a_gbm_challenger_against_the_glm_champion(registry, models, holdout) -> None:
    report = run_gates(scorer(registry, 2), scorer(registry, 1), holdout, target="claim_count")
    assert (report.challenger_version, report.champion_version) == (2, 1)
    assert report.champion_digest == registry.get_version("freq", 1).artifact_digest
    assert report.challenger_digest == registry.get_version("freq", 2).artifact_digest
    exposure = holdout["exposure"].to_numpy()
    rate = holdout["claim_count"].to_numpy() / exposure
    glm, gbm = in_memory(models["glm"], holdout), in_memory(models["gbm"], holdout)

    def deviance(expected):
        return mean_poisson_deviance(rate, expected / exposure, sample_weight=exposure)

    assert report.result("deviance").value == pytest.approx(
        deviance(gbm) / deviance(glm) - 1, abs=1e-6
    )
    assert report.result("deviance").passed == (
        report.result("deviance").value <= GatePolicy().deviance_margin
    )
    claims = holdout["claim_count"].to_numpy()
    assert report.result("gini").value == pytest.approx(
        gini(claims, gbm, exposure) - gini(claims, glm, exposure), abs=1e-4
    )
    change = gbm / glm - 1
    for name, cap in (("dislocation_10", 0.10), ("dislocation_25", 0.25)):
        result = report.result(name)
        assert result.value == pytest.approx(np.mean(np.abs(change) > cap), abs=2 / len(change))
        assert result.passed == (result.value <= result.threshold)
    assert report.dislocation is not None
    assert sum(report.dislocation.counts) == len(holdout)
    factors = {s.factor for s in report.dislocation.worst}
    assert factors <= set(RATING_FACTORS)
    assert report.double_lift is not None
    assert report.result("double_lift").blocking is False
    assert report.result("signature_compatibility").passed  # same factors, same training data
    assert report.signature_changes is not None and report.signature_changes.changes == ()
    assert report.passed == all(
        r.passed or not r.blocking or not r.applicable for r in report.results
    )
    assert report.champion_lift is not None


def test_a_challenger_rating_on_gender_is_blocked(registry, holdout) -> None:
    challenger = scorer(registry, 3)
    assert prohibited_factors_used(challenger.signature, GatePolicy()) == ["gender"]
    assert prohibited_factors_used(
        challenger.signature, GatePolicy(prohibited_factors=("GENDER",))
    ) == ["gender"]
    assert prohibited_factors_used(challenger.signature, GatePolicy(prohibited_factors=())) == []
    report = run_gates(challenger, scorer(registry, 1), holdout, target="claim_count")
    prohibited = report.result("prohibited_factors")
    assert (prohibited.status, prohibited.value) == ("FAIL", 1.0)
    assert prohibited.detail == "uses prohibited rating factors: gender"
    assert not report.passed
    assert "prohibited_factors" in [r.name for r in report.failures]
    assert report.signature_changes is not None
    assert report.signature_changes.added == ("gender",)
    [added] = report.signature_changes.of("gender")
    assert (added.after, added.breaking) == ("categorical: female, male", True)
    compatibility = report.result("signature_compatibility")
    assert (compatibility.status, compatibility.value) == ("WARN", 1.0)
    assert "gender added" in compatibility.detail


def test_a_poorer_challenger_fails_deviance_and_gini(registry, holdout) -> None:
    report = run_gates(scorer(registry, 4), scorer(registry, 1), holdout, target="claim_count")
    assert report.result("deviance").status == "FAIL"
    assert report.result("deviance").value > 0.01
    assert report.result("gini").status == "FAIL"
    assert report.result("gini").value < -0.01
    assert report.result("double_lift").status == "WARN"  # the champion tracks the actual
    assert {"deviance", "gini"} <= {r.name for r in report.failures}
    assert not report.passed
    removed = report.signature_changes.removed
    assert set(removed) == set(RATING_FACTORS) - {"area"}
    # Fewer fields, yet breaking: the challenger refuses fields it does not know.
    assert all(c.breaking for c in report.signature_changes.changes)
    # The same challenger passes both when the champion is itself (margins are inclusive).
    same = run_gates(scorer(registry, 4), scorer(registry, 4), holdout, target="claim_count")
    assert same.result("deviance").value == 0.0 and same.result("deviance").passed
    assert same.result("gini").value == 0.0 and same.result("gini").passed
    assert same.result("dislocation_10").value == 0.0


def test_dislocation_caps_decide_the_dislocation_gates(registry, holdout) -> None:
    challenger, champion = scorer(registry, 2), scorer(registry, 1)
    strict = GatePolicy(dislocation_cap_10=0.0, dislocation_cap_25=0.0)
    report = run_gates(challenger, champion, holdout, target="claim_count", policy=strict)
    assert report.result("dislocation_10").status == "FAIL"
    assert report.result("dislocation_25").status == "FAIL"
    assert report.policy == strict
    loose = GatePolicy(dislocation_cap_10=1.0, dislocation_cap_25=1.0)
    report = run_gates(challenger, champion, holdout, target="claim_count", policy=loose)
    assert report.result("dislocation_10").status == "PASS"
    assert report.result("dislocation_10").threshold == 1.0


def test_stability_fails_on_a_different_population(registry, holdout) -> None:
    risky = holdout[holdout["bonus_malus"] >= 5].reset_index(drop=True)
    report = run_gates(scorer(registry, 1), None, risky, target="claim_count")
    stability = report.result("stability")
    assert stability.status == "FAIL"
    assert stability.value >= 0.25
    assert report.stability.actual[0] < 0.02  # the cheapest training decile is almost empty
    assert not report.passed


def test_fairness_is_reported_and_blocks_only_when_asked(registry, models, holdout) -> None:
    champion = scorer(registry, 1)
    report = run_gates(scorer(registry, 2), champion, holdout, target="claim_count")
    assert report.fairness is not None and report.fairness.attribute == "gender"
    premium = in_memory(models["gbm"], holdout)
    grouped = holdout.assign(premium=premium).groupby("gender")[["premium", "exposure"]].sum()
    averages = grouped["premium"] / grouped["exposure"]
    assert report.fairness.groups == ("female", "male")
    assert report.fairness.average_premium == pytest.approx(tuple(averages), rel=1e-5)
    assert report.result("fairness").value == pytest.approx(
        averages.max() / averages.min(), rel=1e-5
    )
    strict = GatePolicy(fairness_threshold=1.0, dislocation_cap_10=1, dislocation_cap_25=1)
    warned = run_gates(scorer(registry, 1), None, holdout, target="claim_count", policy=strict)
    assert warned.result("fairness").status == "WARN"
    assert warned.result("fairness").detail.endswith("; report only")
    assert warned.passed
    blocking = GatePolicy(fairness_threshold=1.0, fairness_blocks=True)
    blocked = run_gates(scorer(registry, 1), None, holdout, target="claim_count", policy=blocking)
    assert blocked.result("fairness").status == "FAIL"
    assert not blocked.passed
    by_area = run_gates(scorer(registry, 1), None, holdout, target="claim_count", protected="area")
    assert by_area.fairness.groups == ("A", "B", "C", "D", "E", "F")
    assert by_area.result("fairness").value > 1.3  # area is a rating factor: prices differ
    no_gender = holdout.drop(columns=["gender"])
    absent = run_gates(scorer(registry, 1), None, no_gender, target="claim_count")
    assert absent.result("fairness").status == "N/A"
    assert absent.fairness is None


def test_the_glm_family_sets_the_deviance(registry, models, holdout) -> None:
    report = run_gates(scorer(registry, 1, "pure"), None, holdout, target="cost")
    assert (report.family, report.power) == ("tweedie", 1.5)
    expected = in_memory(models["tweedie"], holdout)
    exposure = holdout["exposure"]
    deviance = mean_tweedie_deviance(
        holdout["cost"] / exposure, expected / exposure, sample_weight=exposure, power=1.5
    )
    assert f"tweedie (power 1.5) deviance {deviance:.6g}" in report.result("deviance").detail


def test_policies_a_model_refuses_are_left_out_and_counted(registry, holdout) -> None:
    frame = holdout.head(500).copy()
    frame["area"] = frame["area"].astype(str)
    frame.loc[3, "area"] = "Z"
    frame.loc[7, "bonus_malus"] = 99
    report = run_gates(scorer(registry, 2), scorer(registry, 1), frame, target="claim_count")
    assert report.excluded_rows == 2
    assert report.holdout_rows == 498
    assert report.holdout_sha256 == data_fingerprint(frame)["content_sha256"]
    assert report.excluded_reason == (
        "the challenger (version 2) refuses 2 rows, e.g. row 3, area: level 'Z' was not in the "
        "training data (known: 'A', 'B', 'C', 'D', 'E', 'F')"
    )
    assert report.dislocation is not None and report.dislocation.policies == 498


def test_bad_holdouts_are_refused_with_a_reason(registry, holdout) -> None:
    glm = scorer(registry, 1)
    with pytest.raises(InvalidInputError, match=r"^the holdout has no target column 'claims'$"):
        run_gates(glm, None, holdout, target="claims")
    negative = holdout.assign(claim_count=-holdout["claim_count"] - 1)
    with pytest.raises(InvalidInputError, match=r"must be finite and not negative$"):
        run_gates(glm, None, negative, target="claim_count")
    with pytest.raises(InvalidInputError, match=r"^target column 'gender' must be numeric$"):
        run_gates(glm, None, holdout, target="gender")
    with pytest.raises(InvalidInputError, match=r"^the holdout is empty$"):
        run_gates(glm, None, holdout.head(0), target="claim_count")
    with pytest.raises(InvalidInputError, match=r"^no policy of the holdout can be priced: "):
        run_gates(glm, None, holdout.drop(columns=["area"]), target="claim_count")
    with pytest.raises(InvalidInputError, match=r"^the holdout has no protected column 'race'$"):
        run_gates(glm, None, holdout, target="claim_count", protected="race")
    with pytest.raises(InvalidInputError, match=r"must be a pandas DataFrame or pyarrow Table"):
        run_gates(glm, None, holdout.to_dict("records"), target="claim_count")
    with pytest.raises(InvalidInputError, match=r"positive total of actual values"):
        run_gates(glm, None, holdout.assign(claim_count=0), target="claim_count")


def test_the_report_round_trips_through_strict_json(registry, holdout) -> None:
    for champion in (None, scorer(registry, 1)):
        report = run_gates(scorer(registry, 3), champion, holdout, target="claim_count")
        text = json.dumps(report.to_dict(), allow_nan=False)
        assert GateReport.from_dict(json.loads(text)) == report
        assert GateReport.from_json(report.to_json()) == report
        assert json.loads(report.to_json())["format"] == "ratekeeper-gate-report/1"
    with pytest.raises(InvalidInputError, match=r"^not a gate report: format None$"):
        GateReport.from_dict({"model": "freq"})


def test_the_gate_policy_has_safe_defaults_and_round_trips() -> None:
    policy = GatePolicy()
    assert "gender" in policy.prohibited_factors and "sex" in policy.prohibited_factors
    assert (policy.deviance_margin, policy.gini_margin) == (0.01, 0.01)
    assert (policy.dislocation_cap_10, policy.dislocation_cap_25) == (0.5, 0.2)
    assert (policy.psi_threshold, policy.fairness_threshold) == (0.25, 1.10)
    assert policy.fairness_blocks is False
    assert GatePolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert GatePolicy.from_dict({}) == policy
    custom = GatePolicy.from_dict({"prohibited_factors": ["Gender"], "fairness_blocks": True})
    assert custom.prohibited_factors == ("Gender",) and custom.prohibits("GENDER")
    with pytest.raises(InvalidInputError, match=r"^unknown gate policy setting 'gini_gap'"):
        GatePolicy.from_dict({"gini_gap": 0.02})
    with pytest.raises(InvalidInputError, match=r"^dislocation_cap_10 must be between 0 and 1"):
        GatePolicy(dislocation_cap_10=1.5)
    with pytest.raises(InvalidInputError, match=r"^deviance_margin must be at least 0, got -0.1$"):
        GatePolicy(deviance_margin=-0.1)
    with pytest.raises(InvalidInputError, match=r"^fairness_threshold must be at least 1"):
        GatePolicy(fairness_threshold=0.9)
    with pytest.raises(InvalidInputError, match=r"^psi_threshold must be a number, got 'high'$"):
        GatePolicy(psi_threshold="high")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^prohibited_factors must be a list"):
        GatePolicy(prohibited_factors="gender")  # type: ignore[arg-type]


def test_signature_changes_tell_quote_clients_what_to_change() -> None:
    champion = Signature(
        (
            Field("area", CATEGORICAL, levels=("A", "B", "C")),
            Field("age", INTEGER, minimum=18, maximum=90),
            Field("power", INTEGER, minimum=30, maximum=250),
            Field("value", NUMERIC, minimum=0, maximum=1e5),
            Field("fuel", CATEGORICAL, levels=("petrol", "diesel")),
            Field("exposure", NUMERIC, role="exposure"),
        )
    )
    challenger = Signature(
        (
            Field("area", CATEGORICAL, levels=("A", "B", "D")),
            Field("age", INTEGER, minimum=18, maximum=99),
            Field("power", NUMERIC, minimum=30, maximum=250),
            Field("value", NUMERIC, minimum=1000, maximum=1e5),
            Field("exposure", NUMERIC, role="exposure"),
            Field("garage", CATEGORICAL, levels=("no", "yes"), nullable=True),
            Field("zone", INTEGER, minimum=1, maximum=9),
        )
    )
    changes = signature_changes(champion, challenger)
    assert [(c.field, c.change, c.before, c.after, c.breaking) for c in changes.changes] == [
        ("area", "levels_added", None, "D", False),
        ("area", "levels_removed", "C", None, True),
        ("age", "range_widened", "[18, 90]", "[18, 99]", False),
        ("power", "type", "integer", "numeric", False),
        ("value", "range_narrowed", "[0, 100000]", "[1000, 100000]", True),
        ("garage", "added", None, "categorical: no, yes, nullable", False),
        ("zone", "added", None, "integer in [1, 9]", True),
        ("fuel", "removed", "categorical: petrol, diesel", None, True),
    ]
    assert changes.added == ("garage", "zone") and changes.removed == ("fuel",)
    assert changes.breaking
    assert signature_changes(champion, champion).changes == ()
    lenient = challenger.with_policy(
        rk.ValidationPolicy(out_of_range="allow", unseen_level="allow", unknown_field="ignore")
    )
    relaxed = signature_changes(champion, lenient)
    assert [c.field for c in relaxed.changes if c.breaking] == ["zone"]


def test_a_pyarrow_holdout_gives_the_same_report(registry, holdout) -> None:
    import pyarrow as pa

    frame = holdout.head(2000)
    from_pandas = run_gates(scorer(registry, 2), scorer(registry, 1), frame, target="claim_count")
    from_arrow = run_gates(
        scorer(registry, 2), scorer(registry, 1), pa.Table.from_pandas(frame), target="claim_count"
    )
    assert [r.value for r in from_arrow.results] == [r.value for r in from_pandas.results]
