"""Benchmark the ratekeeper registry and scorer against MLflow 3, on the same machine, in one run.

Run it with ``bash benchmarks/run.sh`` (which creates ``.venv-bench`` with MLflow in it).
Everything is measured on the Belgian MTPL portfolio (``../shared/data/beMTPL97.parquet``),
read by path, with a Poisson GLM pipeline and a 300-tree LightGBM Poisson model. Both registries
live in one temporary folder (ratekeeper: embedded SQLite + local blobs; MLflow: SQLite backend
store + local artifacts). Every figure is a median over ``n`` repetitions; on a noisy machine
compare the ratios within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bemtpl import (
    CATEGORICAL,
    DATA,
    EXPOSURE,
    FACTORS,
    NUMERIC,
    ROOT,
    TARGET,
    fit_gbm,
    fit_glm,
    load_frames,
    say,
)

BIG_ROWS = 1_000_000
BIG_BUDGET_S = 60.0
"""Time allowed for the 1M-row pairs of one model before fewer than ``n`` are kept (the n shown)."""


@dataclass(frozen=True)
class Repeats:
    """How many times each thing is measured (medians are taken over these)."""

    register_model: int = 3
    registry_op: int = 50
    load: int = 20
    mlflow_load: int = 5
    fresh: int = 5
    mlflow_fresh: int = 1
    quotes: int = 2000
    mlflow_quotes: int = 200
    big_glm: int = 5
    big_gbm: int = 3
    mlflow_big_glm: int = 3
    mlflow_big_gbm: int = 1

    @classmethod
    def quick(cls) -> Repeats:
        return cls(register_model=1, registry_op=10, load=5, mlflow_load=2, fresh=2,
                   mlflow_fresh=1, quotes=500, mlflow_quotes=50, big_glm=1, big_gbm=1,
                   mlflow_big_glm=1, mlflow_big_gbm=1)


@dataclass
class Row:
    what: str
    n: str
    ours: str
    mlflow: str = "—"
    raw: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None


# -- timing helpers ---------------------------------------------------------------------------

def clock(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    n: int, *fns: Callable[[int], Any], budget: float | None = None
) -> list[list[float]]:
    """Time ``fn(i)`` for i in range(n), alternating the functions so that drift hits all alike.

    With a ``budget`` (seconds), stop early once it is spent (after at least two rounds): on a
    busy machine the 1M-row ONNX calls take several times longer, and the run stays bounded.
    """
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    for i in range(n):
        for slot, fn in zip(times, fns, strict=True):
            slot.append(clock(partial(fn, i)))
        if budget is not None and i >= 1 and time.perf_counter() - start > budget:
            break
    return times


def ignoring_index(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[int], Any]:
    """``fn(*args, **kwargs)`` as a function of the repetition index (which it ignores)."""

    def call(_i: int) -> Any:
        return fn(*args, **kwargs)

    return call


def keep_last(fn: Callable[[int], Any], into: dict[str, Any], key: str) -> Callable[[int], Any]:
    """Wrap ``fn`` so that its latest result is kept (checked after timing, not inside it)."""

    def wrapped(i: int) -> Any:
        into[key] = fn(i)
        return into[key]

    return wrapped


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def fmt_s(seconds: float) -> str:
    return f"{seconds:,.2f} s"


def fmt_rate(rows_per_s: float) -> str:
    return f"{rows_per_s / 1e6:,.2f} M rows/s"


def faster(ours: float, theirs: float) -> str:
    """'12.3× faster' when ours takes less time than theirs, '0.5× (slower)' otherwise."""
    factor = theirs / ours
    return f"{factor:,.1f}× faster" if factor >= 1 else f"{factor:.2f}× (slower)"


def tile(frame: Any, rows: int) -> Any:
    import pandas as pd

    copies = -(-rows // len(frame))
    return pd.concat([frame] * copies, ignore_index=True).iloc[:rows].reset_index(drop=True)


def encode_and_multiply(model: Any, frame: Any) -> Callable[[int], Any]:
    """The fair reference for pricing a book with the GLM: start from the frame's string factors.

    Each categorical factor becomes pandas ``Categorical`` codes over the encoder's fitted levels,
    the codes fill the same one-hot design matrix the pipeline builds (first level dropped,
    numerics passed through), then one matrix product and ``exp``. No checks on the values.
    """
    import numpy as np
    import pandas as pd

    onehot = model[0].named_transformers_["categorical"]
    beta, intercept = model[-1].coef_, float(model[-1].intercept_)
    numeric = frame[NUMERIC]
    columns = {name: frame[name] for name in CATEGORICAL}
    every_row = np.arange(len(frame))

    def run(_i: int) -> Any:
        design = np.zeros((len(frame), len(beta)))
        start = 0
        for name, levels, dropped in zip(CATEGORICAL, onehot.categories_, onehot.drop_idx_,
                                         strict=True):
            codes = pd.Categorical(columns[name], categories=levels).codes
            kept = codes != dropped
            design[every_row[kept], start + codes[kept] - (codes[kept] > dropped)] = 1.0
            start += len(levels) - 1
        design[:, start:] = numeric.to_numpy(dtype=np.float64)
        return np.exp(design @ beta + intercept)

    return run


def policies(frame: Any, count: int) -> tuple[list[int], list[dict[str, Any]]]:
    """Real policies as a quote request carries them: plain str / int / float values."""
    import numpy as np

    rows = np.random.default_rng(97).choice(len(frame), size=count, replace=False)
    out = []
    for i in rows:
        record = frame.iloc[int(i)]
        policy: dict[str, Any] = {name: str(record[name]) for name in CATEGORICAL}
        policy.update({name: int(record[name]) for name in NUMERIC})
        policy[EXPOSURE] = float(record[EXPOSURE])
        out.append(policy)
    return [int(i) for i in rows], out


# -- MLflow -----------------------------------------------------------------------------------

class MlflowSide:
    """MLflow 3 with a SQLite backend store and a local artifact folder, models logged once."""

    def __init__(self, folder: Path) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.ERROR)
        import mlflow
        from mlflow import MlflowClient

        self.mlflow = mlflow
        self.version = mlflow.__version__
        self.db = f"sqlite:///{folder / 'mlflow.db'}"
        mlflow.set_tracking_uri(self.db)
        mlflow.set_registry_uri(self.db)
        self.experiment = mlflow.create_experiment(
            "bench", artifact_location=(folder / "mlflow-artifacts").as_uri()
        )
        self.client = MlflowClient()
        self.logged: dict[str, Any] = {}
        self.run_ids: dict[str, str] = {}

    def log(self, key: str, model: Any) -> float:
        """Log a model once (pickled, as MLflow stores it). No signature: see the notes."""
        import mlflow.lightgbm
        import mlflow.sklearn

        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with self.mlflow.start_run(experiment_id=self.experiment) as run:
                if key == "glm":
                    info = mlflow.sklearn.log_model(model, name="model",
                                                    pip_requirements=["scikit-learn"])
                else:
                    info = mlflow.lightgbm.log_model(model, name="model",
                                                     pip_requirements=["lightgbm"])
        self.logged[key] = info
        self.run_ids[key] = run.info.run_id
        return time.perf_counter() - start

    def create_version(self, registered: str, key: str) -> Any:
        info = self.logged[key]
        return self.client.create_model_version(
            registered, source=info.model_uri, run_id=self.run_ids[key], model_id=info.model_id
        )

    def transition(self, name: str, version: int, stage: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated since MLflow 2.9, still present in 3.x
            return self.client.transition_model_version_stage(name, str(version), stage)

    def load(self, uri: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.mlflow.pyfunc.load_model(uri)


# -- measurements -----------------------------------------------------------------------------

@dataclass
class Bench:
    repeats: Repeats
    frame: Any
    gbm_frame: Any
    models: dict[str, Any]
    registry: Any
    folder: Path
    mlf: MlflowSide | None
    rows: list[Row]
    notes: list[str]

    def frame_for(self, key: str) -> Any:
        return self.frame if key == "glm" else self.gbm_frame

    def register_model(self) -> None:
        n = self.repeats.register_model
        for key in ("glm", "gbm"):
            register = partial(self.registry.register_model, self.models[key], key,
                               training_data=self.frame_for(key), target=TARGET,
                               exposure=EXPOSURE)
            times = [clock(register) for _ in range(n)]
            t = median(times)
            self.rows.append(Row(
                f"register_model {key.upper()} (convert + profile {len(self.frame):,} rows)",
                str(n), fmt_s(t), target="≤ 3 s", met=t <= 3.0,
            ))
            say(f"register_model {key}: {fmt_s(t)}")

    def registry_write(self) -> None:
        from ratekeeper.packaging import lineage
        from ratekeeper.packaging.package import build_package

        n = self.repeats.registry_op
        for key in ("glm", "gbm"):
            frame = self.frame_for(key)
            package = build_package(self.models[key], frame, target=TARGET, exposure=EXPOSURE)
            facts = {"training_data": lineage.data_fingerprint(frame),
                     "libraries": lineage.library_versions(), "git": lineage.git_state(ROOT)}
            name = f"{key}-write"
            ours = ignoring_index(
                self.registry.register_package, package, name, metrics={"deviance": 0.5},
                lineage=facts, description=None, tags={"team": "pricing"},
            )
            ours(-1)  # the first write stores the blobs; later writes find them
            fns: list[Callable[[int], Any]] = [ours]
            if self.mlf is not None:
                self.mlf.client.create_registered_model(name)
                self.mlf.create_version(name, key)
                fns.append(ignoring_index(self.mlf.create_version, name, key))
            times = interleaved(n, *fns)
            t = median(times[0])
            row = Row(f"registry write, packaged {key.upper()} (register_package)", str(n),
                      fmt_ms(t), target="≤ 10 ms", met=t <= 0.010)
            if self.mlf is not None:
                theirs = median(times[1])
                row.mlflow, row.ratio = fmt_ms(theirs), faster(t, theirs)
            self.rows.append(row)
            say(f"registry write {key}: {fmt_ms(t)}")

    def moves(self) -> None:
        n = self.repeats.registry_op
        while self.registry.get_model("glm").latest_version < 2:  # moves alternate 1 and 2
            self.registry.register_model(self.models["glm"], "glm", training_data=self.frame,
                                         target=TARGET, exposure=EXPOSURE)
        stages = ("Staging", "Production")
        ours_stage = [lambda i: self.registry.transition_stage("glm", 1, stages[i % 2])]
        ours_alias = [lambda i: self.registry.set_alias("glm", "champion", 1 + i % 2)]
        if self.mlf is not None:
            mlf = self.mlf
            mlf.client.create_registered_model("glm")
            for _ in range(2):
                mlf.create_version("glm", "glm")
            ours_stage.append(lambda i: mlf.transition("glm", 1, stages[i % 2]))
            ours_alias.append(
                lambda i: mlf.client.set_registered_model_alias("glm", "champion", str(1 + i % 2))
            )
        for what, fns in (("stage move (transition_stage)", ours_stage),
                          ("alias move (set_alias)", ours_alias)):
            times = interleaved(n, *fns)
            t = median(times[0])
            row = Row(what, str(n), fmt_ms(t), target="≤ 5 ms", met=t <= 0.005)
            if self.mlf is not None:
                theirs = median(times[1])
                row.mlflow, row.ratio = fmt_ms(theirs), faster(t, theirs)
            self.rows.append(row)
            say(f"{what}: {fmt_ms(t)}")
        # Leave both models with champion -> version 1 and version 1 in Production.
        self.registry.set_alias("glm", "champion", 1)
        self.registry.set_alias("gbm", "champion", 1)
        self.registry.transition_stage("gbm", 1, "Production")
        if self.mlf is not None:
            self.mlf.client.set_registered_model_alias("glm", "champion", "1")
            self.mlf.client.create_registered_model("gbm")
            self.mlf.create_version("gbm", "gbm")
            self.mlf.client.set_registered_model_alias("gbm", "champion", "1")

    def load_cold(self) -> None:
        for key in ("glm", "gbm"):
            uri = f"models:/{key}@champion"
            times = [clock(partial(self.registry.load_model, uri))
                     for _ in range(self.repeats.load)]
            t = median(times)
            row = Row(f"load_model {key.upper()}, Registry open (resolve + verify + scorer)",
                      str(self.repeats.load), fmt_ms(t), target="≤ 100 ms", met=t <= 0.100)
            if self.mlf is not None:
                theirs = median([clock(partial(self.mlf.load, uri))
                                 for _ in range(self.repeats.mlflow_load)])
                row.mlflow, row.ratio = fmt_ms(theirs), faster(t, theirs)
                row.n += f" / {self.repeats.mlflow_load}"
            self.rows.append(row)
            say(f"load_model {key}: {fmt_ms(t)}")

    def load_fresh(self, policy: dict[str, Any]) -> None:
        """A new Python process: imports, open the registry, load, price one policy."""
        for key in ("glm", "gbm"):
            uri = f"models:/{key}@champion"
            ours = [fresh_process(_FRESH_RATEKEEPER, str(self.folder / "rk"), uri, policy)
                    for _ in range(self.repeats.fresh)]
            whole = median([r["process"] for r in ours])
            inner = {k: median([r[k] for r in ours]) for k in ("import", "load", "quote")}
            row = Row(f"fresh process {key.upper()}: start → first quote", str(self.repeats.fresh),
                      fmt_ms(whole), target="(report)")
            detail = (f"{key.upper()} fresh process, ratekeeper: import {fmt_ms(inner['import'])}, "
                      f"open registry + load_model {fmt_ms(inner['load'])}, first predict_one "
                      f"{fmt_ms(inner['quote'])}; whole process incl. interpreter start "
                      f"{fmt_ms(whole)}")
            if self.mlf is not None:
                mlf_frame = self.frame_for(key)[FACTORS].iloc[[0]]
                levels = {name: [str(c) for c in self.gbm_frame[name].cat.categories]
                          for name in CATEGORICAL} if key == "gbm" else {}
                policy_frame = json.dumps({"frame": mlf_frame.astype(str).to_dict("list"),
                                           "numeric": NUMERIC, "categories": levels})
                theirs_runs = [fresh_process(_FRESH_MLFLOW, self.mlf.db, uri, policy_frame)
                               for _ in range(self.repeats.mlflow_fresh)]
                theirs = median([r["process"] for r in theirs_runs])
                t_inner = {k: median([r[k] for r in theirs_runs])
                           for k in ("import", "load", "quote")}
                row.mlflow, row.ratio = fmt_ms(theirs), faster(whole, theirs)
                row.n += f" / {self.repeats.mlflow_fresh}"
                detail += (f"; MLflow: import {fmt_ms(t_inner['import'])}, pyfunc.load_model "
                           f"{fmt_ms(t_inner['load'])} (opens its SQLite store, copies the "
                           f"artifacts, imports the flavor, unpickles), first predict "
                           f"{fmt_ms(t_inner['quote'])}")
            self.rows.append(row)
            self.notes.append(detail)
            say(detail)

    def quotes(self) -> None:
        import numpy as np

        rows, books = policies(self.frame, self.repeats.quotes)
        for key, target in (("glm", 50e-6), ("gbm", 100e-6)):
            scorer = self.registry.load_model(f"models:/{key}@champion")
            for policy in books[:50]:
                scorer.predict_one(policy)  # warm-up
            ours = []
            for policy in books:
                start = time.perf_counter_ns()
                scorer.predict_one(policy)
                ours.append((time.perf_counter_ns() - start) / 1e9)
            t = median(ours)
            row = Row(f"predict_one {key.upper()} (policy dict)", str(len(books)), fmt_us(t),
                      target=f"≤ {target * 1e6:.0f} µs", met=t <= target)
            if self.mlf is not None:
                model = self.mlf.load(f"models:/{key}@champion")
                source = self.frame_for(key)[FACTORS]
                count = self.repeats.mlflow_quotes
                one_rows = [source.iloc[[i]] for i in rows[:count]]
                model.predict(one_rows[0])
                theirs, gaps = [], []
                for policy, one_row in zip(books, one_rows, strict=False):
                    start = time.perf_counter_ns()
                    rate = float(np.asarray(model.predict(one_row)).reshape(-1)[0])
                    theirs.append((time.perf_counter_ns() - start) / 1e9)
                    ours_rate = scorer.predict_one(policy) / policy[EXPOSURE]
                    gaps.append(abs(ours_rate - rate) / rate)
                row.mlflow, row.ratio = fmt_us(median(theirs)), faster(t, median(theirs))
                row.n += f" / {count}"
                self.notes.append(f"predict_one {key.upper()} vs MLflow pyfunc on the same "
                                  f"{count} policies: max relative difference {max(gaps):.1e}")
            self.rows.append(row)
            say(f"predict_one {key}: {fmt_us(t)}")

    def big_predict(self) -> None:
        import numpy as np

        self._big_glm(np)
        self._big_gbm(np)

    def _big_glm(self, np: Any) -> None:
        big = tile(self.frame[[*FACTORS, EXPOSURE]], BIG_ROWS)
        scorer = self.registry.load_model("models:/glm@champion")
        model = self.models["glm"]
        design = model[0].transform(big[FACTORS])
        design = np.ascontiguousarray(design.toarray() if hasattr(design, "toarray") else design,
                                      dtype=np.float64)
        beta, intercept = model[-1].coef_, float(model[-1].intercept_)

        def raw(_i: int) -> Any:
            return np.exp(design @ beta + intercept)

        self._big("glm", big, scorer, raw, self.repeats.big_glm, self.repeats.mlflow_big_glm,
                  fair=encode_and_multiply(model, big))

    def _big_gbm(self, np: Any) -> None:
        import onnxruntime as ort

        big = tile(self.gbm_frame[[*FACTORS, EXPOSURE]], BIG_ROWS)
        scorer = self.registry.load_model("models:/gbm@champion")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(scorer.package.files["model.onnx"], sess_options=options,
                                       providers=["CPUExecutionProvider"])
        matrix = np.empty((len(big), len(FACTORS)), dtype=np.float32)
        for j, name in enumerate(FACTORS):
            column = big[name]
            matrix[:, j] = column.cat.codes if name in CATEGORICAL else column
        feed = {session.get_inputs()[0].name: matrix}

        def raw(_i: int) -> Any:
            return session.run(None, feed)[0].reshape(-1)

        self._big("gbm", big, scorer, raw, self.repeats.big_gbm, self.repeats.mlflow_big_gbm)

    def _big(self, key: str, big: Any, scorer: Any, raw: Callable[[int], Any], n: int,
             n_mlflow: int, fair: Callable[[int], Any] | None = None) -> None:
        """``raw`` prices a pre-encoded matrix; ``fair``, when given, encodes the frame too."""
        import numpy as np

        out: dict[str, Any] = {}
        fns = [keep_last(lambda _i: scorer.predict(big), out, "ours"), keep_last(raw, out, "raw")]
        if fair is not None:
            fns.append(keep_last(fair, out, "fair"))
        times = interleaved(n, *fns, budget=BIG_BUDGET_S)
        n = len(times[0])
        rate = out["ours"] / big[EXPOSURE].to_numpy()  # predict() prices: rate × exposure
        gap = float(np.max(np.abs(rate - out["raw"]) / out["raw"]))
        ours, theirs_raw = len(big) / median(times[0]), len(big) / median(times[1])
        # Each repetition times ratekeeper and the raw call back to back: the median of those
        # paired ratios cancels most of the machine's drift (ONNX Runtime's time varies a lot).
        ratio = median([raw_s / ours_s for ours_s, raw_s in zip(*times[:2], strict=True)])
        # A GLM's "raw call" here is a product on a matrix already one-hot encoded: the rows a
        # user has carry strings, so the target applies to encode + multiply (the next row).
        # For ONNX the raw call takes the same numbers ratekeeper gets: the target applies here.
        row = Row(f"predict {key.upper()}, {len(big):,} rows (DataFrame)", str(n), fmt_rate(ours),
                  raw=fmt_rate(theirs_raw), ratio=f"{ratio:.2f}× raw",
                  target="(pre-encoded: reference)" if fair is not None else "≥ 0.9× raw",
                  met=None if fair is not None else ratio >= 0.9)
        self.notes.append(f"predict {key.upper()} {len(big):,} rows: ratekeeper "
                          f"{fmt_s(median(times[0]))}, raw call {fmt_s(median(times[1]))} "
                          f"(ratio: median of {n} back-to-back pairs); "
                          f"max relative difference {gap:.1e}")
        if self.mlf is not None:
            model = self.mlf.load(f"models:/{key}@champion")
            frame = big[FACTORS]
            mlflow_s = median([clock(lambda: model.predict(frame)) for _ in range(n_mlflow)])
            row.mlflow = fmt_rate(len(big) / mlflow_s)
            row.ratio += f"; {mlflow_s / median(times[0]):.1f}× MLflow"
            row.n += f" / {n_mlflow}"
        self.rows.append(row)
        say(f"predict {key} 1M: {fmt_rate(ours)} vs raw {fmt_rate(theirs_raw)}")
        if fair is not None:
            self._fair_row(key, big, n, times[0], times[2], rate, out["fair"])

    def _fair_row(self, key: str, big: Any, n: int, ours_s: list[float], fair_s: list[float],
                  rate: Any, fair_rate: Any) -> None:
        """The same predict against the fair reference: encode the string factors, then price."""
        import numpy as np

        gap = float(np.max(np.abs(rate - fair_rate) / fair_rate))
        ratio = median([f / o for o, f in zip(ours_s, fair_s, strict=True)])
        ours, fair = len(big) / median(ours_s), len(big) / median(fair_s)
        self.rows.append(Row(
            f"predict {key.upper()}, {len(big):,} rows vs encode + multiply", str(n),
            fmt_rate(ours), raw=fmt_rate(fair), ratio=f"{ratio:.2f}× encode + multiply",
            target="≥ 0.9× raw", met=ratio >= 0.9,
        ))
        self.notes.append(
            f"predict {key.upper()} {len(big):,} rows vs encode + multiply (pd.Categorical codes "
            f"of the string factors → the one-hot design matrix → exp(X @ beta + intercept); no "
            f"checks): ratekeeper {fmt_s(median(ours_s))}, encode + multiply "
            f"{fmt_s(median(fair_s))} (ratio: median of {n} back-to-back triples); max relative "
            f"difference {gap:.1e}"
        )
        say(f"predict {key} 1M: {fmt_rate(ours)} vs encode + multiply {fmt_rate(fair)}")


_FRESH_RATEKEEPER = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from ratekeeper import Registry, Settings
t1 = time.perf_counter()
home = Path(sys.argv[1])
registry = Registry(home, settings=Settings(home=home, user="bench"))
scorer = registry.load_model(sys.argv[2])
t2 = time.perf_counter()
scorer.predict_one(json.loads(sys.argv[3]))
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "quote": t3 - t2}))
"""

_FRESH_MLFLOW = r"""
import json, logging, os, sys, time, warnings
warnings.simplefilter("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
t0 = time.perf_counter()
import mlflow
import pandas as pd
t1 = time.perf_counter()
logging.getLogger("mlflow").setLevel(logging.ERROR)
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_registry_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
t2 = time.perf_counter()
body = json.loads(sys.argv[3])
frame = pd.DataFrame(body["frame"])
for name in body["numeric"]:
    frame[name] = frame[name].astype("int32")
for name, levels in body["categories"].items():
    frame[name] = pd.Categorical(frame[name], categories=levels)
model.predict(frame)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "quote": t3 - t2}))
"""


def fresh_process(code: str, *args: Any) -> dict[str, float]:
    argv = [a if isinstance(a, str) else json.dumps(a) for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATEKEEPER_")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False)
    whole = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"fresh-process load failed:\n{done.stderr[-2000:]}")
    timings: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    timings["process"] = whole
    return timings


# -- output -----------------------------------------------------------------------------------

HEADERS = ("measurement", "n", "ratekeeper", "MLflow 3", "raw call", "ratio", "target", "met")


def cells(row: Row) -> tuple[str, ...]:
    met = "—" if row.met is None else ("yes" if row.met else "NO")
    return (row.what, row.n, row.ours, row.mlflow, row.raw, row.ratio, row.target, met)


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "measurement" else "right",
                         no_wrap=header != "measurement")
    for row in rows:
        style = None if row.met is None or row.met else "bold red"
        table.add_row(*cells(row), style=style)
    Console(width=200).print(table)


def markdown(rows: list[Row], title: str, notes: list[str]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join("---" if h == "measurement" else "---:" for h in HEADERS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def machine() -> str:
    import numpy
    import onnxruntime
    import pandas
    import sqlalchemy

    import ratekeeper

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from ratekeeper.packaging.lineage import git_state

    git = git_state(ROOT)
    commit = f" at {git['commit'][:10]}{' + local changes' if git['dirty'] else ''}" if git else ""
    return (f"{os.cpu_count()} × {cpu}, Python {sys.version.split()[0]}, ratekeeper "
            f"{ratekeeper.__version__}{commit}, numpy {numpy.__version__}, "
            f"pandas {pandas.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"SQLAlchemy {sqlalchemy.__version__}")


# -- main -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="path of beMTPL97.parquet")
    parser.add_argument("--quick", action="store_true", help="few repetitions (a smoke run)")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow columns")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)

    if not args.data.is_file():
        print(f"error: the benchmark data {args.data} is missing. It is read by path from "
              "../shared/data/ beside the project (never copied); pass --data PATH.",
              file=sys.stderr)
        return 2
    if not args.no_mlflow:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            print("error: MLflow is not installed in this Python. Run `bash benchmarks/run.sh` "
                  "(it creates .venv-bench with benchmarks/requirements.txt), or pass --no-mlflow.",
                  file=sys.stderr)
            return 2

    started, load_before = time.perf_counter(), os.getloadavg()[0]
    repeats = Repeats.quick() if args.quick else Repeats()
    frame, gbm_frame = load_frames(args.data)
    say(f"read {len(frame):,} policies from {args.data.name}")
    fit_started = time.perf_counter()
    models = {"glm": fit_glm(frame)}
    glm_fit = time.perf_counter() - fit_started
    models["gbm"] = fit_gbm(gbm_frame)
    gbm_fit = time.perf_counter() - fit_started - glm_fit
    say(f"fitted GLM in {fmt_s(glm_fit)}, LightGBM (300 trees) in {fmt_s(gbm_fit)}")

    from ratekeeper import Registry, Settings

    with tempfile.TemporaryDirectory(prefix="ratekeeper-bench-") as tmp:
        folder = Path(tmp)
        home = folder / "rk"
        registry, _token = Registry.create(
            home, admin="bench", policy="open", settings=Settings(home=home, user="bench")
        )
        mlf = None
        notes = [f"machine: {machine()}"]
        if not args.no_mlflow:
            mlf = MlflowSide(folder)
            logged = {key: mlf.log(key, model) for key, model in models.items()}
            notes.append(
                f"MLflow {mlf.version}: SQLite backend store and artifacts in the same temporary "
                f"folder; log_model took {fmt_s(logged['glm'])} (GLM) and "
                f"{fmt_s(logged['gbm'])} (LightGBM), outside the timings. Models are logged "
                "without a signature (MLflow's schema cannot express pandas categories), so "
                "pyfunc skips schema enforcement: this favours MLflow."
            )
            say(f"MLflow {mlf.version} ready")
        bench = Bench(repeats, frame, gbm_frame, models, registry, folder, mlf, [], notes)
        bench.register_model()
        bench.registry_write()
        bench.moves()
        bench.load_cold()
        _, (policy,) = policies(frame, 1)
        bench.load_fresh(policy)
        bench.quotes()
        bench.big_predict()
        registry.close()

    elapsed = time.perf_counter() - started
    title = (f"ratekeeper vs MLflow {mlf.version if mlf else '(skipped)'} — "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, medians over n runs "
             f"(ours / MLflow), whole run {elapsed:,.0f} s")
    notes.append(f"1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} "
                 f"at the end (on {os.cpu_count()} cores; above that, other work shared the CPUs)")
    notes.append("n: repetitions behind each median (ratekeeper / MLflow where they differ). "
                 "'ratio' sets ratekeeper against the other columns: '× faster' compares times; "
                 "'× raw', '× encode + multiply' and '× MLflow' compare rows/s (above 1 = "
                 "ratekeeper is faster).")
    print_table(bench.rows, title)
    for note in bench.notes:
        print(f"- {note}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(bench.rows, title, bench.notes))
        say(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
