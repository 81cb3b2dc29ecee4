#!/usr/bin/env bash
# Reproduce the batch-scoring table of docs/batch.md: ratekeeper score_file vs the raw call vs
# mlflow.pyfunc, on 1M and 10M policies. Uses .venv-bench (built by benchmarks/run.sh, which has
# MLflow; MLflow is never a runtime dependency). Extra arguments go to the script (--quick, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${BENCH_VENV:-.venv-bench}"
if ! "$VENV/bin/python" -c "import mlflow, ratekeeper, sklearn, lightgbm, onnxmltools" 2>/dev/null; then
    bash benchmarks/run.sh --help >/dev/null  # creates and fills the venv
fi
exec "$VENV/bin/python" benchmarks/bench_batch.py "$@"
