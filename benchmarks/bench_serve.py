"""Benchmark the rating engine over HTTP against `mlflow models serve` and the bare HTTP floor.

Run it with ``bash benchmarks/run-serve.sh`` (which sets up ``.venv-bench`` with MLflow and
locust). One run trains a 300-tree LightGBM Poisson frequency model on the Belgian MTPL
portfolio (``../shared/data/beMTPL97.parquet``, read by path), registers it (and a Poisson GLM,
so that the server loads two models) into a temporary embedded registry, logs the same booster
into a temporary MLflow registry, and serves it three ways, each as real processes on 127.0.0.1:

1. ``ratekeeper --registry FOLDER serve --workers 2`` (and ``--workers 1``);
2. ``mlflow models serve --env-manager local`` (``--workers 1`` and ``2``);
3. the HTTP floor: ``benchmarks/floor_app.py``, a constant answer on the same server stack:
   a bare Starlette route (the floor), and the same route in FastAPI (a second reference).

For each: closed-loop throughput and p50/p99 latency at concurrency 1, 8 and 32 (wrk), and
open-loop latency at a fixed offered rate of 200 and 1,000 quotes/s (``benchmarks/openloop.py``,
latency from each request's scheduled send time); and start-to-ready (process start until the
readiness endpoint answers 200). Every load run is bounded in requests and time, and every
process started here is stopped, also on failure. The load generator shares the machine's
cores with the server: compare within one run, not across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bemtpl import (
    CATEGORICAL,
    DATA,
    EXPOSURE,
    FACTORS,
    NUMERIC,
    ROOT,
    TARGET,
    fit_gbm,
    fit_glm,
    load_frames,
    say,
)
from procstats import children_cpu, cpu_seconds, descendants, idle_check, machine_busy
from serve_report import (
    CONCURRENCY,
    Closed,
    ServerRun,
    report,
)
from wrk_script import WRK_SCRIPT, lua_string

HERE = Path(__file__).resolve().parent
MODEL = "frequency"
RATES = (200, 1000)
MAX_WRK_REQUESTS = 100_000  # per wrk cell, on top of its duration
SERVERS = ("ratekeeper", "ratekeeper-nodrift", "ratekeeper-noledger", "floor", "floor-fastapi",
           "mlflow")
QUICK_SERVERS = ("ratekeeper", "floor", "floor-fastapi")


@dataclass(frozen=True)
class Plan:
    cell_seconds: float = 3.0
    rounds: int = 2  # each closed-loop cell is measured this many times; the best one is kept
    rate_seconds: float = 10.0
    warmup_seconds: float = 2.0
    ready_runs: int = 5
    mlflow_ready_runs: int = 2
    locust_seconds: int = 15
    ledger_rounds: int = 10  # 1,000/s runs of the ledger on/off pair, pooled and compared

    @classmethod
    def quick(cls) -> Plan:
        return cls(cell_seconds=3.0, rounds=1, rate_seconds=5.0, warmup_seconds=1.0, ready_runs=1,
                   mlflow_ready_runs=1, locust_seconds=0, ledger_rounds=1)


# -- data, models, registries ------------------------------------------------------------------


def sample_policies(frame: Any, count: int) -> list[dict[str, Any]]:
    """Real policies as a quote request carries them: plain str / int / float values."""
    import numpy as np

    rows = np.random.default_rng(97).choice(len(frame), size=count, replace=False)
    sample = frame.iloc[rows]
    policies = []
    for record in sample.to_dict("records"):
        policy: dict[str, Any] = {name: str(record[name]) for name in CATEGORICAL}
        policy.update({name: int(record[name]) for name in NUMERIC})
        policy[EXPOSURE] = float(record[EXPOSURE])
        policies.append(policy)
    return policies


def build_ratekeeper_registry(folder: Path, frame: Any, gbm_frame: Any, gbm: Any) -> None:
    from ratekeeper import Registry

    registry, _token = Registry.create(folder, admin="bench", policy="open")  # direct moves
    registry.register_model(gbm, MODEL, training_data=gbm_frame, target=TARGET,
                            exposure=EXPOSURE)
    registry.transition_stage(MODEL, 1, "Production")
    registry.register_model(fit_glm(frame), f"{MODEL}_glm", training_data=frame,
                            target=TARGET, exposure=EXPOSURE)
    registry.transition_stage(f"{MODEL}_glm", 1, "Production")
    registry.close()


def build_mlflow_registry(folder: Path, gbm: Any, gbm_frame: Any, policies: list[dict[str, Any]]
                          ) -> tuple[str, str]:
    """Log the booster as a pyfunc model version 1 of ``frequency``; (tracking URI, model URI)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    experiment = mlflow.create_experiment(
        "serve-bench", artifact_location=(folder / "mlflow-artifacts").as_uri()
    )
    booster = folder / "booster.txt"
    gbm.booster_.save_model(str(booster))
    levels = folder / "levels.json"
    levels.write_text(json.dumps(
        {name: [str(c) for c in gbm_frame[name].cat.categories] for name in CATEGORICAL}
    ))
    example = pd.DataFrame(policies[:50])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signature = infer_signature(example, gbm.predict(example.astype(
            {name: gbm_frame[name].dtype for name in CATEGORICAL})[FACTORS]))
        with mlflow.start_run(experiment_id=experiment):
            mlflow.pyfunc.log_model(
                name="model",
                python_model=str(HERE / "mlflow_frequency_model.py"),
                artifacts={"booster": str(booster), "levels": str(levels)},
                signature=signature,
                pip_requirements=["lightgbm", "pandas"],
                registered_model_name=MODEL,
            )
    return tracking, f"models:/{MODEL}/1"


# -- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    ready_path: str

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running(command: list[str], port: int, log: Path, ready_path: str,
            env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start ``command`` in its own process group; always stop the whole group afterwards."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=env, start_new_session=True)
    server = Server(process, port, log, ready_path)
    try:
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this script started, then SIGKILL it after 10 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group (workers, uvicorn)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def wait_ready(server: Server, started: float, limit: float = 120.0) -> float:
    """Seconds from ``started`` until GET ready_path answers 200."""
    while time.perf_counter() - started < limit:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n"
                               f"{server.tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=limit)
        try:
            conn.request("GET", server.ready_path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return time.perf_counter() - started
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            pass
        finally:
            conn.close()
        time.sleep(0.005)
    raise RuntimeError(f"not ready after {limit:.0f} s:\n{server.tail()}")


def listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (one per worker with SO_REUSEPORT)."""
    suffix = f":{port:04X}"
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f.readlines()[1:]
                   if line.split()[1].endswith(suffix) and line.split()[3] == "0A")


def wait_settled(server: Server, sockets: int, limit: float = 90.0) -> None:
    """Until ``sockets`` sockets listen and the server's processes stop burning CPU (workers
    that are still loading would otherwise miss the connections that wrk opens first)."""
    deadline = time.perf_counter() + limit
    previous = -1.0
    while time.perf_counter() < deadline:
        pids = descendants(server.process.pid)
        total = sum(cpu_seconds(pids).values())
        if listeners(server.port) >= sockets and total - previous < 0.03:
            return
        previous = total
        time.sleep(0.5)
    raise RuntimeError(f"the server did not settle in {limit:.0f} s:\n{server.tail()}")


def post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def wrk(url: str, script: Path, connections: int, seconds: float, threads: int = 2,
        cores: str | None = None) -> Closed:
    """One closed-loop wrk run; ``cores``: pin wrk to these CPUs (taskset -c)."""
    command = ["wrk", "-t", str(min(connections, threads)), "-c", str(connections), "-d",
               f"{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(script), url]
    if cores is not None:
        command = ["taskset", "-c", cores, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[:500]}")
    r = json.loads(lines[-1])
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return Closed(connections, r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1e3,
                  r["p99_us"] / 1e3, errors, r["requests"])


def open_loop(url: str, bodies: Path, rate: int, seconds: float,
              latencies: Path | None = None) -> Any:
    """One open-loop run; ``latencies``: where it also writes every request's latency."""
    from openloop import OpenLoopResult

    command = [sys.executable, str(HERE / "openloop.py"), url, "--bodies", str(bodies),
               "--rate", str(rate), "--duration", f"{seconds:g}", "--warmup", "1",
               "--connections", "64", "--timeout", "2", "--json"]
    if latencies is not None:
        command += ["--latencies", str(latencies)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openloop failed: {done.stderr.strip()[-800:]}")
    return OpenLoopResult(**json.loads(done.stdout.strip().splitlines()[-1]))


# -- the benchmark -----------------------------------------------------------------------------

@dataclass
class Setup:
    tmp: Path
    python: str
    rk_registry: Path
    mlflow_tracking: str
    mlflow_model: str
    policies: list[dict[str, Any]]
    expected: float  # the in-memory model's price of policies[0]
    plan: Plan

    def command(self, kind: str, port: int, workers: int) -> tuple[list[str], str, str,
                                                                   dict[str, str]]:
        """(command, quote path, ready path, environment) of a server."""
        env = dict(os.environ)
        bindir = str(Path(self.python).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        if kind.startswith("ratekeeper"):
            ledger = {"ratekeeper-noledger": ["--no-ledger"],
                      "ratekeeper-nodrift": ["--drift-interval", "0"]}.get(kind, [])
            return ([str(Path(bindir) / "ratekeeper"), "--registry", str(self.rk_registry),
                     "serve", "--port", str(port), "--workers", str(workers),
                     "--log-level", "warning", *ledger], f"/v1/models/{MODEL}/quote", "/readyz",
                    env)
        if kind == "mlflow":
            env["MLFLOW_TRACKING_URI"] = self.mlflow_tracking
            env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            env.setdefault("DO_NOT_TRACK", "true")
            return ([str(Path(bindir) / "mlflow"), "models", "serve", "-m", self.mlflow_model,
                     "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                     "-w", str(workers)], "/invocations", "/ping", env)
        return ([self.python, str(HERE / "floor_app.py"), "--port", str(port), "--workers",
                 str(workers), "--kind", "fastapi" if kind == "floor-fastapi" else "starlette"],
                f"/v1/models/{MODEL}/quote", "/readyz", env)

    def body(self, kind: str, policy: dict[str, Any]) -> str:
        if kind == "mlflow":
            return json.dumps({"dataframe_records": [policy]}, separators=(",", ":"))
        return json.dumps(policy, separators=(",", ":"))


def start_to_ready(setup: Setup, kind: str, workers: int, runs: int
                   ) -> tuple[list[float], list[float]]:
    """Seconds until the first answer 200, and (SO_REUSEPORT servers) until every worker
    listens."""
    first, every = [], []
    for i in range(runs):
        port = free_port()
        command, _, ready, env = setup.command(kind, port, workers)
        log = setup.tmp / f"ready-{kind}-{workers}-{i}.log"
        started = time.perf_counter()
        with running(command, port, log, ready, env) as server:
            first.append(wait_ready(server, started))
            if kind != "mlflow":
                while listeners(port) < workers and time.perf_counter() - started < 60:
                    time.sleep(0.005)
                every.append(time.perf_counter() - started)
    return first, every


def check_answer(setup: Setup, kind: str, port: int, path: str) -> None:
    status, body = post(port, path, setup.body(kind, setup.policies[0]).encode())
    if status != 200:
        raise RuntimeError(f"{kind}: a quote answered HTTP {status}: {str(body)[:300]}")
    if kind.startswith("floor"):
        return
    got = body["prediction"] if kind.startswith("ratekeeper") else body["predictions"][0]
    if not math.isclose(got, setup.expected, rel_tol=1e-4):
        raise RuntimeError(f"{kind} priced the policy at {got}, the model says {setup.expected}")


@dataclass
class Live:
    """A started server under load: where to send what, and its results so far."""

    run: ServerRun
    port: int
    path: str
    script: Path
    bodies: Path
    command: tuple[list[str], str, dict[str, str]]  # argv, ready path, environment
    server: Server | None = None
    rounds: dict[int, list[tuple[Closed, list[float], float, list[float]]]] = field(
        default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def prepare_server(setup: Setup, kind: str, workers: int) -> Live:
    label = {"ratekeeper": "ratekeeper serve", "mlflow": "mlflow models serve",
             "ratekeeper-noledger": "ratekeeper serve --no-ledger",
             "ratekeeper-nodrift": "ratekeeper serve --drift-interval 0",
             "floor": "HTTP floor: bare Starlette (constant)",
             "floor-fastapi": "FastAPI constant answer"}[kind]
    label += f", {workers} worker{'s' * (workers > 1)}"
    port = free_port()
    command, path, ready, env = setup.command(kind, port, workers)
    script = setup.tmp / f"{kind}.lua"
    script.write_text(WRK_SCRIPT.format(body=lua_string(setup.body(kind, setup.policies[0])),
                                        cap=MAX_WRK_REQUESTS))
    bodies = setup.tmp / f"{kind}.jsonl"
    bodies.write_text("\n".join(setup.body(kind, p) for p in setup.policies) + "\n")
    return Live(ServerRun(label, kind, workers), port, path, script, bodies,
                (command, ready, env))


def start_server(live: Live, stack: contextlib.ExitStack, setup: Setup) -> None:
    """Start, wait until every worker is ready and idle, check one answer, warm up."""
    command, ready, env = live.command
    run = live.run
    say(f"{run.label}: starting")
    log = setup.tmp / f"{run.kind}-{run.workers}.log"
    live.server = server = stack.enter_context(running(command, live.port, log, ready, env))
    wait_ready(server, time.perf_counter())
    wait_settled(server, run.workers if run.kind != "mlflow" else 1)  # every worker, not one
    check_answer(setup, run.kind, live.port, live.path)
    wrk(live.url, live.script, 8, setup.plan.warmup_seconds)


def closed_cell(live: Live, c: int, seconds: float) -> None:
    """One wrk run, with the CPU of each server process and of everything else meanwhile."""
    assert live.server is not None
    pids = descendants(live.server.process.pid)
    before, busy, ours = cpu_seconds(pids), machine_busy(), children_cpu()
    t0 = time.perf_counter()
    cell = wrk(live.url, live.script, c, seconds)
    elapsed = time.perf_counter() - t0
    after = cpu_seconds(pids)
    used = sorted((after[p] - before[p] for p in after if p in before), reverse=True)
    shares = [seconds / elapsed for seconds in used]
    others = (machine_busy() - busy) / elapsed - sum(shares) - (children_cpu() - ours) / elapsed
    per_request = [seconds / max(cell.requests, 1) * 1e6 for seconds in used]  # µs, each process
    live.rounds.setdefault(c, []).append(
        (cell, shares, max(0.0, others) / (os.cpu_count() or 1), per_request))
    say(f"{live.run.label}: c={c}: {cell.per_s:,.0f}/s, p50 {cell.p50_ms:.2f} ms, "
        f"p99 {cell.p99_ms:.2f} ms, errors {cell.errors}")


def keep_best(live: Live) -> None:
    """Of a cell's rounds, keep the one with the highest throughput (the least disturbed)."""
    for c, rounds in live.rounds.items():
        cell, shares, others, per_request = max(rounds, key=lambda r: r[0].per_s)
        live.run.closed[c], live.run.cpu[c], live.run.cpu_us[c] = cell, shares, per_request
        live.run.others.append(others)


def guarded(live: Live, what: str, fn: Any, *args: Any) -> None:
    """Run one measurement; a failure is recorded on the server's row, the others go on."""
    if live.run.failed:
        return
    try:
        fn(live, *args)
    except Exception as exc:
        live.run.failed = f"{what}: {type(exc).__name__}: {str(exc)[:400]}"
        say(f"{live.run.label}: FAILED: {live.run.failed}")


def bench_servers(setup: Setup, schedule: list[tuple[str, int, tuple[int, ...]]]
                  ) -> list[ServerRun]:
    """Every server runs at once; each cell is measured on all of them in turn, twice, so that
    whatever else the machine does hits them alike."""
    plan = setup.plan
    lives: list[Live] = []
    with contextlib.ExitStack() as stack:
        for kind, workers, _ in schedule:
            live = prepare_server(setup, kind, workers)
            guarded(live, "start", start_server, stack, setup)
            lives.append(live)
        for c in CONCURRENCY:
            for _ in range(plan.rounds):
                for live in lives:
                    guarded(live, f"c={c}", closed_cell, c, plan.cell_seconds)
        for live in lives:
            keep_best(live)
        rates = {kind_workers[:2]: kind_workers[2] for kind_workers in schedule}
        for rate in RATES:
            for live in lives:
                if rate in rates[(live.run.kind, live.run.workers)]:
                    guarded(live, f"{rate}/s", offered, rate, plan.rate_seconds)
        # One 10 s run's p99 is its 100 slowest requests: too few to tell the ledger's cost from
        # the machine's noise. The 2-worker ratekeeper servers (default; ledger without the drift
        # watcher; no ledger) run again, alternately, and the p99s of all their requests are
        # compared (serve_report.p99_rise).
        pair = [live for live in lives if live.run.kind.startswith("ratekeeper")
                and live.run.workers == 2]
        for round_ in range(1, plan.ledger_rounds if len(pair) >= 2 else 1):
            for live in pair:
                guarded(live, f"1000/s, ledger round {round_ + 1}", offered_again, 1000,
                        plan.rate_seconds)
    return [live.run for live in lives]


def offered_again(live: Live, rate: int, seconds: float) -> None:
    result = at_1000(live, seconds)
    say(f"{live.run.label}: offered {rate}/s again: p99 {result.latency_ms['p99']} ms")
    assert live.server is not None
    wait_settled(live.server, 1)


def at_1000(live: Live, seconds: float) -> Any:
    """An offered 1,000/s run whose every latency is kept (the ledger comparison pools them)."""
    latencies = live.bodies.with_suffix(".latencies")
    result = open_loop(live.url, live.bodies, 1000, seconds, latencies)
    kept = array("d")
    kept.frombytes(latencies.read_bytes())
    live.run.latencies_at_1000.append(kept.tolist())
    live.run.p99_at_1000.append(result.latency_ms["p99"])
    return result


def offered(live: Live, rate: int, seconds: float) -> None:
    if rate == 1000:
        result = at_1000(live, seconds)
    else:
        result = open_loop(live.url, live.bodies, rate, seconds)
    live.run.open[rate] = result
    say(f"{live.run.label}: offered {rate}/s: p50 {result.latency_ms['p50']} ms, "
        f"p99 {result.latency_ms['p99']} ms, errors {result.error_count}")
    assert live.server is not None
    wait_settled(live.server, 1)  # an overloaded server drains before the next one is loaded


# -- locust, and the run ---------------------------------------------------------------------

def run_locust(setup: Setup, seconds: int) -> str:
    """A short headless locust run of benchmarks/locustfile.py against ratekeeper (2 workers)."""
    locust = Path(setup.python).parent / "locust"
    if not locust.exists():
        return "- locust: not installed, skipped"
    port = free_port()
    command, _, ready, env = setup.command("ratekeeper", port, 2)
    csv = setup.tmp / "locust"
    with running(command, port, setup.tmp / "locust-server.log", ready, env) as server:
        wait_ready(server, time.perf_counter())
        time.sleep(1.0)
        done = subprocess.run(
            [str(locust), "--headless", "-u", "50", "-r", "50", "-t", f"{seconds}s", "--host",
             f"http://127.0.0.1:{port}", "-f", str(HERE / "locustfile.py"), "--csv", str(csv),
             "--only-summary", "--loglevel", "WARNING"],
            capture_output=True, text=True, timeout=seconds + 60, check=False, cwd=ROOT)
    stats = csv.with_name("locust_stats.csv")
    if not stats.exists():
        return f"- locust: failed ({done.returncode}): {done.stderr.strip()[-300:]}"
    import csv as csv_module

    with stats.open() as f:
        rows = {row["Name"]: row for row in csv_module.DictReader(f)}
    row = rows.get("Aggregated") or next(iter(rows.values()))
    return (f"- locust ({seconds} s, 50 users × 20 quotes/s target, FastHttpUser, against "
            f"ratekeeper with 2 workers): {float(row['Requests/s']):,.0f} quotes/s, "
            f"{int(row['Failure Count']):,} failures of {int(row['Request Count']):,}, "
            f"p50 {row['50%']} ms, p99 {row['99%']} ms (locust is closed-loop and shares the "
            "cores, so its percentiles understate stalls)")


def prepare(tmp: Path, plan: Plan, with_mlflow: bool) -> tuple[Setup, int]:
    """Train, register into both registries, sample policies; the setup and the portfolio size."""
    import pandas as pd

    say("training the LightGBM frequency model")
    frame, gbm_frame = load_frames(DATA)
    gbm = fit_gbm(gbm_frame)
    policies = sample_policies(frame, 500)
    row = pd.DataFrame([policies[0]])
    for name in CATEGORICAL:
        row[name] = pd.Categorical(row[name], gbm_frame[name].cat.categories)
    expected = float(gbm.predict(row[FACTORS])[0]) * policies[0][EXPOSURE]
    say("registering it (and a GLM) into a ratekeeper registry")
    build_ratekeeper_registry(tmp / "rk", frame, gbm_frame, gbm)
    tracking, model_uri = ("", "")
    if with_mlflow:
        say("logging it into an MLflow registry")
        tracking, model_uri = build_mlflow_registry(tmp, gbm, gbm_frame, policies)
    setup = Setup(tmp, sys.executable, tmp / "rk", tracking, model_uri, policies, expected, plan)
    return setup, len(frame)


def measure(setup: Setup, servers: set[str]
            ) -> tuple[list[ServerRun], dict[str, tuple[list[float], list[float]]]]:
    plan = setup.plan
    ready: dict[str, tuple[list[float], list[float]]] = {}
    if "ratekeeper" in servers:
        for workers in (1, 2):
            say(f"start-to-ready, ratekeeper, {workers} worker(s)")
            ready[f"ratekeeper, 2 models, {workers} worker{'s' * (workers > 1)}"] = (
                start_to_ready(setup, "ratekeeper", workers, plan.ready_runs))
    if "mlflow" in servers:
        say("start-to-ready, mlflow models serve")
        ready["mlflow models serve, 1 model, 1 worker"] = start_to_ready(
            setup, "mlflow", 1, plan.mlflow_ready_runs)
    schedule = [("ratekeeper", 2, RATES), ("ratekeeper-nodrift", 2, (1000,)),
                ("ratekeeper-noledger", 2, RATES),
                ("ratekeeper", 1, RATES), ("floor", 2, RATES),
                ("floor", 1, ()), ("floor-fastapi", 2, ()), ("floor-fastapi", 1, ()),
                ("mlflow", 1, RATES), ("mlflow", 2, ())]
    return bench_servers(setup, [entry for entry in schedule if entry[0] in servers]), ready


def context_lines(plan: Plan, n_policies: int, busy_before: float, mlflow: bool) -> list[str]:
    import lightgbm
    import onnxruntime

    import ratekeeper

    lines = [
        f"Model: LightGBM {lightgbm.__version__} Poisson frequency, 300 trees, on beMTPL97 "
        f"({n_policies:,} policies); ratekeeper scores it with ONNX Runtime "
        f"{onnxruntime.__version__}. Machine: {os.cpu_count()} cores shared by server and load "
        f"generator; Python {sys.version.split()[0]}. Closed-loop cells {plan.cell_seconds:g} s, "
        f"open-loop runs {plan.rate_seconds:g} s after 1 s of warm-up. Before the run, other "
        f"processes used {busy_before:.0%} of the machine's CPU; load average at the end "
        f"{os.getloadavg()[0]:.1f}.",
    ]
    source = Path(ratekeeper.__file__).resolve().parent
    if not source.is_relative_to(ROOT):
        lines.append(f"ratekeeper imported from {source} (not this checkout).")
    if mlflow:
        import mlflow as mlflow_module

        lines.append(f"MLflow {mlflow_module.__version__}, pyfunc wrapper around the same "
                     "booster (benchmarks/mlflow_frequency_model.py), with a signature.")
    return lines


def ledger_summary(root: Path) -> str:
    """How many quotes the ledger-on servers recorded (every one they answered with a price)."""
    if not root.is_dir():
        return ""
    from ratekeeper.engine.ledger import read_ledger

    table = read_ledger(root)
    files = len(list(root.rglob("*.parquet"))) + len(list(root.rglob("*.arrows")))
    return (f"Quote ledger after the run: {table.num_rows:,} quotes recorded by the servers "
            f"with the ledger on, in {files:,} segment files.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"short cells, one round, only {', '.join(QUICK_SERVERS)} unless "
                        "--servers says otherwise (a few minutes)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--servers",
                        help=f"which of {', '.join(SERVERS)} to measure (default: all)")
    parser.add_argument("--no-locust", action="store_true", help="skip the locust smoke run")
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    servers = set(args.servers.split(",") if args.servers else
                  QUICK_SERVERS if args.quick else SERVERS)
    if not servers <= set(SERVERS):
        parser.error(f"unknown servers: {', '.join(sorted(servers))}")
    if not DATA.exists():
        print(f"error: the beMTPL97 data is missing: expected {DATA} (the shared data folder "
              "beside the project)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    started = time.perf_counter()
    busy_before = idle_check()
    if busy_before > 0.1:
        say(f"warning: other processes use {busy_before:.0%} of the machine's CPU: the "
            "figures will be low and noisy")
    with tempfile.TemporaryDirectory(prefix="rk-serve-bench-") as tmp_name:
        setup, n_policies = prepare(Path(tmp_name), plan, "mlflow" in servers)
        runs, ready = measure(setup, servers)
        ledger_line = ledger_summary(setup.rk_registry / "ledger")
        locust_line = ""
        if "ratekeeper" in servers and plan.locust_seconds and not args.no_locust:
            locust_line = run_locust(setup, plan.locust_seconds)
    text = report(runs, ready, context_lines(plan, n_policies, busy_before, "mlflow" in servers))
    if ledger_line:
        text += "\n" + ledger_line + "\n"
    if locust_line:
        text += "\n" + locust_line + "\n"
    text += f"\nWhole run: {time.perf_counter() - started:,.0f} s.\n"
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
