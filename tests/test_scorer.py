"""The scorer: one signature check and one pricing core for single policies and whole books."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import ratekeeper as rk
from ratekeeper.demo import train_gbm, train_glm
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio


@pytest.fixture(scope="module")
def book():
    return motor_portfolio(4000, seed=11)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, book):
    registry = rk.Registry.create(tmp_path_factory.mktemp("scorer"), admin="modeller")[0]
    registry.register_model(train_glm(book), "freq", training_data=book, exposure="exposure")
    registry.register_model(
        train_gbm(book, n_trees=30), "freq", training_data=book, exposure="exposure"
    )
    return registry


@pytest.mark.parametrize("version", [1, 2], ids=["glm", "onnx"])
def test_pandas_arrow_and_records_price_identically(registry, book, version) -> None:
    scorer = registry.load_model(f"models:/freq/{version}")
    frame = book.head(300)
    from_pandas = scorer.predict(frame)
    assert np.array_equal(from_pandas, scorer.predict(pa.Table.from_pandas(frame)))
    assert np.array_equal(from_pandas, scorer.predict(frame.to_dict("records")))
    singles = [
        scorer.predict_one(r) for r in frame[[*RATING_FACTORS, "exposure"]].to_dict("records")
    ]
    assert np.allclose(singles, from_pandas, rtol=1e-6 if version == 2 else 1e-12, atol=0)


@pytest.mark.parametrize("version", [1, 2], ids=["glm", "onnx"])
def test_exposure_multiplies_the_rate(registry, book, version) -> None:
    scorer = registry.load_model(f"models:/freq/{version}")
    policy = book[[*RATING_FACTORS, "exposure"]].iloc[0].to_dict() | {"exposure": 1.0}
    full_year = scorer.predict_one(policy)
    assert scorer.predict_one(policy | {"exposure": 0.25}) == pytest.approx(
        full_year / 4, rel=1e-12
    )


def test_a_bad_book_prices_nothing_and_names_every_bad_row(registry, book) -> None:
    scorer = registry.load_model("models:/freq/1")
    frame = book.head(10).copy()
    frame["area"] = frame["area"].astype(str)
    frame.loc[2, "area"] = "Z"
    frame.loc[6, "exposure"] = -1.0
    with pytest.raises(
        rk.InvalidInputError, match=r"^row 2, area: level 'Z'.*\(and 1 more\)$"
    ) as err:
        scorer.predict(frame)
    assert [(p.row, p.field, p.code) for p in err.value.problems] == [
        (2, "area", "unseen_level"),
        (6, "exposure", "out_of_range"),
    ]


def test_predict_one_refuses_unknown_fields_but_predict_ignores_extra_columns(
    registry, book
) -> None:
    scorer = registry.load_model("models:/freq/1")
    policy = book[[*RATING_FACTORS, "exposure"]].iloc[0].to_dict()
    with pytest.raises(rk.InvalidInputError, match=r"^claims: is not a field of this model$"):
        scorer.predict_one(policy | {"claims": 2})
    assert len(scorer.predict(book.head(5))) == 5  # the book carries claim_count and gender
    with pytest.raises(rk.InvalidInputError, match="a policy must be a mapping, not list"):
        scorer.predict_one([policy])  # type: ignore[arg-type]
    with pytest.raises(rk.InvalidInputError, match="cannot score a str"):
        scorer.predict("area=C")


def test_the_scorer_knows_its_version(registry) -> None:
    scorer = registry.load_model("models:/freq/2")
    assert (scorer.name, scorer.version, scorer.flavor) == ("freq", 2, "onnx")
    assert repr(scorer) == "<Scorer freq v2 (onnx)>"
