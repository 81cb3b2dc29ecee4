"""out_of_range="clip": a renewal book one year on, its oldest vehicles priced at the bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.http_helpers import glm_and_gbm

import ratekeeper as rk
from ratekeeper.cli.main import main
from ratekeeper.demo import train_glm
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio
from registries import open_registry

GLM = "models:/motor_frequency/1"
GBM = "models:/motor_frequency/2"
STRINGS = ("area", "fuel", "cover", "gender")
AGED = list(range(10))  # rows whose vehicle is one year older than any in training
BOTH = 3  # this row's driver is also older than any in training


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> rk.Registry:
    registry, _ = glm_and_gbm(tmp_path_factory.mktemp("clip") / "registry")
    return registry


def limits(registry: rk.Registry, uri: str) -> tuple[float, float]:
    signature = registry.load_model(uri).signature
    return signature.field("vehicle_age").maximum, signature.field("driver_age").maximum  # type: ignore[return-value]


def renewal_book(registry: rk.Registry, n: int = 1500) -> tuple[Any, Any]:
    """(the renewal book, the same book with the aged values at the training maximum)."""
    vehicle_max, driver_max = limits(registry, GLM)
    book = motor_portfolio(3000, seed=8).head(n)  # the training book (glm_and_gbm's): in range
    for name in STRINGS:
        book[name] = book[name].astype(str)
    book["vehicle_age"] = book["vehicle_age"].astype(float)
    book["driver_age"] = book["driver_age"].astype(float)
    at_bound = book.copy()
    book.loc[AGED, "vehicle_age"] = vehicle_max + 1
    at_bound.loc[AGED, "vehicle_age"] = vehicle_max
    book.loc[BOTH, "driver_age"] = driver_max + 1
    at_bound.loc[BOTH, "driver_age"] = driver_max
    return book, at_bound


def write(book: Any, path: Path) -> Path:
    pq.write_table(pa.Table.from_pandas(book, preserve_index=False), path)
    return path


@pytest.mark.parametrize("uri", [GLM, GBM], ids=["glm", "onnx"])
def test_clip_prices_at_the_bound_and_records_each_row(registry, tmp_path, uri) -> None:
    book, at_bound = renewal_book(registry)
    source = write(book, tmp_path / "renewal.parquet")
    summary = registry.score_file(
        uri, source, tmp_path / "priced.parquet", out_of_range="clip", chunk_rows=400
    )
    assert (summary.rows_priced, summary.rows_rejected) == (1500, 0)
    assert summary.clipped == {"driver_age": 1, "vehicle_age": 10}
    assert summary.rows_clipped == 10
    assert "; clipped to the training range 10 (driver_age 1, vehicle_age 10)" in (
        summary.describe()
    )
    priced = pq.read_table(tmp_path / "priced.parquet")
    assert priced.column_names[-1] == "clipped_fields"
    expected = registry.load_model(uri).predict(at_bound)
    assert np.array_equal(priced.column("prediction").to_numpy(), expected)
    labels = priced.column("clipped_fields").to_pylist()
    assert labels[BOTH] == "driver_age,vehicle_age"
    assert {labels[i] for i in AGED if i != BOTH} == {"vehicle_age"}
    assert set(labels[10:]) == {None}
    # The input columns are written as they came: the audit trail keeps the value quoted.
    assert priced.column("vehicle_age").to_pylist()[:10] == book["vehicle_age"][:10].tolist()


def test_reject_sends_the_aged_vehicles_to_the_rejects_file(registry, tmp_path) -> None:
    book, _ = renewal_book(registry)
    source = write(book, tmp_path / "renewal.parquet")
    summary = registry.score_file(GLM, source, tmp_path / "priced.parquet")
    assert (summary.rows_priced, summary.rows_rejected, summary.clipped) == (1490, 10, {})
    assert "clipped_fields" not in pq.read_schema(tmp_path / "priced.parquet").names
    rejects = pq.read_table(summary.rejects)
    assert rejects.column("row_number").to_pylist() == AGED
    reasons = rejects.column("reasons").to_pylist()
    vehicle_max, _ = limits(registry, GLM)
    assert reasons[0] == (
        f"vehicle_age: out_of_range ({vehicle_max + 1:g} is outside the training range "
        f"[0, {vehicle_max:g}])"
    )
    assert reasons[BOTH].startswith("driver_age: out_of_range (")


def test_unseen_levels_are_still_rejected_under_clip(registry, tmp_path) -> None:
    book, _ = renewal_book(registry)
    book.loc[[0, 20], "area"] = "Z"  # row 0 also has an aged vehicle
    source = write(book, tmp_path / "renewal.parquet")
    summary = registry.score_file(GLM, source, tmp_path / "priced.parquet", out_of_range="clip")
    assert (summary.rows_priced, summary.rows_rejected) == (1498, 2)
    assert summary.clipped == {"driver_age": 1, "vehicle_age": 9}  # row 0 was not priced
    rejects = pq.read_table(summary.rejects)
    assert rejects.column("row_number").to_pylist() == [0, 20]
    assert [r.split(" (")[0] for r in rejects.column("reasons").to_pylist()] == [
        "area: unseen_level",
        "area: unseen_level",
    ]


def test_the_cli_chooses_clip_for_one_run(registry, tmp_path, capsys) -> None:
    book, _ = renewal_book(registry)
    source = write(book, tmp_path / "renewal.parquet")
    args = ["--registry", registry.url, "score", GLM, "--input", str(source)]
    with pytest.raises(SystemExit) as done:
        main([*args, "--output", str(tmp_path / "clip.parquet"), "--out-of-range", "clip"])
    assert done.value.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())
    assert "priced 1,500 of 1,500 policies" in out
    assert "clipped to the training range 10 (driver_age 1, vehicle_age 10)" in out
    labels = pq.read_table(tmp_path / "clip.parquet").column("clipped_fields").to_pylist()
    assert sum(label is not None for label in labels) == 10
    with pytest.raises(SystemExit) as done:
        main([*args, "--output", str(tmp_path / "x.parquet"), "--out-of-range", "allow"])
    assert done.value.code == 2
    assert "'allow' is not one of 'reject', 'clip'" in capsys.readouterr().err


def test_score_file_refuses_allow_at_scoring_time(registry, tmp_path) -> None:
    book, _ = renewal_book(registry, 50)
    source = write(book, tmp_path / "renewal.parquet")
    with pytest.raises(rk.InvalidInputError, match=r"^out_of_range must be 'reject' or 'clip'"):
        registry.score_file(GLM, source, tmp_path / "p.parquet", out_of_range="allow")


# -- online: a version registered with clip ----------------------------------------------------
@pytest.fixture(scope="module")
def clipping(tmp_path_factory: pytest.TempPathFactory) -> Any:
    book = motor_portfolio(3000, seed=21)
    registry = open_registry(tmp_path_factory.mktemp("clip-online"), user="m")
    version = registry.register_model(
        train_glm(book),
        "freq",
        training_data=book,
        exposure="exposure",
        validation=rk.ValidationPolicy(out_of_range="clip"),
    )
    assert version.signature.policy.out_of_range == "clip"  # stored with the version
    return registry.load_model(version.uri)


def policy_at(scorer: Any, **values: float) -> dict[str, Any]:
    factors = scorer.signature.rating_factors
    levels = {f.name: f.levels[-1] for f in factors if f.levels is not None}
    numbers = {f.name: (f.minimum + f.maximum) // 2 for f in factors if f.minimum is not None}
    return {**levels, **numbers, "exposure": 1.0, **values}


def test_a_quote_is_priced_at_the_bound_and_says_what_was_clipped(clipping) -> None:
    top = clipping.signature.field("vehicle_age").maximum
    clipped: list[str] = []
    aged = clipping.predict_one(policy_at(clipping, vehicle_age=top + 1), clipped)
    assert aged == clipping.predict_one(policy_at(clipping, vehicle_age=top))
    assert clipped == ["vehicle_age"]
    within: list[str] = []
    clipping.predict_one(policy_at(clipping, vehicle_age=top), within)
    assert within == []
    low = clipping.signature.field("driver_age").minimum
    young = clipping.predict_one(policy_at(clipping, driver_age=low - 1))
    assert young == clipping.predict_one(policy_at(clipping, driver_age=low))
    each = clipping.predict_each([policy_at(clipping, vehicle_age=top + 5), {"exposure": 1.0}])
    assert each[0] == aged
    assert isinstance(each[1], list) and each[1][0].code == "missing"


def test_clip_never_touches_levels_types_or_the_exposure(clipping) -> None:
    top = clipping.signature.field("vehicle_age").maximum
    with pytest.raises(rk.InvalidInputError, match=r"^area: level 'Z' was not in the training"):
        clipping.predict_one(policy_at(clipping, vehicle_age=top + 1, area="Z"))
    with pytest.raises(rk.InvalidInputError, match=r"^exposure: exposure must be positive"):
        clipping.predict_one(policy_at(clipping, exposure=-1.0))
    with pytest.raises(rk.InvalidInputError, match=r"^vehicle_age: must be a finite number"):
        clipping.predict_one(policy_at(clipping, vehicle_age=float("inf")))


def test_frames_and_records_clip_alike(clipping) -> None:
    top = clipping.signature.field("vehicle_age").maximum
    rows = [policy_at(clipping, vehicle_age=top + k) for k in (0, 1, 7)]
    report = clipping.check(rows)  # a list of dicts: numeric values arrive as levels
    assert report.ok and report.clipped["vehicle_age"].tolist() == [False, True, True]
    import pandas as pd

    frame = pd.DataFrame(rows)
    assert clipping.check(frame).clipped["vehicle_age"].tolist() == [False, True, True]
    prices = clipping.predict(frame)
    assert prices[1] == prices[2] == prices[0]
    assert clipping.predict(rows).tolist() == prices.tolist()
    assert set(RATING_FACTORS) <= set(rows[0])
