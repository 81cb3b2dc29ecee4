"""Benchmark drift: PSI over a large synthetic book, ours against a plain pandas version.

Run it with ``.venv/bin/python benchmarks/bench_drift.py`` (``--rows 1000000`` for a quick run).
The book has ``--factors`` rating factors, half numeric (float64) and half categorical (a
pyarrow dictionary column, as ``pq.read_table(..., read_dictionary=...)`` and the CLI give it),
and an exposure column. The reference profile comes from a 200,000-row training sample drawn
from a slightly different population, so the bins are real deciles and the PSIs are not zero.

It times, as medians over ``--repeat`` runs:

- ``drift(version, table)``: every factor PSI (no prediction);
- ``drift(scorer, table)``: the same plus the prediction PSI (signature check + GLM scoring of
  every row), on ``--prediction-rows`` rows;
- the peer: the same factor PSIs with ``pandas.cut`` / ``groupby`` on a pandas DataFrame
  (categorical columns), which is how one would write it by hand.

Both implementations must agree on every PSI (checked to 1e-9) before a time is printed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import ratekeeper as rk
from ratekeeper.monitoring import drift
from ratekeeper.packaging.profile import LevelShares, NumericBins
from ratekeeper.validation.stability import SHARE_FLOOR

LEVELS = 12


def book(rows: int, factors: int, seed: int, shift: float) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(factors // 2):
        columns[f"x{i}"] = rng.normal(40 + shift * i, 10, rows).round(1)
    for i in range(factors - factors // 2):
        p = np.random.default_rng(100 + i).dirichlet(np.full(LEVELS, 2.0))  # same base mix
        p = p if shift == 0 else (p + shift / LEVELS) / (1 + shift)
        codes = rng.choice(LEVELS, size=rows, p=p).astype(np.int32)
        levels = pa.array([f"level_{j:02d}" for j in range(LEVELS)])
        columns[f"c{i}"] = pa.DictionaryArray.from_arrays(pa.array(codes), levels)
    columns["exposure"] = rng.uniform(0.05, 1.0, rows)
    return pa.table(columns)


def train_model(train: pd.DataFrame, factors: list[str]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import PoissonRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric = [f for f in factors if f.startswith("x")]
    categorical = [f for f in factors if f.startswith("c")]
    rng = np.random.default_rng(1)
    rate = 0.1 * np.exp(0.01 * (train[numeric[0]] - 40))
    claims = rng.poisson(rate * train["exposure"])
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(drop="first"), categorical),
                        ("numeric", "passthrough", numeric),
                    ]
                ),
            ),
            ("glm", PoissonRegressor(alpha=1e-4, solver="newton-cholesky")),
        ]
    )
    model.fit(train[factors], claims / train["exposure"], glm__sample_weight=train["exposure"])
    return model


def pandas_psis(frame: pd.DataFrame, profile: Any, factors: list[str]) -> dict[str, float]:
    """The peer: pd.cut for numeric bins, a level → bin map for categorical ones, groupby sums."""
    weights = frame["exposure"]
    total = weights.sum()
    out = {}
    for name in factors:
        reference = profile.factors[name]
        if isinstance(reference, NumericBins):
            bins = pd.cut(frame[name], [-math.inf, *reference.edges, math.inf], right=True)
            sums = weights.groupby(bins, observed=False).sum().to_numpy()
            missing = weights[frame[name].isna()].sum()
            actual = np.append(sums, missing) / total
            expected = np.asarray([*reference.shares, reference.missing_share])
        else:
            assert isinstance(reference, LevelShares)
            index = {level: i for i, level in enumerate(reference.levels)}
            mapped = frame[name].astype(object).map(index).fillna(len(index)).astype(int)
            sums = weights.groupby(mapped).sum().reindex(range(len(index) + 2), fill_value=0)
            actual = sums.to_numpy() / total
            expected = np.asarray([*reference.shares, reference.other_share, 0.0])
        a, e = np.maximum(actual, SHARE_FLOOR), np.maximum(expected, SHARE_FLOOR)
        out[name] = float(np.sum((a - e) * np.log(a / e)))
    return out


def median_time(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def time_peer(table: pa.Table, profile: Any, factors: list[str], repeat: int) -> Any:
    frame = table.to_pandas()  # categorical columns; the conversion is not timed
    return median_time(lambda: pandas_psis(frame, profile, factors), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--prediction-rows", type=int, default=None, help="[default: --rows]")
    parser.add_argument("--factors", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    factors = [f"x{i}" for i in range(args.factors // 2)]
    factors += [f"c{i}" for i in range(args.factors - args.factors // 2)]

    train = book(200_000, args.factors, seed=0, shift=0.0).to_pandas()
    print(f"building a {args.rows:,}-row book with {args.factors} rating factors …", flush=True)
    table = book(args.rows, args.factors, seed=2, shift=0.05)
    with tempfile.TemporaryDirectory() as home:
        registry = rk.Registry.create(home, admin="bench", policy="open")[0]
        registry.register_model(
            train_model(train, factors), "bench", training_data=train, exposure="exposure"
        )
        scorer = registry.load_model("models:/bench/1")
        registry.close()
    version = scorer.model_version

    ours, report = median_time(lambda: drift(version, table), args.repeat)
    peer, psis = time_peer(table, version.profile, factors, args.repeat)
    for d in report.factors:
        assert math.isclose(d.psi, psis[d.name], rel_tol=1e-9, abs_tol=1e-12), (d.name, d.psi)
    prediction_rows = args.prediction_rows or args.rows
    scored = table.slice(0, prediction_rows)
    with_prediction, full = median_time(lambda: drift(scorer, scored), max(1, args.repeat - 2))
    assert full.prediction is not None

    rows = [
        ("ratekeeper drift, factor PSIs", args.rows, ours),
        ("pandas cut/groupby, factor PSIs (peer)", args.rows, peer),
        ("ratekeeper drift, factors + prediction", prediction_rows, with_prediction),
    ]
    print()
    print(f"| what | rows | factors | median s | rows/s |  (repeat {args.repeat})")
    print("|---|---:|---:|---:|---:|")
    for what, n, seconds in rows:
        print(f"| {what} | {n:,} | {args.factors} | {seconds:.2f} | {n / seconds:,.0f} |")
    print(f"\npeer / ours (factor PSIs): {peer / ours:.1f}×")
    print(f"worst factor PSI {max(d.psi for d in report.factors):.4f}; status {report.status}")


if __name__ == "__main__":
    main()
