"""register_model(..., target=y, exposure=w) with values, as scikit-learn's fit(X, y) takes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import ratekeeper as rk
from ratekeeper.synthetic import RATING_FACTORS
from registries import open_registry


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    opened = open_registry(tmp_path / "registry", user="modeller")
    yield opened
    opened.close()


def test_a_named_series_target_is_the_column_it_came_from(registry, motor_glm, portfolio) -> None:
    by_name = registry.register_model(
        motor_glm, "freq", training_data=portfolio, target="claim_count", exposure="exposure"
    )
    by_values = registry.register_model(
        motor_glm,
        "freq",
        training_data=portfolio,
        target=portfolio["claim_count"],
        exposure=portfolio["exposure"],
    )
    assert by_values.signature.target == "claim_count"
    # The same package, byte for byte: values of a column are that column.
    assert by_values.artifact_digest == by_name.artifact_digest


def test_x_and_y_apart_as_scikit_learn_takes_them(registry, motor_glm, portfolio) -> None:
    features = portfolio[[*RATING_FACTORS, "exposure"]]
    version = registry.register_model(
        motor_glm, "freq", training_data=features, target=portfolio["claim_count"]
    )
    assert version.signature.target == "claim_count"
    assert "claim_count" not in version.signature.names


@pytest.mark.parametrize(
    "values",
    [
        lambda y: y.to_numpy(),
        lambda y: y.tolist(),
        lambda y: y.to_numpy().reshape(-1, 1),
        lambda y: pa.array(y.to_numpy()),
        lambda y: y.rename(None),
    ],
    ids=["numpy", "list", "column-vector", "pyarrow", "unnamed-series"],
)
def test_unnamed_target_values_are_called_target(registry, motor_glm, portfolio, values) -> None:
    features = portfolio[[*RATING_FACTORS, "exposure"]]
    version = registry.register_model(
        motor_glm, "freq", training_data=features, target=values(portfolio["claim_count"])
    )
    assert version.signature.target == "target"


def test_exposure_values_become_the_exposure_field(registry, motor_glm, portfolio) -> None:
    features = portfolio[list(RATING_FACTORS)]
    version = registry.register_model(
        motor_glm,
        "freq",
        training_data=features,
        target=portfolio["claim_count"],
        exposure=portfolio["exposure"].to_numpy(),
    )
    exposure = version.signature.exposure
    assert exposure is not None and exposure.name == "exposure"
    assert version.profile.weight == "exposure"
    scorer = registry.load_model(version.uri)
    policy = features.iloc[0].to_dict() | {"exposure": 0.5}
    rate = float(motor_glm.predict(features.head(1))[0])
    assert scorer.predict_one(policy) == pytest.approx(rate * 0.5, rel=1e-9)


@pytest.mark.parametrize("argument", ["target", "exposure"])
def test_values_not_aligned_with_training_data_are_refused(
    registry, motor_glm, portfolio, argument
) -> None:
    short = portfolio["exposure"].to_numpy()[:-1]
    with pytest.raises(
        rk.InvalidInputError,
        match=rf"^{argument} has 2999 values but training_data has 3000 rows: pass the values",
    ):
        registry.register_model(motor_glm, "freq", training_data=portfolio, **{argument: short})
    assert registry.list_versions() == []


def test_a_series_named_like_a_different_column_is_refused(registry, motor_glm, portfolio) -> None:
    doubled = (portfolio["claim_count"] * 2).rename("claim_count")
    with pytest.raises(
        rk.InvalidInputError,
        match=r"^target is named 'claim_count', but training_data's 'claim_count' column holds",
    ):
        registry.register_model(motor_glm, "freq", training_data=portfolio, target=doubled)


@pytest.mark.parametrize("value", [3.0, {"a": 1}, b"claims"], ids=["scalar", "dict", "bytes"])
def test_a_target_that_is_neither_a_name_nor_values_is_refused(
    registry, motor_glm, portfolio, value
) -> None:
    with pytest.raises(rk.InvalidInputError, match=r"^target must be a column name of training"):
        registry.register_model(motor_glm, "freq", training_data=portfolio, target=value)
