#!/bin/sh
# Trim the image's virtual environment of what a rating server never loads (run by the
# Dockerfile's build stage; the image test then prices policies and writes ledger Parquet).
# Sizes as installed, measured on the 2026-11-30 pins (requirements/serve.txt):
#   symbol tables of pyarrow, uvloop and SQLAlchemy (strip --strip-unneeded) 53 MB
#   pandas' test suite                                                    46 MB
#   pyarrow's Flight RPC and S3 libraries (ratekeeper's S3 is boto3's)   ~50 MB
#   botocore's models of every AWS service but S3, STS and SSO           ~26 MB
#   onnx's backend test data                                              17 MB
#   onnxruntime's C library for C/C++ callers (Python links its own)      35 MB
#   bytecode of modules a server never imports (the rest is compiled)    ~40 MB
#   onnxruntime's model-conversion tools, headers, tests, pip            ~20 MB
set -eu
venv=$1
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cd "$site"

rm -rf pandas/tests numpy/*/tests pyarrow/tests pyarrow/include pyarrow/src onnx/backend/test \
  onnxruntime/transformers onnxruntime/quantization onnxruntime/tools
# Flight and S3 are separate libraries that only their own modules link (readelf -d); Substrait
# is not: pyarrow.lib needs it. pyarrow.fs skips S3FileSystem when _s3fs is absent.
rm -f pyarrow/libarrow_flight.so* pyarrow/libarrow_python_flight.so* pyarrow/_flight.* \
  pyarrow/flight.py pyarrow/libarrow_s3.so* pyarrow/_s3fs.*
# A wheel cannot hold symbolic links: libarrow_python comes as three identical copies.
# Keep the one the other libraries name (the shortest, libarrow_python.so.NNNN), link the rest.
soname=$(cd pyarrow && ls libarrow_python.so.* | awk 'NR == 1 || length($0) < length(s) {s = $0} END {print s}')
for copy in pyarrow/libarrow_python.so pyarrow/libarrow_python.so.*; do
  if [ "$copy" != "pyarrow/$soname" ]; then ln -sf "$soname" "$copy"; fi
done
# boto3 for S3 alone: S3, STS (web identity: IRSA) and SSO credentials; the endpoint and
# partition tables stay.
find botocore/data -mindepth 1 -maxdepth 1 -type d \
  ! -name s3 ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} +
# The Python binding (onnxruntime_pybind11_state) links no libonnxruntime.so (readelf -d).
rm -f onnxruntime/capi/libonnxruntime.so*
# Only these three: the libraries auditwheel grafted with patchelf (numpy.libs' OpenBLAS...)
# break when stripped ("ELF load command address/offset not page-aligned"), and the others
# gain nothing (measured: numpy, pandas, onnxruntime, onnx already ship stripped).
find pyarrow uvloop sqlalchemy -type f \( -name '*.so' -o -name '*.so.*' \) \
  -exec strip --strip-unneeded {} +

# Bytecode: pip compiled every module; the root filesystem is read-only at run time, so what
# has none is compiled in memory at each start. Keep it for what serving, the migration job and
# the CLI import (found by importing them here), and for the whole of ratekeeper.
find . -name __pycache__ -type d -prune -exec rm -rf {} +
"$venv/bin/python" - <<'PY'
import importlib

for name in (
    "ratekeeper.cli.main", "ratekeeper.cli.serve", "ratekeeper.http.server",
    "ratekeeper.http.app", "ratekeeper.http.pricing_gate", "ratekeeper.http.startup",
    "ratekeeper.engine.drift_watcher", "ratekeeper.engine.ledger", "ratekeeper.store.database",
    "uvicorn.protocols.http.httptools_impl", "uvicorn.loops.uvloop", "uvicorn.lifespan.on",
    "psycopg", "sqlalchemy.dialects.postgresql.psycopg", "sqlalchemy.dialects.sqlite.pysqlite",
    "pyarrow.parquet", "pyarrow.dataset", "alembic.command", "alembic.runtime.migration",
    "boto3", "botocore.client", "onnxruntime", "onnx",
):
    importlib.import_module(name)
PY
"$venv/bin/python" -m compileall -q ratekeeper

"$venv/bin/python" -m pip uninstall --yes --quiet pip setuptools 2>/dev/null || true
rm -f "$venv"/bin/pip* "$venv"/bin/activate*
