"""Send the same requests to `mlflow models serve` and to `ratekeeper serve`; print both answers.

    python benchmarks/mlflow_protocol_cases.py [--mlflow-python PATH]

Both servers run as real processes on 127.0.0.1: ratekeeper with the synthetic motor model
(tests/http_helpers.py), MLflow with a pyfunc model of the same named-column signature
(benchmarks/mlflow_protocol_model.py, 0.1 × exposure). ``--mlflow-python`` is an interpreter
that has MLflow 3 (default: this one; the benchmark venv has it). Prints a Markdown table: the
status and ``error_code`` (or the number of predictions) each server gave, and whether the
statuses agree. The table in docs/serving.md is this script's output.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.http_helpers

SAVE_MODEL = """
import sys, mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
schema = Schema([ColSpec("string", n) for n in ("area", "fuel", "cover")]
    + [ColSpec("long", n) for n in ("driver_age", "vehicle_age", "bonus_malus", "power_kw")]
    + [ColSpec("double", "exposure")])
mlflow.pyfunc.save_model(sys.argv[1], python_model=sys.argv[2], signature=ModelSignature(schema))
"""
J = "application/json"


def cases(rows: list[dict[str, Any]]) -> list[tuple[str, str | None, bytes]]:
    import pandas as pd

    frame = pd.DataFrame(rows)
    columns = list(rows[0])
    split = {"columns": columns, "index": [0, 1], "data": [list(r.values()) for r in rows]}
    by_column = {c: [r[c] for r in rows] for c in columns}
    parquet = io.BytesIO()
    frame.to_parquet(parquet)

    def js(value: Any) -> bytes:
        return json.dumps(value).encode()

    return [
        ("malformed JSON", J, b"this is,,,, not valid json"),
        ("JSON 1", J, b"1"),
        ('JSON "1"', J, b'"1"'),
        ("JSON [1]", J, b"[1]"),
        ('{"not": ...}', J, js({"not": "a serialized dataframe"})),
        ("records and split together", J, js({"dataframe_records": [], "dataframe_split": {}})),
        ("dataframe_split holding records", J, js({"dataframe_split": rows})),
        ("dataframe_records holding a split", J, js({"dataframe_records": split})),
        ("dataframe_records holding columns", J, js({"dataframe_records": by_column})),
        ("index of 2 for 3 rows", J, js({"dataframe_split": {"index": [1, 2], "data": [[1]] * 3}})),
        (
            "one unnamed column (incompatible)",
            J,
            js({"dataframe_split": {"data": [[i] for i in range(10)]}}),
        ),
        ("empty CSV", "text/csv", b""),
        ("dataframe_records", J, js({"dataframe_records": rows})),
        (
            "dataframe_records; charset=UTF-8",
            J + "; charset=UTF-8",
            js({"dataframe_records": rows}),
        ),
        ("dataframe_split", J, js({"dataframe_split": split})),
        ("dataframe_split; charset=UTF-8", J + "; charset=UTF-8", js({"dataframe_split": split})),
        ("unsupported content type", "not_a_supported_content_type", js(split)),
        ("json; something=something", J + "; something=something", js({"dataframe_split": split})),
        ("json; charset=latin-1", J + "; charset=latin-1", js({"dataframe_split": split})),
        ("no content type", None, js({"dataframe_split": split})),
        ("instances: positional lists", J, js({"instances": [list(r.values()) for r in rows]})),
        ("instances: records", J, js({"instances": rows})),
        ("instances: columns", J, js({"instances": by_column})),
        ("inputs: columns", J, js({"inputs": by_column})),
        ("inputs: records", J, js({"inputs": rows})),
        ("inputs: one object of values", J, js({"inputs": rows[0]})),
        ("params not declared by the model", J, js({"dataframe_split": split, "params": {"p": 1}})),
        ("params not an object", J, js({"dataframe_split": split, "params": 5})),
        (
            "extra string columns (URLs)",
            J,
            js({"dataframe_records": [r | {"url": "http://foo.com"} for r in rows]}),
        ),
        (
            "a column missing",
            J,
            js({"dataframe_records": [{k: v for k, v in r.items() if k != "area"} for r in rows]}),
        ),
        ("dataframe_records: []", J, js({"dataframe_records": []})),
        (
            "dataframe_split: columns, no data",
            J,
            js({"dataframe_split": {"columns": columns, "data": []}}),
        ),
        ("dataframe_split: an extra key", J, js({"dataframe_split": {**split, "x": 1}})),
        (
            "dataframe_split: a short row",
            J,
            js({"dataframe_split": {"columns": columns, "data": [[1]]}}),
        ),
        ("a row that is a number", J, js({"dataframe_records": [rows[0], 5]})),
        ("non-UTF-8 JSON", J, b'{"dataframe_records": [{"area": "\xff"}]}'),
        ("CSV", "text/csv", frame.to_csv(index=False).encode()),
        ("CSV with pandas' index column", "text/csv", frame.to_csv().encode()),
        ("CSV header only", "text/csv", (",".join(columns) + "\n").encode()),
        (
            "CSV: a cell not a number",
            "text/csv",
            frame.assign(driver_age="x").to_csv(index=False).encode(),
        ),
        ("non-UTF-8 CSV", "text/csv", b"area\n\xff\n"),
        ("Parquet", "application/vnd.apache.parquet", parquet.getvalue()),
        ("not Parquet", "application/vnd.apache.parquet", b"PAR1garbage"),
        ("Parquet, no rows", "application/vnd.apache.parquet", frame.head(0).to_parquet()),
        (
            "CSV after a UTF-8 byte order mark",
            "text/csv",
            b"\xef\xbb\xbf" + frame.to_csv(index=False).encode(),
        ),
        (
            "JSON after a UTF-8 byte order mark",
            J,
            b"\xef\xbb\xbf" + js({"dataframe_records": rows}),
        ),
        # Where ratekeeper refuses on purpose: its signature check, and inflating codecs.
        ('driver_age as text "39"', J, js({"dataframe_records": [rows[0] | {"driver_age": "39"}]})),
        ("area null", J, js({"dataframe_records": [rows[0] | {"area": None}]})),
        ("an unseen area level", J, js({"dataframe_records": [rows[0] | {"area": "Z"}]})),
        ("Parquet, zstd", "application/vnd.apache.parquet", frame.to_parquet(compression="zstd")),
    ]


def answer(port: int, content_type: str | None, body: bytes) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": content_type} if content_type else {}
    connection.request("POST", "/invocations", body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    kind = response.getheader("content-type", "")
    if response.status == 200:
        return 200, f"{len(json.loads(data)['predictions'])} predictions"
    if "json" in kind:
        try:
            return response.status, str(json.loads(data).get("error_code"))
        except ValueError:
            pass
    return response.status, "text" if kind.startswith("text/plain") else kind or "-"


def wait(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no answer on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlflow-python", default=sys.executable)
    args = parser.parse_args()
    from tests.http_helpers import make_registry, policies
    from tests.server_process import free_port

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        registry, book = make_registry(tmp / "registry", n_policies=1000)
        registry.close()
        rows = policies(book, 2)
        model = tmp / "mlflow-model"
        bindir = str(Path(args.mlflow_python).parent)  # mlflow starts `uvicorn` from PATH
        env = {
            **os.environ,
            "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
        code = str(HERE / "mlflow_protocol_model.py")
        subprocess.run(
            [args.mlflow_python, "-c", SAVE_MODEL, str(model), code],
            check=True,
            env=env,
            capture_output=True,
        )
        ports = {"mlflow": free_port(), "ratekeeper": free_port()}
        commands = {
            "mlflow": [args.mlflow_python, "-m", "mlflow", "models", "serve", "-m", str(model),
                       "--env-manager", "local", "-h", "127.0.0.1", "-p", str(ports["mlflow"])],
            "ratekeeper": [sys.executable, "-m", "ratekeeper", "serve", "--registry",
                           str(tmp / "registry"), "--port", str(ports["ratekeeper"]),
                           "--no-ledger", "--log-level", "warning"],
        }  # fmt: skip
        processes = {}
        try:
            for kind, command in commands.items():
                log = tmp / f"{kind}.log"
                processes[kind] = subprocess.Popen(
                    command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env
                )
                wait(ports[kind], processes[kind], log)
            print("| request | `mlflow models serve` | `ratekeeper serve` | same status |")
            print("|---|---|---|---|")
            same = 0
            listed = cases(rows)
            for name, content_type, body in listed:
                theirs = answer(ports["mlflow"], content_type, body)
                ours = answer(ports["ratekeeper"], content_type, body)
                agree = theirs[0] == ours[0]
                same += agree
                print(
                    f"| {name} | {theirs[0]} {theirs[1]} | {ours[0]} {ours[1]} | "
                    f"{'yes' if agree else '**no**'} |"
                )
            print(f"\n{same} of {len(listed)} requests answered with the same status.")
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(timeout=20)


if __name__ == "__main__":
    main()
