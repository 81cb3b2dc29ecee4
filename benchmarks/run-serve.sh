#!/usr/bin/env bash
# Reproduce docs/benchmarks-serving.md: the rating engine over HTTP vs `mlflow models serve` and
# the HTTP floor, on this machine, in one run (~7 minutes), then quotes during 40 MB holdout
# uploads (~1 minute).
# Uses .venv-bench (Python 3.11: ratekeeper[train] editable + benchmarks/requirements-serve.txt),
# creating or completing it when needed, and wrk (apt). Extra arguments go to the script,
# e.g. `bash benchmarks/run-serve.sh --quick` or `--markdown out/bench-serve.md`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${BENCH_VENV:-.venv-bench}"
PYTHON="${BENCH_PYTHON:-python3.11}"

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing wrk" >&2
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    else
        echo "error: wrk is missing: apt-get install -y wrk" >&2
        exit 1
    fi
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $PYTHON" >&2
    "$PYTHON" -m venv "$VENV"
    echo '*' > "$VENV/.gitignore"  # never committed
fi
if ! "$VENV/bin/python" -c "import mlflow, locust, ratekeeper, lightgbm, onnxmltools, sklearn, \
uvicorn, uvloop, httptools, orjson, prometheus_client" 2>/dev/null; then
    echo "installing ratekeeper[train] and benchmarks/requirements-serve.txt into $VENV" >&2
    "$VENV/bin/pip" install --quiet -e '.[train]' -r benchmarks/requirements-serve.txt
fi

"$VENV/bin/python" benchmarks/bench_serve.py "$@"
# Quotes while a modeller uploads 40 MB holdouts (issue 10's target: p99 within +20 %). Pinned
# where there are two cores or more: the server and the quote client on the first half, the
# uploader and the promotion-request process on the second (benchmarks/bench_upload.py).
if [ "$(nproc)" -ge 2 ]; then
    PYTHONPATH=src "$VENV/bin/python" benchmarks/bench_upload.py --megabytes 40 --workers 1 --pin
else
    PYTHONPATH=src "$VENV/bin/python" benchmarks/bench_upload.py --megabytes 40 --workers 1
fi
