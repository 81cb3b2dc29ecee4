"""Where a quote's CPU goes: each step of ``POST /v1/models/NAME/quote`` timed on its own.

One worker's CPU microseconds per quote, split by step. The steps are called in this process,
many times each, exactly as the quote handler calls them (the same objects: a scorer loaded
from the registry, a quote ledger, the metrics): parse (the JSON body), check (the signature),
score (ONNX Runtime and the plausibility check), id (the quote id), ledger (the record), metrics
(counters and the latency histogram) and answer (the JSON body). With ``--server`` a real
``ratekeeper serve --workers 1`` is loaded by wrk at concurrency 8 and its worker's CPU per
answered quote is read from /proc: what the steps do not account for is the framework (HTTP
parsing, the ASGI call, the event loop, the socket writes).

    PYTHONPATH=src python benchmarks/bench_quote_steps.py --server            # builds a registry
    PYTHONPATH=src python benchmarks/bench_quote_steps.py --registry DIR --server

The registry (``--registry``) must serve the benchmark's LightGBM model as ``frequency``
(``bench_serve.py --keep-registry DIR`` leaves one); without it one is built (~10 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODEL = "frequency"


def per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    """Median over 5 rounds of the mean time of one call, in microseconds."""
    calls = 1000
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - started
    calls = max(1000, int(calls * seconds / 5 / max(elapsed, 1e-9)))
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            fn()
        rounds.append((time.process_time() - started) / calls * 1e6)
    return sorted(rounds)[2]


def steps(registry_folder: Path, policy: dict[str, Any], seconds: float) -> dict[str, float]:
    import orjson

    from ratekeeper import Registry
    from ratekeeper.engine.ids import new_quote_id
    from ratekeeper.engine.ledger import LedgerConfig, QuoteLedger
    from ratekeeper.http.metrics import Metrics
    from ratekeeper.http.protocol import one_policy, parse_json

    registry = Registry(str(registry_folder))
    scorer = registry.load_model(f"models:/{MODEL}/Production")
    body = orjson.dumps(policy)
    signature = scorer.signature
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = QuoteLedger(LedgerConfig(Path(tmp)))  # never started: record() only queues
        quote_id = new_quote_id()
        prediction = scorer.predict_one(policy)
        answer = {"quote_id": quote_id, "model": MODEL, "version": 1, "prediction": prediction,
                  "served_by": "Production"}
        check = per_call_us(lambda: signature.check_row(policy, clipped=[]), seconds)
        results = {
            "parse": per_call_us(lambda: one_policy(parse_json(body)), seconds),
            "check": check,
            "score": max(0.0, per_call_us(lambda: scorer.predict_one(policy), seconds) - check),
            "id": per_call_us(new_quote_id, seconds),
            "ledger": per_call_us(lambda: ledger.record(
                quote_id, MODEL, 1, signature, "quote", "Production", policy, prediction),
                seconds),
            "metrics": per_call_us(lambda: (metrics.priced(MODEL, "1", 1), metrics.observe(
                "quote", MODEL, "1", "ok", 0.0004)), seconds),
            "answer": per_call_us(lambda: orjson.dumps(answer), seconds),
        }
    registry.close()
    return results


def server_us_per_quote(registry_folder: Path, policy: dict[str, Any], seconds: float) -> float:
    """CPU of the one worker of ``ratekeeper serve --workers 1`` per quote, under wrk -c8."""
    from bench_serve import Server, free_port, running, wait_ready, wait_settled, wrk
    from procstats import cpu_seconds, descendants
    from wrk_script import WRK_SCRIPT, lua_string

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "quote.lua"
        script.write_text(WRK_SCRIPT.format(
            body=lua_string(json.dumps(policy, separators=(",", ":"))), cap=10_000_000))
        command = [sys.executable, "-m", "ratekeeper", "--registry", str(registry_folder),
                   "serve", "--port", str(port), "--workers", "1", "--log-level", "warning",
                   "--drift-interval", "0", "--ledger", str(Path(tmp) / "ledger")]
        url = f"http://127.0.0.1:{port}/v1/models/{MODEL}/quote"
        with running(command, port, Path(tmp) / "server.log", "/readyz") as server:
            assert isinstance(server, Server)
            wait_ready(server, time.perf_counter())
            wait_settled(server, 1)
            wrk(url, script, 8, 2.0)
            pids = descendants(server.process.pid)
            before = cpu_seconds(pids)
            cell = wrk(url, script, 8, seconds)
            after = cpu_seconds(pids)
    worker = max(after[p] - before[p] for p in after if p in before)
    return worker / cell.requests * 1e6


def build_registry(folder: Path) -> dict[str, Any]:
    from bemtpl import DATA, load_frames
    from bench_serve import build_ratekeeper_registry, fit_gbm, sample_policies

    frame, gbm_frame = load_frames(DATA)
    build_ratekeeper_registry(folder, frame, gbm_frame, fit_gbm(gbm_frame))
    return sample_policies(frame, 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, help="a registry serving `frequency`")
    parser.add_argument("--server", action="store_true",
                        help="also load a real 1-worker server: the framework's share")
    parser.add_argument("--seconds", type=float, default=5.0, help="per step, and the wrk run")
    args = parser.parse_args(argv)
    policy = {"coverage": "TPL", "fuel": "diesel", "use": "private", "fleet": "0", "ageph": 61,
              "bm": 5, "power": 62, "agec": 10, "expo": 1.0}
    with tempfile.TemporaryDirectory(prefix="rk-steps-") as tmp:
        folder = args.registry
        if folder is None:
            folder = Path(tmp) / "rk"
            policy = build_registry(folder)
        timed = steps(folder, policy, args.seconds)
        total = server_us_per_quote(folder, policy, args.seconds) if args.server else None
    print("| step | CPU µs per quote |")
    print("|---|---|")
    for name, us in timed.items():
        print(f"| {name} | {us:.1f} |")
    print(f"| all steps | {sum(timed.values()):.1f} |")
    if total is not None:
        print(f"| framework (server total − steps) | {total - sum(timed.values()):.1f} |")
        print(f"| **server total** (1 worker, wrk -c8, per answered quote) | **{total:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
