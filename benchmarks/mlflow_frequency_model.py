"""The LightGBM frequency model as an MLflow pyfunc ("models from code"), for the serving benchmark.

``mlflow.lightgbm`` cannot serve this model from JSON: the booster was trained on pandas
categories and MLflow hands it object columns, which LightGBM refuses. This is the wrapper an
MLflow user writes: cast the rating factors to the training levels, predict the claim frequency
with the booster, multiply by the exposure (what a ratekeeper quote returns). Logged by
bench_serve.py with the booster file and the levels as artifacts.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pandas as pd

CATEGORICAL = ["coverage", "fuel", "use", "fleet"]
NUMERIC = ["ageph", "bm", "power", "agec"]
EXPOSURE = "expo"


class FrequencyModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def load_context(self, context: Any) -> None:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_file=context.artifacts["booster"])
        with open(context.artifacts["levels"]) as f:
            self.levels = json.load(f)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        frame = pd.DataFrame(
            {
                **{
                    name: pd.Categorical(model_input[name].astype(str), self.levels[name])
                    for name in CATEGORICAL
                },
                **{name: model_input[name] for name in NUMERIC},
            }
        )
        return self.booster.predict(frame) * model_input[EXPOSURE].to_numpy(dtype=float)


mlflow.models.set_model(FrequencyModel())
