"""Rollouts' cost: the routing of one quote (micro), and quote latency with a 100 % shadow (macro).

Micro (always): per policy, in this process, over the same 20,000 policies of a synthetic motor
book and two GLM versions: the sticky split alone (SHA-256 of the key), a canary's whole routing
(``RolloutEngine.price`` minus the pricing itself) and, as the reference, one
``Scorer.predict_one``. Macro (``--serve``): ``ratekeeper serve --workers 2`` (ledger on) at an
offered 1,000 quotes/s for ``--seconds`` (``benchmarks/openloop.py``: latency from each
request's scheduled time), first with no rollout and then with a 100 % shadow of the other
version, in one run. Compare the rows of one run only: the host behind these machines changes.

    python benchmarks/bench_rollouts.py            # micro only, ~20 s
    python benchmarks/bench_rollouts.py --serve    # and 3 pairs of open-loop runs, ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODEL = "frequency"
N_POLICIES = 20_000


def build(folder: Path) -> tuple[Any, list[dict[str, Any]]]:
    import ratekeeper as rk
    from ratekeeper.demo import train_glm
    from ratekeeper.synthetic import CATEGORICAL_FACTORS, RATING_FACTORS, motor_portfolio

    book = motor_portfolio(N_POLICIES, seed=11)
    registry, _token = rk.Registry.create(folder, admin="bench", policy="open")
    other = book.assign(claim_count=book["claim_count"].where(book["policy_id"] % 5 != 0, 0))
    for data in (book, other):
        registry.register_model(
            train_glm(data), MODEL, training_data=data, exposure="exposure", id_column="policy_id"
        )
    registry.transition_stage(MODEL, 1, "Production")
    rows = book[[*RATING_FACTORS, "exposure", "policy_id"]].to_dict("records")
    policies = [
        {k: (str(v) if k in CATEGORICAL_FACTORS else v) for k, v in r.items()} for r in rows
    ]
    return registry, policies


def per_call_us(fn: Any, items: list[Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best * 1e6


def micro(registry: Any, policies: list[dict[str, Any]]) -> list[tuple[str, float]]:
    import ratekeeper as rk
    from ratekeeper.engine.deployments import Deployments
    from ratekeeper.rollouts.routing import RolloutEngine

    registry.start_rollout(MODEL, 2, mode="canary", percent=10, guards=rk.Guards(sample=0.0))
    engine = RolloutEngine(registry)
    deployments = Deployments(
        registry, on_refresh=lambda d: engine.update(d.served_table(), d.rollouts)
    )
    deployments.refresh(force=True)
    route = engine.route(MODEL)
    assert route is not None
    # The reference prices each policy with the scorer its arm gives it, called the same way.
    chosen = [
        (route.challenger if route.challenger_gets(p) else route.champion, p) for p in policies
    ]
    pricing = per_call_us(lambda pair: pair[0].predict_one(pair[1]), chosen)
    split = per_call_us(route.challenger_gets, policies)
    routed = per_call_us(lambda p: engine.price(route, p, None, "quote"), policies)
    lookup = per_call_us(lambda _p: engine.route(MODEL), policies)
    engine.close()
    registry.abort_rollout(MODEL, reason="canary measured")
    # A 100 % shadow: the request path's share, then the background thread's CPU per quote
    # (pricing by the challenger, the guards' counts, the ledger row's hand-off).
    calm = rk.Guards(median_ratio=(0.2, 5.0), move=4.0, max_p99_ms=1000)
    registry.start_rollout(MODEL, 2, mode="shadow", guards=calm)
    handed: list[Any] = []
    engine = RolloutEngine(registry, on_shadow=lambda *row: handed.append(row))
    deployments = Deployments(
        registry, on_refresh=lambda d: engine.update(d.served_table(), d.rollouts)
    )
    deployments.refresh(force=True)
    route = engine.route(MODEL)
    assert route is not None
    champion_only = per_call_us(lambda p: route.champion.predict_one(p), policies, repeat=1)
    cpu = time.process_time()
    per_call_us(lambda p: engine.price(route, p, "q", "quote"), policies, repeat=1)
    engine.close()  # prices whatever is still queued
    total = (time.process_time() - cpu) / len(policies) * 1e6
    assert len(handed) == len(policies)
    registry.abort_rollout(MODEL, reason="benchmark done")
    return [
        ("Scorer.predict_one of the policy's arm (the reference)", pricing),
        ("RolloutEngine.route(name) (no rollout: the whole cost)", lookup),
        ("Route.challenger_gets (the sticky split, SHA-256)", split),
        ("RolloutEngine.price, canary 10 % (pricing included)", routed),
        ("routing cost per quote (price minus the reference)", max(routed - pricing, 0.0)),
        ("100 % shadow: CPU per quote, request path and background", total),
        ("  of which beyond the champion's own pricing", total - champion_only),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``ratekeeper serve --workers 2`` on a free port (ledger on), stopped on exit."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()

    def __enter__(self) -> Server:
        command = [
            sys.executable, "-m", "ratekeeper", "serve", "--registry", str(self.folder),
            "--port", str(self.port), "--workers", "2", "--log-level", "warning",
        ]  # fmt: skip
        self.log = (self.folder / f"serve-{self.port}.log").open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()

    def open_loop(self, bodies: Path, seconds: float) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/v1/models/{MODEL}/quote"
        done = subprocess.run(
            [sys.executable, str(HERE / "openloop.py"), url, "--bodies", str(bodies),
             "--rate", "1000", "--duration", f"{seconds:g}", "--warmup", "1",
             "--connections", "64", "--timeout", "2", "--json"],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        )  # fmt: skip
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="also the open-loop serving runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="each open-loop run")
    parser.add_argument("--pairs", type=int, default=3, help="runs without and with a shadow")
    args = parser.parse_args(argv)
    import ratekeeper as rk

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "registry"
        os.environ.setdefault("RATEKEEPER_USER", "bench")
        registry, policies = build(folder)
        print(f"## Routing cost per quote ({len(policies):,} policies, best of 3)\n")
        print("| what | µs per policy |\n|---|---:|")
        for what, us in micro(registry, policies):
            print(f"| {what} | {us:.2f} |")
        if not args.serve:
            return 0
        bodies = Path(tmp) / "policies.jsonl"
        bodies.write_text("\n".join(json.dumps(p) for p in policies[:5000]) + "\n")
        # One server; runs alternate (none, shadow, none, shadow, ...) so that a neighbour's
        # load on a shared machine falls on both; the shadow is started and aborted between runs
        # (the workers follow within a poll). Guards wide open: the shadow must run throughout.
        calm = rk.Guards(median_ratio=(0.2, 5.0), move=4.0, max_p99_ms=1000)
        runs: list[tuple[str, dict[str, Any]]] = []
        with Server(folder) as server:
            for _ in range(args.pairs):
                runs.append(("no rollout", server.open_loop(bodies, args.seconds)))
                registry.start_rollout(MODEL, 2, mode="shadow", guards=calm)
                time.sleep(1.0)
                runs.append(("100 % shadow", server.open_loop(bodies, args.seconds)))
                registry.abort_rollout(MODEL, reason="the run is over")
                time.sleep(1.0)
        each = f"{args.seconds:g} s each"
        print(f"\n## Quote latency at an offered 1,000 quotes/s, 2 workers ({each})\n")
        print("| run | rollout | ok | errors | p50 ms | p99 ms | p99.9 ms |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for i, (label, r) in enumerate(runs, 1):
            lat = r["latency_ms"]
            cells = " | ".join(_ms(lat.get(k)) for k in ("p50", "p99", "p99.9"))
            errors = sum(r["errors"].values())
            print(f"| {i} | {label} | {r['ok']:,} | {errors:,} | {cells} |")
        from ratekeeper.engine.ledger import read_ledger

        quotes = read_ledger(folder / "ledger", model=MODEL).to_pylist()
        shadowed = sum(q["shadow_prediction"] is not None for q in quotes)
        print(f"\nledger: {len(quotes):,} quotes, {shadowed:,} with the shadow's price beside")
        medians = {}
        for label in ("no rollout", "100 % shadow"):
            p99s = sorted(r["latency_ms"]["p99"] or float("inf") for lab, r in runs if lab == label)
            medians[label] = p99s[len(p99s) // 2]
        base, shadow = medians["no rollout"], medians["100 % shadow"]
        print(
            f"median p99: {base:.2f} ms without, {shadow:.2f} ms with a 100 % shadow "
            f"({100 * (shadow / base - 1):+.1f} %)"
        )
        registry.close()
    return 0


def _ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "timeout"


if __name__ == "__main__":
    sys.exit(main())
