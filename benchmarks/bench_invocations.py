"""Time POST /invocations per body format and size, against the in-memory scorer on the same rows.

    PYTHONPATH=src python benchmarks/bench_invocations.py [--rows 1,100,10000] [--repeat 5]

In process (Starlette's test client over the real app), the synthetic motor GLM, with and
without the quote ledger. Prints the best of ``--repeat`` requests per cell, in milliseconds,
beside ``Scorer.predict`` on the same rows as a list of dicts (the reference: pricing alone,
no HTTP, no parsing, no ledger).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.http_helpers


def best(call: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,100,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]

    import pandas as pd
    from fastapi.testclient import TestClient
    from tests.http_helpers import MODEL, make_registry, policies

    from ratekeeper.engine.ledger import LedgerConfig
    from ratekeeper.http.app import AppConfig, create_app

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        registry, book = make_registry(tmp / "registry", n_policies=max(sizes) + 100)
        scorer = registry.load_model(f"models:/{MODEL}/1")
        print("| rows | body | bytes | no ledger (ms) | ledger (ms) | Scorer.predict (ms) |")
        print("|---|---|---|---|---|---|")
        clients = {}
        for ledger in (None, LedgerConfig(tmp / "ledger")):
            app = create_app(
                registry,
                AppConfig(ledger=ledger, max_body_bytes=100_000_000, max_invocation_rows=10**7),
            )
            assert app.state.load_models()
            clients[ledger is not None] = TestClient(app).__enter__()
        for n in sizes:
            rows = policies(book, n)
            frame = pd.DataFrame(rows)
            bodies = {
                "dataframe_split": (
                    "application/json",
                    json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode(),
                ),
                "dataframe_records": (
                    "application/json",
                    json.dumps({"dataframe_records": rows}).encode(),
                ),
                "CSV": ("text/csv", frame.to_csv(index=False).encode()),
                "Parquet": ("application/vnd.apache.parquet", frame.to_parquet()),
            }
            reference = best(lambda rows=rows: scorer.predict(rows), args.repeat)
            for label, (content_type, body) in bodies.items():
                cells = []
                for with_ledger in (False, True):
                    client = clients[with_ledger]

                    def call(client: Any = client, body: bytes = body, kind: str = content_type):
                        response = client.post(
                            "/invocations", content=body, headers={"content-type": kind}
                        )
                        assert response.status_code == 200, response.text

                    cells.append(best(call, args.repeat))
                print(
                    f"| {n:,} | {label} | {len(body):,} | {cells[0]:.2f} | {cells[1]:.2f} | "
                    f"{reference:.2f} |"
                )
        for client in clients.values():
            client.__exit__(None, None, None)
        registry.close()


if __name__ == "__main__":
    main()
