#!/usr/bin/env bash
# Reproduce docs/benchmarks.md: ratekeeper vs MLflow 3 on this machine, in one run.
# Creates .venv-bench (Python 3.11, ratekeeper[train] editable + benchmarks/requirements.txt)
# when it is missing or incomplete, then runs the benchmark. Extra arguments go to the script,
# e.g. `bash benchmarks/run.sh --quick` or `--markdown out/bench.md`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${BENCH_VENV:-.venv-bench}"
PYTHON="${BENCH_PYTHON:-python3.11}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $PYTHON" >&2
    "$PYTHON" -m venv "$VENV"
    echo '*' > "$VENV/.gitignore"  # never committed
fi
if ! "$VENV/bin/python" -c "import mlflow, ratekeeper, sklearn, lightgbm, onnxmltools" 2>/dev/null; then
    echo "installing ratekeeper[train] and benchmarks/requirements.txt into $VENV" >&2
    "$VENV/bin/pip" install --quiet -e '.[train]' -r benchmarks/requirements.txt
fi

exec "$VENV/bin/python" benchmarks/bench_registry.py "$@"
