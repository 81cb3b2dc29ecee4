"""Does a 40 MB holdout upload slow the Production quote path? A small comparison.

A temporary registry gets a GLM in Production and a second GLM version. A real ``ratekeeper
serve`` answers Production quotes offered at ``--rate`` per second (default 1,000, as in the
serving benchmark's p99 target) on one keep-alive connection, ``--seconds`` alone, then as long
while a modeller posts promotion requests for version 2 with a holdout of ``--megabytes`` of
JSON, one after another; ``--rounds`` times, alternating, so that a noisy minute falls on both
phases. A large body is read by the promotion-request process, not by the worker
(``http/handoff.py``); the parse and the gates run there too. Before any of that, a 43 MB upload
stalled every quote for 1.4 s. Printed: the Production quote's p50 / p99 over every quote of
each phase, the change of the p99, and how the uploads ended. Compare within one run.

    PYTHONPATH=src python benchmarks/bench_upload.py --megabytes 40 --workers 1 --pin

``--pin`` (Linux, 2 cores or more): the server and the quote client on the first half of the
cores, the uploader and the promotion-request process (``serve --request-cpus``) on the second,
as a modeller's upload comes from another machine and the request process runs on any free
core of a larger one; ``--request-process-with-server`` leaves it on the server's cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pinned import MODEL, ms, post, quotes

import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio
from server_process import rating_server

LENIENT = rk.GatePolicy(
    deviance_margin=1.0, gini_margin=1.0, dislocation_cap_10=1.0, dislocation_cap_25=1.0
)


def holdout_body(megabytes: float) -> bytes:
    """A promotion request for version 2 with a holdout of about ``megabytes`` of JSON."""
    book = motor_portfolio(20_000, seed=11)
    rows = book[[*RATING_FACTORS, "exposure", "claim_count"]].astype(
        {"area": str, "fuel": str, "cover": str}
    )
    records = rows.to_dict("records")
    per_row = len(json.dumps(records[:100]).encode()) / 100
    wanted = int(megabytes * 1e6 / per_row)
    holdout = (records * (wanted // len(records) + 1))[:wanted]
    body = {
        "model": MODEL,
        "version": 2,
        "stage": "Production",
        "holdout": holdout,
        "target": "claim_count",
    }
    return json.dumps(body).encode()


def paced_quotes(port: int, policy: dict, seconds: float, rate: float) -> list[float]:
    """Quotes offered at ``rate`` per second on one connection (the serving benchmark's
    1,000/s): each latency counts from when the quote was due, so a stall shows in full."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    start = time.perf_counter()
    due = start
    while due - start < seconds:
        due += 1.0 / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        assert post(conn, f"/v1/models/{MODEL}/quote", policy, {}) == 200
        latencies.append(time.perf_counter() - due)
    conn.close()
    return latencies


def upload(port: int, body: bytes, token: str, stop: Any, results: Any) -> None:
    """In a process of its own (sending 40 MB must not take the quote client's GIL)."""
    outcomes: Counter = Counter()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("POST", "/v1/requests", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        outcomes[response.status] += 1
        conn.close()
    results.put(dict(outcomes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="of each phase, each round")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alone, then during uploads, this many times"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered quotes/s (0: flat out)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the uploader on the second half of the cores, alone; the server and the quote "
        "client on the first half (Linux). A modeller's upload comes from another machine: on "
        "this one, its sending and the kernel's loopback work (softirq, on the sender's core, "
        "whatever its priority) would delay the quote client's own sends",
    )
    parser.add_argument(
        "--request-process-with-server",
        action="store_true",
        help="with --pin: leave the promotion-request process on the server's cores (default: "
        "on the uploader's, with --request-cpus, as on any free core of a larger machine)",
    )
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0)) if args.pin else []
    if args.pin and len(cores) < 2:
        parser.error("--pin needs at least two cores")
    server_cores, uploader_cores = set(cores[: len(cores) // 2]), set(cores[len(cores) // 2 :])
    book = motor_portfolio(20_000, seed=3)
    policy = {
        k: (str(v) if k in ("area", "fuel", "cover") else v)
        for k, v in book[[*RATING_FACTORS, "exposure"]].iloc[0].to_dict().items()
    }
    body = holdout_body(args.megabytes)
    with tempfile.TemporaryDirectory() as folder:
        registry, _ = rk.Registry.create(Path(folder), admin="admin", policy="open")
        for sample in (book, book.sample(frac=0.9, random_state=1)):
            registry.register_model(
                train_glm(sample), MODEL, training_data=sample, exposure="exposure",
                target="claim_count",
            )  # fmt: skip
        registry.transition_stage(MODEL, 1, "Production")
        token = registry.create_token(description="benchmark")
        registry.close()
        if args.pin:  # the server's processes and the quote client; the uploader moves away
            os.sched_setaffinity(0, server_cores)
        # With --pin, the promotion-request process (which reads the upload and runs the gates)
        # runs beside the uploader, as it would on any free core of a larger machine.
        request_cpus = ["--request-cpus", ",".join(map(str, sorted(uploader_cores)))]
        extra = request_cpus if args.pin and not args.request_process_with_server else []
        with rating_server(Path(folder), "--no-ledger", *extra, workers=args.workers) as port:

            def measure() -> list[float]:
                if args.rate:
                    return paced_quotes(port, policy, args.seconds, args.rate)
                return quotes(port, policy, args.seconds)

            quotes(port, policy, 1.0)  # warm up
            alone: list[float] = []
            busy: list[float] = []
            outcomes: Counter = Counter()
            spawn = multiprocessing.get_context("spawn")
            for _round in range(args.rounds):  # alternating: a noisy minute hits both phases
                alone += measure()
                stop, results = spawn.Event(), spawn.Queue()
                uploader = spawn.Process(target=upload, args=(port, body, token, stop, results))
                if args.pin:  # the uploader inherits its cores from this process at start
                    os.sched_setaffinity(0, uploader_cores)
                uploader.start()
                if args.pin:
                    os.sched_setaffinity(0, server_cores)
                time.sleep(1.0)
                busy += measure()
                stop.set()
                outcomes.update(results.get(timeout=300))
                uploader.join()
    change = float(ms(busy, 99)) / float(ms(alone, 99)) - 1
    offered = f"{args.rate:,.0f} quotes/s offered" if args.rate else "quotes flat out"
    pinned = (
        f", server and quotes on cores {sorted(server_cores)}, uploads on {sorted(uploader_cores)}"
    )
    print(
        f"{len(body) / 1e6:.1f} MB holdout uploads, {args.workers} worker(s), {offered}, "
        f"{args.rounds} rounds of {args.seconds:g} s per phase" + (pinned if args.pin else "")
    )
    print("| phase | Production quotes | p50 ms | p99 ms | uploads |")
    print("|---|---|---|---|---|")
    print(f"| alone | {len(alone)} | {ms(alone, 50)} | {ms(alone, 99)} | - |")
    uploads = ", ".join(f"{n} × {status}" for status, n in sorted(outcomes.items()))
    print(f"| during uploads | {len(busy)} | {ms(busy, 50)} | {ms(busy, 99)} | {uploads} |")
    print(f"p99 change: {change:+.0%} (target: within +20 %)")


if __name__ == "__main__":
    main()
