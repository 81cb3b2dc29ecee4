"""Quote p99 at an offered rate, two checkouts of ratekeeper side by side (an A/B, one run).

One 5-10 s open-loop run's p99 is its 50-100 slowest requests, and on a shared machine single
runs spread by ±30 % or more: comparing a "before" run with an "after" run taken minutes apart
says little. Here both servers run at once (``ratekeeper serve`` with each checkout's ``src`` on
its ``PYTHONPATH``, the same registry, the same flags, the quote ledger on) and take turns at
the offered rate (``benchmarks/openloop.py``), ``--rounds`` times each; the verdict compares
the p99 of *every* request of each side's runs (``serve_report.p99_rise``, with a 90 %
bootstrap interval).
The drift watcher is off on both sides (``--drift-interval 0``): its checks, a process of each
server's every 60 s, landed in the other side's runs and decided the comparison (seen: one
run's p99 of 0.8 s).

    PYTHONPATH=src python benchmarks/ab_p99.py --before ../main/src --after src \\
        --registry DIR --workers 2 --rounds 6        # DIR: e.g. bench_quote_steps's registry

The registry must serve the benchmark's LightGBM model as ``frequency``; without
``--registry`` one is built (~10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_serve import free_port, open_loop, running, wait_ready, wait_settled  # noqa: E402
from serve_report import p99_rise, pooled_p99  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the A checkout's src folder")
    parser.add_argument("--after", type=Path, required=True, help="the B checkout's src folder")
    parser.add_argument("--registry", type=Path, help="a registry serving `frequency`")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per open-loop run")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rk-ab-") as tmp_name:
        tmp = Path(tmp_name)
        folders = {"before": args.registry, "after": args.registry}
        if args.registry is None:
            # Made by the older checkout, then a copy upgraded by the newer one (a server never
            # migrates a registry, and an older one cannot read a newer schema).
            folders = {"before": tmp / "rk-before", "after": tmp / "rk-after"}
            build = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); "
                     "from bench_quote_steps import build_registry; "
                     "build_registry(Path(sys.argv[1]))")
            subprocess.run([sys.executable, "-c", build, str(folders["before"]), str(HERE)],
                           check=True, env={**os.environ, "PYTHONPATH": str(args.before.resolve())})
            shutil.copytree(folders["before"], folders["after"])
            subprocess.run([sys.executable, "-m", "ratekeeper", "--registry",
                            str(folders["after"]), "migrate"], check=True,
                           env={**os.environ, "PYTHONPATH": str(args.after.resolve())})
        from bemtpl import DATA, load_frames
        from bench_serve import sample_policies

        bodies = tmp / "bodies.jsonl"
        bodies.write_text("\n".join(json.dumps(p, separators=(",", ":"))
                                    for p in sample_policies(load_frames(DATA)[0], 500)) + "\n")
        sides = {}
        with contextlib.ExitStack() as stack:
            for side, src in (("before", args.before), ("after", args.after)):
                port = free_port()
                env = {**os.environ, "PYTHONPATH": str(src.resolve())}
                command = [sys.executable, "-m", "ratekeeper", "--registry", str(folders[side]),
                           "serve", "--port", str(port), "--workers", str(args.workers),
                           "--log-level", "warning", "--ledger", str(tmp / f"ledger-{side}"),
                           "--drift-interval", "0"]
                server = stack.enter_context(
                    running(command, port, tmp / f"{side}.log", "/readyz", env))
                wait_ready(server, time.perf_counter())
                wait_settled(server, args.workers)
                sides[side] = (server, f"http://127.0.0.1:{port}/v1/models/frequency/quote", [])
            for round_ in range(args.rounds):
                for side, (server, url, runs) in sides.items():
                    latencies = tmp / f"{side}.latencies"
                    result = open_loop(url, bodies, args.rate, args.seconds, latencies)
                    kept = array("d")
                    kept.frombytes(latencies.read_bytes())
                    runs.append(kept.tolist())
                    print(f"[{time.strftime('%H:%M:%S')}] round {round_ + 1}, {side}: p99 "
                          f"{result.latency_ms['p99']} ms, errors {result.error_count}",
                          file=sys.stderr, flush=True)
                    wait_settled(server, 1)
    before, after = sides["before"][2], sides["after"][2]
    rise, low, high = p99_rise(after, before)
    print(f"Offered {args.rate:,} quotes/s, {args.workers} worker(s), {args.rounds} alternating "
          f"{args.seconds:g} s runs each: pooled p99 {pooled_p99(before):.2f} ms before, "
          f"{pooled_p99(after):.2f} ms after = {rise:+.1%} (90 % bootstrap interval {low:+.0%} "
          f"to {high:+.0%}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
