"""One-policy POST /invocations against POST /quote on a real `ratekeeper serve`, under wrk.

    PYTHONPATH=src python benchmarks/bench_invocations_wrk.py [--rounds 5] [--seconds 3]

One worker, the synthetic motor GLM, no drift watcher, the ledger on. Alternates wrk runs
(``-t1 -c4``) of a quote and of ``{"dataframe_records": [policy]}`` on the same server and
prints each pair's requests per second and their ratio, then the median ratio: alternating
keeps a busy machine's drift out of the ratio (the reference is measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.*


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    from tests.http_helpers import MODEL, make_registry, policies
    from tests.server_process import rating_server

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        registry, book = make_registry(tmp / "registry", n_policies=1000)
        registry.close()
        policy = policies(book, 1)[0]
        cases = {}
        for label, path, body in (
            ("quote", f"/v1/models/{MODEL}/quote", policy),
            ("invocations", "/invocations", {"dataframe_records": [policy]}),
        ):
            script = tmp / f"{label}.lua"
            script.write_text(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(json.dumps(body))}\n"
            )
            cases[label] = (path, script)

        def rate(port: int, label: str) -> float:
            path, script = cases[label]
            command = ["wrk", "-t1", "-c4", f"-d{args.seconds}s", "-s", str(script)]
            out = subprocess.run(
                [*command, f"http://127.0.0.1:{port}{path}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if "Non-2xx" in out:
                raise SystemExit(f"{label}: answers that are not 200\n{out}")
            line = next(line for line in out.splitlines() if line.startswith("Requests/sec"))
            return float(line.split()[1])

        ratios = []
        with rating_server(tmp / "registry", "--drift-interval", "0", workers=1) as port:
            print("| round | /quote (req/s) | /invocations (req/s) | ratio |")
            print("|---|---|---|---|")
            for round_ in range(1, args.rounds + 1):
                quote, invocations = rate(port, "quote"), rate(port, "invocations")
                ratios.append(invocations / quote)
                print(f"| {round_} | {quote:,.0f} | {invocations:,.0f} | {ratios[-1]:.2f} |")
        print(f"\nmedian ratio /invocations : /quote = {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
