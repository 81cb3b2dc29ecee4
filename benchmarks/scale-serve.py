"""How the rating server scales with its workers: 1, 2, 4, ... up to the server's cores.

Not a test: a script that prints a table. One 300-tree LightGBM model (as in bench_serve.py) is
served by ``ratekeeper serve --workers N`` (quote ledger and drift watcher on, as users run it)
and by the bare Starlette floor with the same N, each pinned with ``taskset`` to the server's
cores, and loaded by wrk pinned to cores of its own at 8 connections per worker. Printed per N:
quotes/s, quotes/s per worker, the floor's requests/s and the share of it, and p99. Linear
scaling keeps quotes/s per worker flat; a drop points at something shared (the registry poll,
the ledger's disk, the drift watcher, a core that the load generator needs).

    PYTHONPATH=src python benchmarks/scale-serve.py                     # load on 1/4 of the cores
    PYTHONPATH=src python benchmarks/scale-serve.py --load-cores 12-15 --server-cores 0-11

On a 2-core machine it measures only N = 1 (one core each); the figures mean something on a
machine with many cores. Compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import (
    MAX_WRK_REQUESTS,
    Plan,
    free_port,
    prepare,
    running,
    wait_ready,
    wait_settled,
    wrk,
)
from wrk_script import WRK_SCRIPT, lua_string


def cpu_list(text: str) -> list[int]:
    """``0-3,8`` → [0, 1, 2, 3, 8]."""
    cores: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        cores.extend(range(int(low), int(high or low) + 1))
    return cores


def worker_counts(cores: int) -> list[int]:
    counts, n = [], 1
    while n <= cores:
        counts.append(n)
        n *= 2
    if counts[-1] != cores:
        counts.append(cores)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    available = sorted(os.sched_getaffinity(0))
    load_default = max(1, len(available) // 4)
    parser.add_argument("--load-cores", default=",".join(map(str, available[-load_default:])),
                        help="CPUs for wrk (default: the last quarter)")
    parser.add_argument("--server-cores",
                        default=",".join(map(str, available[:-load_default] or available)),
                        help="CPUs for the servers (default: the others)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--max-workers", type=int, help="stop at this many workers")
    args = parser.parse_args(argv)
    server_cores, load_cores = cpu_list(args.server_cores), cpu_list(args.load_cores)
    counts = worker_counts(min(len(server_cores), args.max_workers or len(server_cores)))
    server_pin = ",".join(map(str, server_cores))
    load_pin = ",".join(map(str, load_cores))
    rows = []
    with tempfile.TemporaryDirectory(prefix="rk-scale-") as tmp_name:
        setup, _ = prepare(Path(tmp_name), Plan(), with_mlflow=False)
        for workers in counts:
            results = {}
            for kind in ("ratekeeper", "floor"):
                port = free_port()
                command, path, ready, env = setup.command(kind, port, workers)
                script = setup.tmp / f"scale-{kind}.lua"
                script.write_text(WRK_SCRIPT.format(
                    body=lua_string(setup.body(kind, setup.policies[0])),
                    cap=MAX_WRK_REQUESTS * 50))
                log = setup.tmp / f"scale-{kind}-{workers}.log"
                pinned = ["taskset", "-c", server_pin, *command]
                with running(pinned, port, log, ready, env) as server:
                    wait_ready(server, time.perf_counter())
                    wait_settled(server, workers)
                    url = f"http://127.0.0.1:{port}{path}"
                    connections = 8 * workers
                    wrk(url, script, connections, 2, len(load_cores), load_pin)  # warm-up
                    results[kind] = wrk(url, script, connections, args.seconds, len(load_cores),
                                        load_pin)
            ours, floor = results["ratekeeper"], results["floor"]
            rows.append((workers, ours, floor))
            print(f"[{time.strftime('%H:%M:%S')}] {workers} workers: {ours.per_s:,.0f} quotes/s, "
                  f"floor {floor.per_s:,.0f}/s", file=sys.stderr, flush=True)
    print(f"Server cores {server_pin}; wrk on {load_pin} ({len(load_cores)} threads), "
          "8 connections per worker; ratekeeper with its quote ledger and drift watcher.\n")
    print("| workers | quotes/s | per worker | p99 ms | bare Starlette floor /s | share of the "
          "floor | errors |")
    print("|---|---|---|---|---|---|---|")
    for workers, ours, floor in rows:
        print(f"| {workers} | {ours.per_s:,.0f} | {ours.per_s / workers:,.0f} | "
              f"{ours.p99_ms:.2f} | {floor.per_s:,.0f} | {ours.per_s / floor.per_s:.2f} | "
              f"{ours.errors + floor.errors} |")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
