"""Batch scoring benchmark: ratekeeper ``score_file`` end to end vs the raw call vs MLflow.

For a Poisson GLM (scikit-learn pipeline, one-hot factors) and a 300-tree LightGBM, both fitted
on beMTPL97 (../shared/data) or on the synthetic portfolio when it is absent, on books of 1M and
10M policies (rows of the portfolio drawn with replacement, written as Parquet):

- ratekeeper: ``score_file`` Parquet in → Parquet out, reading, signature check, scoring and
  writing included, run in a child process whose peak RSS is reported (after a small warm-up
  run: the process's imports are not a per-book cost);
- raw: the model's raw call on in-memory arrays. GLM: ``np.exp(X @ beta + b)`` with X the dense
  design matrix the fitted pipeline's preprocessor produces; LightGBM: ONNX Runtime
  ``InferenceSession.run`` (every thread) on the float32 matrix;
- round trip: reading the book and writing it back with a prediction column, pricing nothing;
- the physical limit of an end-to-end run is the slower of the raw call and the round trip
  (the GLM's raw call is far faster than any file I/O); the target is >= 0.8x of it;
- MLflow: ``mlflow.pyfunc`` ``predict`` on the in-memory pandas frame (no file reading or writing).

Run it with ``bash benchmarks/run-batch.sh`` (uses .venv-bench, which has MLflow). Prints a
markdown table. ``--quick`` uses books of 200k policies.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "beMTPL97.parquet"
CATEGORICAL = ["coverage", "fuel", "use", "fleet"]
NUMERIC = ["ageph", "bm", "power", "agec"]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def portfolio() -> tuple[Any, list[str], list[str], str, str]:
    """(frame, categorical, numeric, exposure, claim count) of the real or synthetic book."""
    import pandas as pd

    if SHARED.exists():
        frame = pd.read_parquet(SHARED)
        for name in CATEGORICAL:
            frame[name] = frame[name].astype(str)
        return frame, CATEGORICAL, NUMERIC, "expo", "nclaims"
    from ratekeeper.synthetic import CATEGORICAL_FACTORS, NUMERIC_FACTORS, motor_portfolio

    say(f"{SHARED} is absent: using the synthetic portfolio")
    frame = motor_portfolio(160_000)
    for name in CATEGORICAL_FACTORS:
        frame[name] = frame[name].astype(str)
    return frame, list(CATEGORICAL_FACTORS), list(NUMERIC_FACTORS), "exposure", "claim_count"


def fit_models(frame: Any, cats: list[str], nums: list[str], expo: str, claims: str) -> Any:
    import lightgbm as lgb
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import PoissonRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frequency = frame[claims] / frame[expo]
    glm = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(drop="first"), cats),
                        ("numeric", "passthrough", nums),
                    ],
                    sparse_threshold=0.0,
                ),
            ),
            ("glm", PoissonRegressor(alpha=1e-6, solver="newton-cholesky", max_iter=300)),
        ]
    )
    glm.fit(frame[cats + nums], frequency, glm__sample_weight=frame[expo])
    gbm_frame = frame[cats + nums].astype({name: "category" for name in cats})
    gbm = lgb.LGBMRegressor(
        objective="poisson", n_estimators=300, learning_rate=0.05, num_leaves=31, verbose=-1
    )
    gbm.fit(gbm_frame, frequency, sample_weight=frame[expo])
    return glm, gbm, gbm_frame


def write_book(frame: Any, rows: int, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(rows)
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, rows, 1_000_000):
            picks = rng.integers(0, len(frame), min(1_000_000, rows - start))
            part = frame.iloc[picks]
            writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))


def child(registry: str, uri: str, source: str, target: str) -> None:
    """Score in a fresh process; print seconds and peak RSS as JSON.

    A 20,000-policy warm-up run comes first, as the raw call and MLflow are timed warm: the
    process's one-time costs (importing pandas and pyarrow's compute and Parquet modules,
    about 0.3-0.4 s) are not a per-book cost."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import ratekeeper as rk
    from ratekeeper.batch.scoring import score_file

    scorer = rk.Registry(registry).load_model(uri)
    warm_up = Path(target).with_name("warm-up.parquet")
    first = next(pq.ParquetFile(source).iter_batches(batch_size=20_000))
    pq.write_table(pa.Table.from_batches([first]), warm_up.with_suffix(".in.parquet"))
    score_file(scorer, warm_up.with_suffix(".in.parquet"), warm_up)
    started = time.perf_counter()
    summary = score_file(scorer, source, target)
    seconds = time.perf_counter() - started
    # VmHWM, the peak of this process's own memory since its exec. (ru_maxrss would not do: Linux
    # carries the forking parent's RSS into it, and the parent holds the whole book in pandas.)
    status = Path("/proc/self/status").read_text()
    peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    peak *= 1024
    print(json.dumps({"seconds": seconds, "rows": summary.rows_read, "peak_rss": peak}))


def ratekeeper_run(registry: Path, uri: str, source: Path, target: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(registry), uri, str(source), str(target)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def best_of(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def io_floor(source: Path, target: Path) -> float:
    """Read the book and write it back with a prediction column, pricing nothing: the file I/O
    every end-to-end run pays, whatever the model. Written as a careful pyarrow user would:
    the same chunks, string columns read dictionary-encoded, zstd, and the prediction column
    (distinct values) written without a dictionary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prices = pa.array(np.random.default_rng(0).gamma(2.0, 0.05, 262_144))

    def round_trip() -> None:
        book = pq.ParquetFile(source)
        strings = [f.name for f in book.schema_arrow if pa.types.is_string(f.type)]
        writer = None
        for batch in pq.ParquetFile(source, read_dictionary=strings).iter_batches(262_144):
            table = pa.Table.from_batches([batch])
            table = table.append_column("prediction", prices[: batch.num_rows])
            if writer is None:
                dictionary = [name for name in table.column_names if name != "prediction"]
                writer = pq.ParquetWriter(
                    target, table.schema, compression="zstd", use_dictionary=dictionary
                )
            writer.write_table(table)
        assert writer is not None
        writer.close()

    return best_of(round_trip, 2)


def raw_glm(glm: Any, book: Any, cats: list[str], nums: list[str]) -> float:
    design = np.ascontiguousarray(glm[0].transform(book[cats + nums]), dtype=np.float64)
    beta, b = glm[-1].coef_, float(glm[-1].intercept_)
    return best_of(lambda: np.exp(design @ beta + b), 3)


def raw_gbm(
    onnx_bytes: bytes, gbm_frame: Any, book: Any, cats: list[str], nums: list[str]
) -> float:
    import onnxruntime as ort

    matrix = np.empty((len(book), len(cats) + len(nums)), dtype=np.float32)
    for j, name in enumerate(cats + nums):
        if name in cats:
            levels = list(gbm_frame[name].cat.categories)
            codes = np.asarray(
                book[name].astype("category").cat.set_categories(levels).cat.codes, np.float32
            )
            matrix[:, j] = codes
        else:
            matrix[:, j] = book[name].to_numpy(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 0
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: matrix}
    return best_of(lambda: session.run(None, feed), 2)


def mlflow_predict(folder: Path, model: Any, flavor: str, book: Any, features: list[str]) -> float:
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    # Artifacts in the benchmark's own folder (MLflow's default is ./mlruns in the checkout).
    if mlflow.get_experiment_by_name("batch") is None:
        mlflow.create_experiment("batch", artifact_location=(folder / "mlartifacts").as_uri())
    mlflow.set_experiment("batch")
    with mlflow.start_run():
        log = mlflow.sklearn.log_model if flavor == "sklearn" else mlflow.lightgbm.log_model
        info = log(model, name="model")
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    frame = book[features]
    return best_of(lambda: loaded.predict(frame), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="books of 200k policies only")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--mlflow-max-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    sizes = [200_000] if args.quick else [1_000_000, 10_000_000]

    import pandas as pd

    import ratekeeper as rk

    work = Path(tempfile.mkdtemp(prefix="rk-bench-batch-"))
    frame, cats, nums, expo, claims = portfolio()
    say(f"fitting the GLM and the 300-tree LightGBM on {len(frame):,} policies")
    glm, gbm, gbm_frame = fit_models(frame, cats, nums, expo, claims)
    registry = rk.Registry.create(work / "registry", admin="bench", policy="open")[0]
    registry.register_model(glm, "glm", training_data=frame, exposure=expo)
    gbm_training = gbm_frame.assign(**{expo: frame[expo]})
    gbm_version = registry.register_model(gbm, "gbm", training_data=gbm_training, exposure=expo)
    onnx_bytes = registry.load_package(gbm_version).files["model.onnx"]
    book_columns = frame[cats + nums + [expo, claims]]

    rows_out = []
    for size in sizes:
        source = work / f"book-{size}.parquet"
        say(f"writing a {size:,}-policy book")
        write_book(book_columns, size, source)
        book = pd.read_parquet(source)
        say(f"{size:,} policies: the file round trip alone (the I/O floor)")
        floor = io_floor(source, work / "round-trip.parquet")
        for label, uri in (("GLM", "models:/glm/1"), ("LightGBM 300 trees", "models:/gbm/1")):
            say(f"{label}, {size:,} policies: ratekeeper score_file")
            ours = ratekeeper_run(work / "registry", uri, source, work / "priced.parquet")
            say(f"{label}, {size:,} policies: raw call")
            if label == "GLM":
                raw = raw_glm(glm, book, cats, nums)
            else:
                raw = raw_gbm(onnx_bytes, gbm_frame, book, cats, nums)
            mlflow_rate = None
            if not args.no_mlflow and size <= args.mlflow_max_rows:
                say(f"{label}, {size:,} policies: mlflow.pyfunc predict")
                if label == "GLM":
                    seconds = mlflow_predict(work, glm, "sklearn", book, cats + nums)
                else:
                    gbm_book = book[cats + nums].astype(
                        {n: pd.CategoricalDtype(gbm_frame[n].cat.categories) for n in cats}
                    )
                    seconds = mlflow_predict(work, gbm, "lightgbm", gbm_book, cats + nums)
                mlflow_rate = size / seconds
            rows_out.append(
                (label, size, size / ours["seconds"], size / raw, size / floor, mlflow_rate, ours)
            )
        del book
    shutil.rmtree(work, ignore_errors=True)

    # The physical limit of an end-to-end run is the slower of its two unavoidable parts: the
    # model's raw call and the file round trip (reading can overlap pricing, but neither can be
    # skipped). The target (>= 0.8x) applies to the ratio to that limit.
    print("| model | policies | ratekeeper score_file (end to end) | raw call (in memory) "
          "| file round trip, no pricing | physical limit (slower of the two) "
          "| ratio to the limit | ratio to the raw call | mlflow.pyfunc predict (in memory) "
          "| peak RSS |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, size, ours_rate, raw_rate, floor_rate, mlflow_rate, ours in rows_out:
        mlflow_cell = f"{mlflow_rate / 1e6:.2f}M rows/s" if mlflow_rate else "skipped"
        limit = min(raw_rate, floor_rate)
        limit_name = "raw call" if raw_rate <= floor_rate else "round trip"
        print(
            f"| {label} | {size / 1e6:g}M | {ours_rate / 1e6:.2f}M rows/s "
            f"| {raw_rate / 1e6:.2f}M rows/s | {floor_rate / 1e6:.2f}M rows/s "
            f"| {limit / 1e6:.2f}M rows/s ({limit_name}) | **{ours_rate / limit:.2f}×** "
            f"| {ours_rate / raw_rate:.2f}× | {mlflow_cell} "
            f"| {ours['peak_rss'] / 2**20:,.0f} MiB |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
