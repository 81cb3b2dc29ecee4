"""A pyfunc model for benchmarks/mlflow_protocol_cases.py ("models from code": no pickle).

Prices 0.1 × exposure. Logged with a signature of the synthetic motor portfolio's rating
factors, so `mlflow models serve` checks requests against the same named columns as the
ratekeeper model it is compared with.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd


class ConstantRate(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return 0.1 * model_input["exposure"].astype(float).to_numpy()


mlflow.models.set_model(ConstantRate())
