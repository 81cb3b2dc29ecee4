"""Does a client cycling ``?version=`` slow the Production quote path? A small comparison.

A temporary open registry gets a GLM in Production and ``--versions`` GBMs of ``--trees`` trees
(nobody approved them). A real ``ratekeeper serve --workers 1`` answers Production quotes on one
keep-alive connection for ``--seconds``, first alone, then while a modeller's token cycles
``?version=`` over the GBMs from another thread. Printed: the Production quote's p50 / p99 in
both phases, how the pinned requests ended (200 loaded or cached, 429 rate-limited) and how
many quotes each phase answered. Before pinned loads ran off the event loop, this scenario
(18 versions, one of 60 MB) raised the p50 from 0.4 ms to 152 ms. Compare within one run.

    PYTHONPATH=src python benchmarks/bench_pinned.py --versions 6 --trees 300
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import ratekeeper as rk
from ratekeeper.demo import train_gbm, train_glm
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio
from server_process import rating_server

MODEL = "motor_frequency"


def post(conn: http.client.HTTPConnection, path: str, body: dict, headers: dict) -> int:
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


def quotes(port: int, policy: dict, seconds: float) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        assert post(conn, f"/v1/models/{MODEL}/quote", policy, {}) == 200
        latencies.append(time.perf_counter() - started)
    conn.close()
    return latencies


def cycle(port: int, policy: dict, token: str, versions: range, stop: threading.Event) -> Counter:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    outcomes: Counter = Counter()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    while not stop.is_set():
        for version in versions:
            outcomes[
                post(conn, f"/v1/models/{MODEL}/quote?version={version}", policy, headers)
            ] += 1
    conn.close()
    return outcomes


def ms(values: list[float], q: float) -> str:
    return f"{statistics.quantiles(values, n=100)[int(q) - 1] * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=6)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    book = motor_portfolio(20_000, seed=3)
    policy = {
        k: (str(v) if k in ("area", "fuel", "cover") else v)
        for k, v in book[[*RATING_FACTORS, "exposure"]].iloc[0].to_dict().items()
    }
    with tempfile.TemporaryDirectory() as folder:
        registry, token = rk.Registry.create(Path(folder), admin="admin", policy="open")
        registry.register_model(train_glm(book), MODEL, training_data=book, exposure="exposure")
        registry.transition_stage(MODEL, 1, "Production")
        for seed in range(args.versions):
            sample = book.sample(frac=0.9, random_state=seed)
            registry.register_model(
                train_gbm(sample, n_trees=args.trees), MODEL, training_data=sample,
                exposure="exposure",
            )  # fmt: skip
        registry.close()
        with rating_server(Path(folder), "--no-ledger", workers=1) as port:
            quotes(port, policy, 1.0)  # warm up
            alone = quotes(port, policy, args.seconds)
            stop = threading.Event()
            result: list[Counter] = []
            versions = range(2, 2 + args.versions)
            pinner = threading.Thread(
                target=lambda: result.append(cycle(port, policy, token, versions, stop))
            )
            pinner.start()
            busy = quotes(port, policy, args.seconds)
            stop.set()
            pinner.join()
    print("| phase | Production quotes | p50 ms | p99 ms | pinned requests |")
    print("|---|---|---|---|---|")
    print(f"| alone | {len(alone)} | {ms(alone, 50)} | {ms(alone, 99)} | - |")
    pinned = ", ".join(f"{n} × {status}" for status, n in sorted(result[0].items()))
    print(f"| a client cycling {args.versions} pins | {len(busy)} | {ms(busy, 50)} | "
          f"{ms(busy, 99)} | {pinned} |")  # fmt: skip


if __name__ == "__main__":
    main()
