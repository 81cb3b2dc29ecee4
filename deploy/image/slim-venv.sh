#!/bin/sh
# Trim the image's virtual environment of what a rating server never loads (run by the
# Dockerfile's build stage). tests/test_container_image.py then imports every ratekeeper module
# in the image, drives the image's server on PostgreSQL through a registration, a promotion
# request (the gates, in pandas), /invocations, the drift watcher and the ledger's Parquet, and
# runs boto3 against a real S3 server: a trim that breaks one of them fails it.
#
# Sizes as installed, measured on the 2026-11-30 pins (requirements/serve.txt); the image added
# 319 MB to its base before the second round of trims below, 262 MB after (docs/deploy.md).
# First round:
#   symbol tables of pyarrow, uvloop and SQLAlchemy (strip --strip-unneeded) 53 MB
#   pandas' test suite                                                    46 MB
#   pyarrow's Flight RPC and S3 libraries (ratekeeper's S3 is boto3's)   ~50 MB
#   botocore's models of every AWS service but S3, STS and SSO           ~26 MB
#   onnx's backend test data                                              17 MB
#   onnxruntime's C library for C/C++ callers (Python links its own)      35 MB
#   bytecode of modules a server never imports (the rest is compiled)    ~40 MB
#   onnxruntime's model-conversion tools, headers, tests, pip            ~20 MB
# Second round (the files each removes in the first round's image; ~: summed by pattern):
#   the source of imported third-party modules (their bytecode stays)    26 MB
#   docstrings in that bytecode (but numpy's; asserts kept)              ~7 MB
#   numpy's f2py, distutils, headers, static library, test modules       ~4 MB
#   symbol tables of cryptography, httptools, google.protobuf, numpy     4.8 MB
#   C/Cython sources, headers and type stubs of every package           ~6 MB
#   pygments' lexers for languages nothing here highlights              ~4 MB
#   SQLAlchemy's MySQL, Oracle and SQL Server dialects, its test kit     ~4 MB
#   pyarrow's ORC, HDFS, GCS and Azure modules, its C++ test module      ~1 MB
#   botocore's endpoint table gzipped, its request examples              1.2 MB
#   command-line tools of the dependencies (f2py, pygmentize, ...)       <1 MB
set -eu
venv=$1
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cd "$site"

rm -rf pandas/tests numpy/tests numpy/*/tests numpy/*/*/tests pyarrow/tests pyarrow/include \
  pyarrow/src onnx/backend/test onnxruntime/transformers onnxruntime/quantization \
  onnxruntime/tools
# Flight and S3 are separate libraries that only their own modules link (readelf -d); Substrait,
# Dataset and Acero are not: pyarrow.lib needs them. pyarrow.fs skips S3FileSystem when _s3fs is
# absent, and likewise the HDFS, GCS and Azure file systems; pyarrow.dataset skips ORC.
rm -f pyarrow/libarrow_flight.so* pyarrow/libarrow_python_flight.so* pyarrow/_flight.* \
  pyarrow/flight.py pyarrow/libarrow_s3.so* pyarrow/_s3fs.* pyarrow/_hdfs.* pyarrow/_gcsfs.* \
  pyarrow/_azurefs.* pyarrow/_orc.* pyarrow/_dataset_orc.* pyarrow/orc.py \
  pyarrow/_pyarrow_cpp_tests.* pyarrow/*.pyx pyarrow/*.pxd pyarrow/*.pxi
# A wheel cannot hold symbolic links: libarrow_python comes as three identical copies.
# Keep the one the other libraries name (the shortest, libarrow_python.so.NNNN), link the rest.
soname=$(cd pyarrow && ls libarrow_python.so.* | awk 'NR == 1 || length($0) < length(s) {s = $0} END {print s}')
for copy in pyarrow/libarrow_python.so pyarrow/libarrow_python.so.*; do
  if [ "$copy" != "pyarrow/$soname" ]; then ln -sf "$soname" "$copy"; fi
done
# numpy: the Fortran wrapper generator, distutils, C headers and static library for building
# extensions, and the test-only extension modules (numpy imports none of them itself).
rm -rf numpy/f2py numpy/distutils numpy/_pyinstaller numpy/_core/include numpy/_core/lib \
  numpy/_core/_simd.* numpy/_core/_multiarray_tests.* numpy/_core/_operand_flag_tests.* \
  numpy/_core/_rational_tests.* numpy/_core/_struct_ufunc_tests.* numpy/_core/_umath_tests.* \
  numpy/conftest.py
# Sources and stubs for compilers and type checkers, in every package.
find . -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' -o -name '*.h' \
  -o -name '*.hpp' -o -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.proto' \) -delete
# Pygments comes with rich (the CLI's tables); only Python's lexer is ever used (rich's
# tracebacks and syntax). The lexer map and the other lexers' names stay.
find pygments/lexers -name '*.py' ! -name '__init__.py' ! -name '_mapping.py' \
  ! -name 'python.py' -delete
# SQLAlchemy: ratekeeper speaks SQLite and PostgreSQL; the dialects load by name.
rm -rf sqlalchemy/dialects/mysql sqlalchemy/dialects/oracle sqlalchemy/dialects/mssql \
  sqlalchemy/testing sqlalchemy/ext/mypy
# boto3 for S3 alone: S3, STS (web identity: IRSA) and SSO credentials; the endpoint and
# partition tables stay.
find botocore/data -mindepth 1 -maxdepth 1 -type d \
  ! -name s3 ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} +
# botocore's loader reads NAME.json or NAME.json.gz: the endpoint table gzipped (1.25 MB to
# 0.1 MB); the request examples are for documentation only.
gzip -9 botocore/data/endpoints.json
find botocore/data -name 'examples-1.json' -delete
# The Python binding (onnxruntime_pybind11_state) links no libonnxruntime.so (readelf -d).
rm -f onnxruntime/capi/libonnxruntime.so*
# Symbol tables. pyarrow, uvloop and SQLAlchemy ship theirs (53 MB); elsewhere only libraries
# that auditwheel did not patch: the ones it grafted or pointed at a .libs folder with patchelf
# (numpy.libs' OpenBLAS, psycopg_binary.libs, numpy's core) break when stripped ("ELF load
# command address/offset not page-aligned"); they carry a RUNPATH, and the grafted copies live
# in *.libs (cryptography, httptools, google.protobuf, numpy.random: 4.8 MB).
find pyarrow uvloop sqlalchemy -type f \( -name '*.so' -o -name '*.so.*' \) \
  -exec strip --strip-unneeded {} +
find . \( -path ./pyarrow -o -path ./uvloop -o -path ./sqlalchemy -o -path './*.libs' \) -prune \
  -o -type f \( -name '*.so' -o -name '*.so.*' \) -print |
  while read -r lib; do
    if ! readelf -d "$lib" | grep -q 'R.*PATH'; then strip --strip-unneeded "$lib"; fi
  done
# The dependencies' command-line tools: the image runs `ratekeeper` (and `python3`).
find "$venv/bin" -type f ! -name 'ratekeeper' ! -name 'python*' -delete

# Bytecode. The root filesystem is read-only at run time, so a module without bytecode is
# compiled in memory at every start: 6.1-6.9 s to import the serving stack without it, 2.2-4.4 s
# with it (measured in the image on the shared 2-core machine). So:
# - every module the server, the request process, the migration and the CLI import (found by
#   importing them all and running what they load lazily, below) keeps its bytecode;
# - for third-party modules that bytecode replaces the source (a legacy .pyc beside, the .py
#   removed: 26 MB), and that bytecode holds no docstrings (~7 MB), as `python -OO` would
#   compile it but with the asserts kept; numpy keeps its docstrings, which numpy.ma rewrites as
#   it loads (it raised without them: the container test's /invocations found it). A traceback
#   through these modules shows file and line without the line's text; ratekeeper's own modules
#   keep their source and docstrings (its CLI help, its OpenAPI descriptions);
# - modules nothing imports keep their source and no bytecode.
find . -name __pycache__ -type d -prune -exec rm -rf {} +
exercise=$(mktemp)
cat >"$exercise" <<'PY'
import ast
import importlib
import importlib.util
import io
import marshal
import pkgutil
import sys
import sysconfig
from pathlib import Path

import ratekeeper

for module in pkgutil.walk_packages(ratekeeper.__path__, "ratekeeper."):
    try:
        importlib.import_module(module.name)
    except ImportError as error:  # needs a training library (demo, spark): not in the image
        print(f"slim-venv: not importable here: {module.name} ({error})")
for name in (
    "uvicorn.protocols.http.httptools_impl", "uvicorn.loops.uvloop", "uvicorn.lifespan.on",
    "sqlalchemy.dialects.postgresql.psycopg", "sqlalchemy.dialects.sqlite.pysqlite",
    "alembic.command", "alembic.runtime.migration", "onnxruntime", "onnx",
    "pyarrow.parquet", "pyarrow.dataset", "pyarrow.csv", "pyarrow.compute",
):
    importlib.import_module(name)

# What loads lazily: Parquet and CSV through pyarrow and pandas, boto3's S3 and STS clients
# (their models and endpoint rules; no request is made), the PostgreSQL dialect's engine.
import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy

buffer = io.BytesIO()
pq.write_table(pa.table({"a": [1.0, 2.0], "b": ["x", "y"]}), buffer)
frame = pd.read_parquet(io.BytesIO(buffer.getvalue()))
pd.read_csv(io.StringIO(frame.to_csv(index=False))).describe()
for service in ("s3", "sts"):
    boto3.client(service, region_name="eu-west-1", endpoint_url="http://127.0.0.1:9",
                 aws_access_key_id="k", aws_secret_access_key="s")
sqlalchemy.create_engine("postgresql+psycopg://u@127.0.0.1:9/db").dispose()


def bytecode(path: Path, docstrings: bool) -> bytes:
    """The legacy .pyc of ``path``; without docstrings, what ``python -OO`` would compile, but
    with the asserts kept."""
    tree = ast.parse(path.read_bytes(), str(path))
    for node in ast.walk(tree) if not docstrings else ():
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    node.body = node.body[1:] or [ast.copy_location(ast.Pass(), first)]
    code = compile(tree, str(path), "exec", dont_inherit=True)
    stat = path.stat()
    header = importlib.util.MAGIC_NUMBER + bytes(4)  # flags 0: a timestamp pyc (PEP 552)
    header += (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    header += (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    return header + marshal.dumps(code)


if sys.argv[1:] == ["--compile"]:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not source or not source.endswith(".py"):
            continue
        path = Path(source).resolve()
        if site not in path.parents or path.relative_to(site).parts[0] == "ratekeeper":
            continue
        # numpy.ma rewrites numpy's docstrings as it loads, and raises where one is missing.
        keep = path.relative_to(site).parts[0] == "numpy"
        path.with_suffix(".pyc").write_bytes(bytecode(path, docstrings=keep))
        path.unlink()
PY
"$venv/bin/python" -B "$exercise" --compile
# Then once more on what is left, sourceless: a library that needs a docstring fails here.
"$venv/bin/python" -B "$exercise"
rm -f "$exercise"
"$venv/bin/python" -m compileall -q ratekeeper

"$venv/bin/python" -m pip uninstall --yes --quiet pip setuptools 2>/dev/null || true
rm -f "$venv"/bin/pip* "$venv"/bin/activate*
