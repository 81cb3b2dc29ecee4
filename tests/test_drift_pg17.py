"""Drift on a real book: the 2017 pricing game's portfolio, one year on, has aged."""

from __future__ import annotations

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import PoissonRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from ratekeeper.monitoring import drift
from registries import open_registry
from shared_data import read_portfolio

CATEGORICAL = ["pol_coverage", "vh_fuel", "pol_usage"]
NUMERIC = ["drv_age1", "vh_age"]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    policies = read_portfolio("pg17trainpol.parquet")
    claims = read_portfolio("pg17trainclaim.parquet")
    counts = claims.groupby(["id_client", "id_vehicle"], as_index=False)["claim_nb"].sum()
    book = policies.merge(counts, on=["id_client", "id_vehicle"], how="left")
    book = book.fillna({"claim_nb": 0}).dropna(subset=NUMERIC)
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(drop="first"), CATEGORICAL),
                        ("numeric", "passthrough", NUMERIC),
                    ]
                ),
            ),
            ("glm", PoissonRegressor(alpha=1e-6, solver="newton-cholesky")),
        ]
    )
    model.fit(book[CATEGORICAL + NUMERIC], book["claim_nb"])
    registry = open_registry(tmp_path_factory.mktemp("pg17"), user="modeller")
    registry.register_model(
        model, "pg17", training_data=book[[*CATEGORICAL, *NUMERIC, "claim_nb"]], target="claim_nb"
    )
    loaded = registry.load_model("models:/pg17/1")
    registry.close()
    return loaded


def test_the_reference_book_against_itself_is_flat(scorer) -> None:
    report = drift(scorer, read_portfolio("pg17trainpol.parquet"))
    assert max(d.psi for d in report.factors) < 1e-6
    assert report.status == "stable"


def test_next_years_book_shows_the_ageing_while_unchanged_factors_stay_stable(scorer) -> None:
    report = drift(scorer, read_portfolio("pg17testyear1.parquet"))
    psi = {d.name: d.psi for d in report.factors}
    unchanged = max(psi[name] for name in CATEGORICAL)
    assert unchanged < 1e-6  # the same policies: coverage, fuel and usage did not move
    assert psi["drv_age1"] > 0.003 and psi["vh_age"] > 0.05
    assert min(psi["drv_age1"], psi["vh_age"]) > 1000 * unchanged
    for name in NUMERIC:
        ageing = report.factor(name)
        assert ageing.p_value < 1e-50  # one year older, on 100,000 policies: not chance
        assert ageing.rows == 100_000
        # Older: the youngest reference bin empties, the oldest fills.
        assert ageing.stability.actual[0] < ageing.stability.expected[0]
        assert ageing.stability.actual[-2] > ageing.stability.expected[-2]
    for name in CATEGORICAL:
        assert report.factor(name).p_value > 0.99
        assert report.factor(name).band == "stable"
    # The premium follows the ages: the prediction moved more than any unchanged factor.
    assert report.prediction is not None and report.prediction.psi > 0.01
    assert report.prediction.rows + report.excluded_rows == 100_000
