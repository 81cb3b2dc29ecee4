"""The Belgian MTPL portfolio and the two models the benchmarks fit on it (benchmark-only).

Shared by bench_registry.py and bench_serve.py: the data is read by path from ../shared/data,
never copied into the project.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "beMTPL97.parquet"
CATEGORICAL = ["coverage", "fuel", "use", "fleet"]
NUMERIC = ["ageph", "bm", "power", "agec"]
FACTORS = CATEGORICAL + NUMERIC
EXPOSURE, TARGET = "expo", "nclaims"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_frames(path: Path) -> tuple[Any, Any]:
    """The GLM frame (string rating factors, as read) and the GBM frame (pandas categories)."""
    import pandas as pd

    frame = pd.read_parquet(path, columns=[*FACTORS, EXPOSURE, TARGET])
    gbm_frame = frame.copy()
    for name in CATEGORICAL:
        gbm_frame[name] = gbm_frame[name].astype("category")
    return frame, gbm_frame


def fit_glm(frame: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import PoissonRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    model = Pipeline([
        ("encode", ColumnTransformer([
            ("categorical", OneHotEncoder(drop="first"), CATEGORICAL),
            ("numeric", "passthrough", NUMERIC),
        ])),
        ("glm", PoissonRegressor(alpha=1e-6, solver="newton-cholesky", max_iter=300)),
    ])
    rate = frame[TARGET] / frame[EXPOSURE]
    return model.fit(frame[FACTORS], rate, glm__sample_weight=frame[EXPOSURE])


def fit_gbm(gbm_frame: Any) -> Any:
    import lightgbm as lgb

    model = lgb.LGBMRegressor(objective="poisson", n_estimators=300, verbose=-1)
    rate = gbm_frame[TARGET] / gbm_frame[EXPOSURE]
    return model.fit(gbm_frame[FACTORS], rate, sample_weight=gbm_frame[EXPOSURE])
