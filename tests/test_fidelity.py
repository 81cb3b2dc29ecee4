"""A loaded version predicts what the in-memory model predicted, on the real beMTPL97 book.

GLM to 1e-9 relative, ONNX to 1e-5 relative, on every one of the 163,212 policies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import GammaRegressor, PoissonRegressor, TweedieRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler
from tests.shared_data import BE_CATEGORICAL, BE_FACTORS, BE_NUMERIC, read_portfolio

import ratekeeper as rk


@pytest.fixture(scope="module")
def book() -> pd.DataFrame:
    return read_portfolio("beMTPL97.parquet")


@pytest.fixture()
def registry(tmp_path: Any) -> rk.Registry:
    return rk.Registry.create(tmp_path / "registry", admin="modeller")[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


def glm_pipeline(estimator: Any, numeric_step: Any = "passthrough") -> Pipeline:
    return Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(drop="first"), BE_CATEGORICAL),
                        ("numeric", numeric_step, BE_NUMERIC),
                    ]
                ),
            ),
            ("glm", estimator),
        ]
    )


@pytest.mark.parametrize("numeric_step", ["passthrough", StandardScaler()], ids=["raw", "scaled"])
def test_poisson_glm_frequency_round_trips_to_1e9(book, registry, numeric_step) -> None:
    model = glm_pipeline(PoissonRegressor(alpha=1e-4, solver="newton-cholesky"), numeric_step)
    model.fit(book[BE_FACTORS], book["nclaims"] / book["expo"], glm__sample_weight=book["expo"])
    version = registry.register_model(
        model, "be_frequency", training_data=book, target="nclaims", exposure="expo"
    )
    assert version.flavor == "glm"
    scorer = rk.load_model("models:/be_frequency/1", registry)

    expected = model.predict(book[BE_FACTORS]) * book["expo"].to_numpy()
    assert relative_error(scorer.predict(book), expected) < 1e-9
    # One policy at a time gives the same price as the batch.
    rows = book[[*BE_FACTORS, "expo"]].iloc[:200].to_dict("records")
    singles = np.array([scorer.predict_one(r) for r in rows])
    assert relative_error(singles, expected[:200]) < 1e-9


def test_gamma_severity_and_tweedie_pure_premium_glms_round_trip(book, registry) -> None:
    claims = book[book["nclaims"] > 0]
    severity = glm_pipeline(GammaRegressor(alpha=1e-3, solver="newton-cholesky"))
    severity.fit(claims[BE_FACTORS], claims["average"], glm__sample_weight=claims["nclaims"])
    v = registry.register_model(severity, "be_severity", training_data=claims, target="average")
    assert (v.flavor, v.signature.exposure) == ("glm", None)
    got = registry.load_model(v.uri).predict(claims)
    assert relative_error(got, severity.predict(claims[BE_FACTORS])) < 1e-9

    tweedie = glm_pipeline(TweedieRegressor(power=1.5, alpha=1e-3, solver="newton-cholesky"))
    tweedie.fit(book[BE_FACTORS], book["amount"] / book["expo"], glm__sample_weight=book["expo"])
    v = registry.register_model(tweedie, "be_pure_premium", training_data=book, exposure="expo")
    got = registry.load_model(v.uri).predict(book)
    expected = tweedie.predict(book[BE_FACTORS]) * book["expo"].to_numpy()
    assert relative_error(got, expected) < 1e-9


def test_lightgbm_with_categorical_factors_round_trips_to_1e5(book, registry) -> None:
    import lightgbm as lgb

    frame = book.copy()
    for name in BE_CATEGORICAL:
        frame[name] = frame[name].astype("category")
    model = lgb.LGBMRegressor(objective="poisson", n_estimators=100, learning_rate=0.05, verbose=-1)
    model.fit(frame[BE_FACTORS], frame["nclaims"] / frame["expo"], sample_weight=frame["expo"])
    version = registry.register_model(model, "be_gbm", training_data=frame, exposure="expo")
    assert version.flavor == "onnx"
    scorer = registry.load_model("models:/be_gbm/1")

    expected = model.predict(frame[BE_FACTORS]) * frame["expo"].to_numpy()
    # Scored from the plain string columns of the book, as a policy system would send them.
    assert relative_error(scorer.predict(book), expected) < 1e-5
    rows = book[[*BE_FACTORS, "expo"]].iloc[:100].to_dict("records")
    singles = np.array([scorer.predict_one(r) for r in rows])
    assert relative_error(singles, expected[:100]) < 1e-5
    # A quote goes through arrays bound to the session once; a book through a fresh matrix: the
    # same float32 inputs, the same prices to the bit.
    assert singles.tolist() == scorer.predict(pd.DataFrame(rows)).tolist()
    bound = scorer._predictor._bound  # type: ignore[attr-defined]
    assert bound is not None
    with bound.lock:  # another thread is using the bound arrays: the allocating path, same prices
        assert [scorer.predict_one(r) for r in rows[:10]] == singles[:10].tolist()


def test_xgboost_on_numeric_factors_round_trips_to_1e5(book, registry) -> None:
    import xgboost as xgb

    model = xgb.XGBRegressor(objective="count:poisson", n_estimators=60, max_depth=4)
    model.fit(book[BE_NUMERIC], book["nclaims"] / book["expo"], sample_weight=book["expo"])
    version = registry.register_model(model, "be_xgb", training_data=book, exposure="expo")
    got = registry.load_model(version.uri).predict(book)
    expected = model.predict(book[BE_NUMERIC]) * book["expo"].to_numpy()
    assert relative_error(got, expected) < 1e-5


def test_glm_with_binned_factors_goes_to_onnx_and_round_trips(book, registry) -> None:
    binned = KBinsDiscretizer(n_bins=5, encode="onehot-dense", strategy="uniform")
    model = glm_pipeline(PoissonRegressor(alpha=1e-4, solver="newton-cholesky"), binned)
    model.fit(book[BE_FACTORS], book["nclaims"] / book["expo"], glm__sample_weight=book["expo"])
    version = registry.register_model(model, "be_banded", training_data=book, exposure="expo")
    assert version.flavor == "onnx"
    got = registry.load_model(version.uri).predict(book)
    expected = model.predict(book[BE_FACTORS]) * book["expo"].to_numpy()
    assert relative_error(got, expected) < 1e-5


def test_glum_glm_with_categorical_factors_round_trips_to_1e9(book, registry) -> None:
    from glum import GeneralizedLinearRegressor

    frame = book.copy()
    for name in BE_CATEGORICAL:
        frame[name] = frame[name].astype("category")
    model = GeneralizedLinearRegressor(family="poisson", alpha=0, drop_first=True)
    model.fit(frame[BE_FACTORS], frame["nclaims"] / frame["expo"], sample_weight=frame["expo"])
    version = registry.register_model(model, "be_glum", training_data=frame, exposure="expo")
    assert version.flavor == "glm"
    got = registry.load_model(version.uri).predict(book)
    expected = model.predict(frame[BE_FACTORS]) * frame["expo"].to_numpy()
    assert relative_error(got, expected) < 1e-9
