"""The serving benchmark's results and its report: tables, targets and verdicts.

bench_serve.py measures; this module holds what a measurement produced (``Closed``,
``ServerRun``) and turns the runs into the Markdown report.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CONCURRENCY = (1, 8, 32)

TARGETS = {
    "vs_mlflow": 20.0,  # ratekeeper / MLflow throughput at concurrency 8
    "vs_floor": 0.5,  # ratekeeper / bare Starlette floor throughput at concurrency 8
    "p99_at_1000_ms": 10.0,
    "ready_s": 2.0,
    "ledger_p99_rise": 0.10,  # quote p99 at 1,000/s with the quote ledger vs without
}



@dataclass
class Closed:
    concurrency: int
    per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int



@dataclass
class ServerRun:
    label: str
    kind: str  # ratekeeper(-nodrift, -noledger) | mlflow | floor (Starlette) | floor-fastapi
    workers: int
    closed: dict[int, Closed] = field(default_factory=dict)
    open: dict[int, Any] = field(default_factory=dict)  # rate -> openloop.OpenLoopResult
    cpu: dict[int, list[float]] = field(default_factory=dict)  # concurrency -> per-process cores
    cpu_us: dict[int, list[float]] = field(default_factory=dict)  # -> per-process µs per request
    others: list[float] = field(default_factory=list)  # machine share used by other processes
    p99_at_1000: list[float | None] = field(default_factory=list)  # every 1,000/s run's p99
    latencies_at_1000: list[list[float]] = field(default_factory=list)  # and its every latency, s
    failed: str | None = None



def fmt_ms(value: float | None) -> str:
    return "timeout" if value is None else (f"{value:.2f}" if value < 100 else f"{value:,.0f}")



def closed_table(runs: list[ServerRun]) -> list[str]:
    columns = " | ".join(f"c={c} quotes/s | c={c} p50 / p99 ms" for c in CONCURRENCY)
    head = f"| server | {columns} | errors | CPU taken by other processes |"
    lines = [head, "|" + "---|" * (3 + 2 * len(CONCURRENCY))]
    for run in runs:
        if run.failed and not run.closed:
            lines.append(f"| {run.label} | failed: {run.failed[:80]} |" + " |" * (
                1 + 2 * len(CONCURRENCY)))
            continue
        cells: list[str] = []
        for c in CONCURRENCY:
            cell = run.closed.get(c)
            cells += ([f"{cell.per_s:,.0f}", f"{fmt_ms(cell.p50_ms)} / {fmt_ms(cell.p99_ms)}"]
                      if cell else ["—", "—"])
        errors = sum(cell.errors for cell in run.closed.values())
        others = f"{max(run.others):.0%}" if run.others else "—"
        lines.append(f"| {run.label} | " + " | ".join(cells) + f" | {errors:,} | {others} |")
    return lines



def open_table(runs: list[ServerRun]) -> list[str]:
    lines = ["| server | offered /s | answered /s | p50 ms | p99 ms | p99.9 ms | max ms | "
             "errors / sent | generator lag p99 ms, CPU |", "|" + "---|" * 9]
    for run in runs:
        for rate, r in sorted(run.open.items()):
            errors = ", ".join(f"{n:,} {kind}" for kind, n in sorted(r.errors.items()))
            lat = r.latency_ms
            lines.append(
                f"| {run.label} | {rate:,} | {r.achieved_per_s:,.0f} | {fmt_ms(lat['p50'])} | "
                f"{fmt_ms(lat['p99'])} | {fmt_ms(lat['p99.9'])} | {fmt_ms(lat['max'])} | "
                f"{r.error_count:,} / {r.scheduled:,}{f' ({errors})' if errors else ''} | "
                f"{r.dispatch_lag_ms['p99']:.2f}, {r.generator_cpu:.0%} |"
            )
    return lines



def cpu_lines(runs: list[ServerRun]) -> list[str]:
    lines = []
    for run in runs:
        if 32 in run.cpu and run.workers > 1:
            busy = [f"{share:.0%}" for share in run.cpu[32] if share >= 0.02]
            lines.append(f"- {run.label}, c=32: CPU per busy process (1 core = 100 %): "
                         + ", ".join(busy))
    return lines



def cpu_table(runs: list[ServerRun], c: int = 8) -> list[str]:
    """CPU microseconds per answered request at concurrency ``c``: all the server's processes
    together, and each busy one (its CPU over all requests: with two workers, each ~half)."""
    lines = [f"| server | c={c} requests/s | CPU µs per request, all processes | per busy "
             "process |", "|---|---|---|---|"]
    for run in runs:
        if c not in run.cpu_us:
            continue
        each = [us for us in run.cpu_us[c] if us >= 1.0]
        lines.append(f"| {run.label} | {run.closed[c].per_s:,.0f} | {sum(run.cpu_us[c]):.0f} | "
                     + ", ".join(f"{us:.0f}" for us in each) + " |")
    return lines



def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("✅ met" if ok else "❌ missed")



def find(runs: list[ServerRun], kind: str, workers: int) -> ServerRun | None:
    return next((r for r in runs if r.kind == kind and r.workers == workers), None)



def per_s(run: ServerRun | None, c: int) -> float | None:
    if run is None or c not in run.closed:
        return None
    return run.closed[c].per_s



def targets_table(runs: list[ServerRun], ready: dict[str, tuple[list[float], list[float]]]
                  ) -> list[str]:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    rk = find(runs, "ratekeeper", 2)
    rk_c8 = per_s(rk, 8)
    mlflow_c8 = [v for w in (1, 2) if (v := per_s(find(runs, "mlflow", w), 8)) is not None]
    if rk_c8 and mlflow_c8:
        ratio = rk_c8 / max(mlflow_c8)
        lines.append(f"| ratekeeper (2 workers) ≥ {TARGETS['vs_mlflow']:.0f}× MLflow's best "
                     f"throughput at c=8 | {rk_c8:,.0f} vs {max(mlflow_c8):,.0f}/s = "
                     f"{ratio:,.1f}× | {verdict(ratio >= TARGETS['vs_mlflow'])} |")
    for workers in (2, 1):
        ours, floor = per_s(find(runs, "ratekeeper", workers), 8), per_s(
            find(runs, "floor", workers), 8)
        if ours and floor:
            share = ours / floor
            lines.append(f"| ratekeeper ≥ {TARGETS['vs_floor']:.2f} of the bare Starlette floor "
                         f"at c=8, {workers} worker{'s' * (workers > 1)} | {ours:,.0f} vs "
                         f"{floor:,.0f}/s = **{share:.2f}** | "
                         f"{verdict(share >= TARGETS['vs_floor'])} |")
    for workers in (2, 1):
        ours, fastapi = per_s(find(runs, "ratekeeper", workers), 8), per_s(
            find(runs, "floor-fastapi", workers), 8)
        if ours and fastapi:
            lines.append(f"| share of the FastAPI constant answer at c=8, {workers} "
                         f"worker{'s' * (workers > 1)} | {ours:,.0f} vs {fastapi:,.0f}/s = "
                         f"{ours / fastapi:.2f} | reported |")
    for workers in (2, 1):
        run = find(runs, "ratekeeper", workers)
        if run and 1000 in run.open:
            r = run.open[1000]
            p99 = r.latency_ms["p99"]
            ok = p99 is not None and p99 <= TARGETS["p99_at_1000_ms"]
            lines.append(f"| p99 ≤ {TARGETS['p99_at_1000_ms']:.0f} ms at an offered 1,000 "
                         f"quotes/s, {workers} worker{'s' * (workers > 1)} | p99 {fmt_ms(p99)} "
                         f"ms, {r.error_count:,} errors | {verdict(ok)} |")
    without = find(runs, "ratekeeper-noledger", 2)
    for kind, what, target in (
        ("ratekeeper-nodrift", "the quote ledger (drift watcher off)", True),
        ("ratekeeper", "the quote ledger and the drift watcher (the default)", False),
    ):
        with_ledger = find(runs, kind, 2)
        if not (with_ledger and without and with_ledger.latencies_at_1000
                and without.latencies_at_1000):
            continue
        rise, low, high = p99_rise(with_ledger.latencies_at_1000, without.latencies_at_1000)
        on, off = pooled_p99(with_ledger.latencies_at_1000), pooled_p99(without.latencies_at_1000)
        rounds = min(len(with_ledger.latencies_at_1000), len(without.latencies_at_1000))
        goal = (f"raises the p99 at 1,000 quotes/s by ≤ {TARGETS['ledger_p99_rise']:.0%}"
                if target else "changes the p99 at 1,000 quotes/s by")
        lines.append(f"| {what} {goal} (2 workers; p99 of every request of {rounds} "
                     f"alternating 1,000/s runs each) | {fmt_ms(on)} ms with, {fmt_ms(off)} ms "
                     f"without = **{rise:+.1%}** (90 % bootstrap interval {low:+.0%} to "
                     f"{high:+.0%}; single runs' p99: {fmt_runs(with_ledger.p99_at_1000)} with, "
                     f"{fmt_runs(without.p99_at_1000)} without) | "
                     f"{verdict(rise <= TARGETS['ledger_p99_rise']) if target else 'reported'} |")
    for name, (first, every) in ready.items():
        if name.startswith("ratekeeper") and first:
            times = every or first
            worst = max(times)
            lines.append(f"| start-to-ready ≤ {TARGETS['ready_s']:.0f} s, {name} (every "
                         f"worker) | median {statistics.median(times):.2f} s, max {worst:.2f} s"
                         f" | {verdict(worst <= TARGETS['ready_s'])} |")
    return lines



def pooled_p99(runs: list[list[float]]) -> float:
    """The p99 (ms) of every request of every run (a failed request counts as infinitely slow).

    One 10 s run's p99 is its 100 slowest requests, and on a shared machine single runs' p99s
    spread by ±30 %: pooling the alternating runs of two servers compares like with like."""
    import numpy as np

    return float(np.percentile(np.concatenate([np.asarray(r) for r in runs]), 99) * 1e3)


def p99_rise(on: list[list[float]], off: list[list[float]], draws: int = 2000
             ) -> tuple[float, float, float]:
    """Pooled p99 ``on`` / ``off`` - 1, and a 90 % interval from resampling whole runs."""
    import numpy as np

    rng = np.random.default_rng(0)
    rises = []
    for _ in range(draws):
        a = [on[i] for i in rng.integers(0, len(on), len(on))]
        b = [off[i] for i in rng.integers(0, len(off), len(off))]
        rises.append(pooled_p99(a) / pooled_p99(b) - 1)
    low, high = np.percentile(rises, [5, 95])
    return pooled_p99(on) / pooled_p99(off) - 1, float(low), float(high)



def fmt_runs(values: list[float | None]) -> str:
    return ", ".join(fmt_ms(v) for v in values)



def ready_table(ready: dict[str, tuple[list[float], list[float]]]) -> list[str]:
    lines = ["| server | runs | first answer: median (min–max) s | every worker listening: "
             "median (min–max) s |", "|---|---|---|---|"]
    for name, (first, every) in ready.items():
        spread = (f"{statistics.median(every):.2f} ({min(every):.2f}–{max(every):.2f})"
                  if every else "—")
        lines.append(f"| {name} | {len(first)} | {statistics.median(first):.2f} "
                     f"({min(first):.2f}–{max(first):.2f}) | {spread} |")
    return lines



def report(runs: list[ServerRun], ready: dict[str, tuple[list[float], list[float]]],
           context: list[str]) -> str:
    out = [f"Serving benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "", *context, "",
           "Closed loop (wrk, one policy per request; p50 / p99 in ms):", "",
           *closed_table(runs), "",
           "Open loop at a fixed offered rate (latency from the scheduled send time; a failed "
           "request counts as infinitely slow):", "", *open_table(runs), "",
           "Start-to-ready (process start until the readiness endpoint answers 200):", "",
           *ready_table(ready), "", *cpu_lines(runs), "",
           "Server CPU per request at concurrency 8 (from /proc; 1 core-second = 1,000,000 µs):",
           "", *cpu_table(runs), "", "Targets:", "",
           *targets_table(runs, ready)]
    failed = [f"- {r.label}: {r.failed}" for r in runs if r.failed]
    if failed:
        out += ["", "Failures:", *failed]
    return "\n".join(out) + "\n"

