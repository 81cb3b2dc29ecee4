"""ratekeeper.spark.score on a real local[2] Spark session: scorer prices, rejects kept."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from tests.http_helpers import glm_and_gbm

import ratekeeper as rk
from ratekeeper.synthetic import motor_portfolio

pytest.importorskip("pyspark")
# pyspark 4 warns about pandas 3 when it converts pandas frames; these tests go through Arrow.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")

MODEL = "motor_frequency"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    # The executors are Python processes that import ratekeeper: run them on this interpreter.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("ratekeeper-tests")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[rk.Registry, Any]:
    registry, book = glm_and_gbm(tmp_path_factory.mktemp("spark") / "registry")
    registry.transition_stage(MODEL, 1, "Production")
    return registry, book


def _policies(n: int) -> Any:
    book = motor_portfolio(n, seed=9)
    for name in ("area", "fuel", "cover", "gender"):
        book[name] = book[name].astype(str)
    book.loc[5, "area"] = "Z"  # an unseen level
    book.loc[9, "driver_age"] = 140  # outside the training range
    return book


@pytest.mark.parametrize("uri", ["models:/motor_frequency/Production", "models:/motor_frequency/2"])
def test_spark_prices_like_the_scorer_and_keeps_rejected_rows(spark, world, uri) -> None:
    registry, _ = world
    book = _policies(4000)
    df = spark.createDataFrame(pa.Table.from_pandas(book, preserve_index=False)).repartition(3)
    scored = rk_spark_score(df, uri, registry).toArrow().to_pandas().sort_values("policy_id")

    assert len(scored) == len(book)  # nothing dropped
    version = registry.resolve(uri)
    assert set(scored["model_name"]) == {MODEL}
    assert set(scored["model_version"]) == {version.version}
    assert scored["scored_at"].nunique() == 1

    rejected = scored[scored["reject_reason"].notna()]
    assert rejected["prediction"].isna().all()
    reasons = dict(zip(rejected["policy_id"], rejected["reject_reason"], strict=True))
    assert reasons[6].startswith("area: unseen_level (level 'Z' was not in the training data")
    assert reasons[10] == "driver_age: out_of_range (140 is outside the training range [18, 90])"

    priced = scored[scored["reject_reason"].isna()]
    expected = registry.load_model(uri).predict(
        book[book["policy_id"].isin(priced["policy_id"])].sort_values("policy_id")
    )
    assert priced["prediction"].notna().all()
    np.testing.assert_array_equal(priced["prediction"].to_numpy(), expected)


def test_spark_refuses_a_frame_without_a_rating_factor(spark, world) -> None:
    registry, _ = world
    df = spark.createDataFrame(
        pa.Table.from_pandas(_policies(10).drop(columns=["area"]), preserve_index=False)
    )
    with pytest.raises(rk.InvalidInputError, match="the DataFrame lacks area, which"):
        rk_spark_score(df, "models:/motor_frequency/1", registry)


def test_the_package_travels_as_verified_bytes(world) -> None:
    from ratekeeper.spark import ShippedPackage, scorer_from, ship

    registry, _ = world
    version = registry.resolve("models:/motor_frequency/2")
    shipped = ship(registry, version)
    assert set(shipped.blobs) == set(registry.load_package(version).manifest["files"].values())
    assert scorer_from(shipped).version == 2
    digest = next(iter(shipped.blobs))
    tampered = ShippedPackage(
        shipped.name, shipped.version, "0" * 64, shipped.manifest, shipped.blobs
    )
    with pytest.raises(rk.IntegrityError, match="manifest corrupted"):
        scorer_from(tampered)
    corrupt = ShippedPackage(
        shipped.name,
        shipped.version,
        shipped.digest,
        shipped.manifest,
        {digest: shipped.blobs[digest] + b"x"},
    )
    from ratekeeper import spark as rk_spark

    rk_spark._SCORERS.clear()  # build again from the corrupted bytes
    with pytest.raises(rk.IntegrityError, match=f"sha256:{digest[:12]} is missing or corrupted"):
        scorer_from(corrupt)


def rk_spark_score(df: Any, uri: str, registry: rk.Registry) -> Any:
    from ratekeeper.spark import score

    return score(df, uri, registry=registry)
