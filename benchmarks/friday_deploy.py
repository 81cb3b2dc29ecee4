"""The Friday-night deploy, measured: from a modeller's commit to new prices on every replica.

    PYTHONPATH=src python benchmarks/friday_deploy.py [--steps 1,10,50,100] [--bake 5s]
    PYTHONPATH=src python benchmarks/friday_deploy.py --promotion plain

On one machine: a throwaway PostgreSQL server (as tests/pg.py makes one), an S3 server (moto, in
a process of its own, on 127.0.0.1) holding the artifacts and the quote ledgers, and two
`ratekeeper serve` replicas under steady quote load (--rate per replica, --policies distinct
policies in turn, so that every step of a rollout shows in the answers). The deploy runs as a
team runs it, each step a process of its own as in deploy/ci/: the pipeline's `train.py` trains
and registers the new version through a replica (the remote client with a modeller's token: CI
holds no database or store credentials), `ratekeeper check` runs the gates, `ratekeeper request
--rollout staged` files the promotion request with its plan, a second person runs `ratekeeper
approve`, and a deployer `ratekeeper rollout start`; the replicas then step the rollout by
themselves until the version is in Production. With --promotion plain the request carries no
plan and the approval moves the version at once.

Printed: each step's duration; the rollout's moves as the registry recorded them; and the
headline, the time from the approval (its recorded time) to the last replica serving only the
new version, read from the replicas' answers (the `version` field of every quote: a replica
serves the new version from the end of its last answer by another one, so the reading is as fine
as the gap between two quotes), plus the failed requests (must be 0). The reference in the same
run: the bakes a staged rollout must wait before its last step, and the load's quote latency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MODEL = "motor_frequency"
TRAIN_PY = '''
"""The model repository's train.py (docs/ci.md): train, register, write the version number."""
import argparse, os
import pandas as pd
import ratekeeper as rk
from ratekeeper.demo import train_glm

parser = argparse.ArgumentParser()
parser.add_argument("--output", required=True)
book = pd.read_parquet("data/train.parquet")
registry = rk.Registry()  # $RATEKEEPER_REGISTRY_URI (a replica), $RATEKEEPER_TOKEN (CI's)
version = registry.register_model(
    train_glm(book), os.environ["MODEL"], training_data=book, target="claim_count",
    exposure="exposure",
)
open(parser.parse_args().output, "w").write(str(version.version))
'''


@dataclass
class Answer:
    sent: float  # wall clock (time.time()): comparable with the registry's recorded times
    received: float
    status: int
    version: int | None


@dataclass
class Load:
    """Quotes at a steady rate on keep-alive connections to one replica, policies in turn."""

    port: int
    policies: list[dict[str, Any]]
    rate: float
    threads: int = 2
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)
        ]

    def _run(self, offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        interval, at = self.threads / self.rate, time.monotonic()
        i = offset
        while not self._stop.is_set():
            body = json.dumps(self.policies[i % len(self.policies)]).encode()
            i += self.threads
            sent = time.time()
            try:
                conn.request(
                    "POST", f"/v1/models/{MODEL}/quote", body, {"content-type": "application/json"}
                )
                response = conn.getresponse()
                data = response.read()
                status = response.status
                version = json.loads(data).get("version") if status == 200 else None
            except OSError:
                status, version = 0, None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.answers.append(Answer(sent, time.time(), status, version))
            at += interval
            time.sleep(max(0.0, at - time.monotonic()))
        conn.close()

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)


def free_port() -> int:
    from server_process import free_port as pick

    return pick()


@contextmanager
def s3_server(folder: Path) -> Iterator[str]:
    """moto's S3 server in its own process (the load's threads never share its interpreter)."""
    port = free_port()
    log = open(folder / "moto.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(port, "/"), f"moto on {endpoint}", 60)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def answers(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        ok = conn.getresponse().status < 500
        conn.close()
        return ok
    except OSError:
        return False


def wait_until(condition: Any, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def replica(folder: Path, name: str, url: str, workers: int) -> Iterator[int]:
    """`ratekeeper serve` on the shared registry; its environment has the key and the store's."""
    from server_process import rating_server

    home = folder / name
    home.mkdir()
    with rating_server(
        home,
        "--ledger",
        str(home / "ledger"),
        "--drift-interval",
        "0",
        workers=workers,
        timeout=180,
        registry=url,
    ) as port:
        yield port


def timed(
    steps: list[tuple[str, float]], label: str, command: list[str], cwd: Path, env: dict[str, str]
) -> str:
    """Run one step of the deploy as its own process; record its wall time; its stdout."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    steps.append((label, time.perf_counter() - started))
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def serving_from(answers_: list[Answer], version: int, after: float) -> float | None:
    """When a replica served ``version`` for good: the end of its last answer by another
    version (``after`` when it never gave one after it); None if it never answered with it."""
    if not any(a.version == version for a in answers_ if a.sent >= after):
        return None
    old = [a.received for a in answers_ if a.status == 200 and a.version != version]
    return max([after, *old])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="quotes/s per replica")
    parser.add_argument("--policies", type=int, default=2000, help="distinct policies quoted")
    parser.add_argument("--book", type=int, default=6000, help="synthetic policies in all")
    parser.add_argument("--workers", type=int, default=2, help="workers per replica")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of load kept after")
    parser.add_argument("--promotion", choices=["staged", "plain"], default="staged")
    parser.add_argument("--steps", default="1,10,50,100", help="staged: traffic steps in %%")
    parser.add_argument("--bake", default="5s", help="staged: how long each step is held")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="friday-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        result = run(args, folder, stack)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["failed"] == 0 else 1


def run(args: argparse.Namespace, folder: Path, stack: ExitStack) -> dict[str, Any]:
    from pg import PostgresServer, unavailable_reason
    from ratekeeper.demo import train_glm
    from ratekeeper.synthetic import CATEGORICAL_FACTORS, RATING_FACTORS, motor_portfolio
    from registries import governed_team, token_of

    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"error: {reason}")
    setup = time.perf_counter()
    postgres = PostgresServer()
    stack.callback(postgres.stop)
    postgres.start()
    url = postgres.url(postgres.create_database())
    endpoint = stack.enter_context(s3_server(folder))
    os.environ.update(  # the replicas inherit these; the pipeline's processes get none of them
        AWS_ACCESS_KEY_ID="friday",
        AWS_SECRET_ACCESS_KEY="friday",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        RATEKEEPER_S3_ENDPOINT_URL=endpoint,
        RATEKEEPER_AUDIT_KEY=os.urandom(32).hex(),
    )
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="pricing-models")
    store = "s3://pricing-models/ratekeeper"
    os.environ["RATEKEEPER_ARTIFACTS"] = store

    book = motor_portfolio(args.book, seed=7)
    train, holdout = book.iloc[: len(book) * 2 // 3], book.iloc[len(book) * 2 // 3 :]
    team = governed_team(
        url,
        {"modeller": ["modeller"], "ci": ["modeller"], "carol": ["approver"], "dave": ["deployer"]},
        artifacts=store,
    )
    for handle in team.values():
        stack.callback(handle.close)
    # Production today: version 1, trained on last quarter's book (all but the newest 2.5 %:
    # a close sibling, so the gates pass), approved last week.
    earlier = train.iloc[: len(train) - len(train) // 40]
    first = team["modeller"].register_model(
        train_glm(earlier),
        MODEL,
        training_data=earlier,
        target="claim_count",
        exposure="exposure",
    )
    old = team["modeller"].request_promotion(MODEL, first.version, "Production", holdout=holdout)
    team["carol"].approve(old.id)

    ports = [stack.enter_context(replica(folder, name, url, args.workers)) for name in ("a", "b")]
    setup = time.perf_counter() - setup
    quoted = [  # JSON as a quoting system sends it
        {k: (str(v) if k in CATEGORICAL_FACTORS else v) for k, v in row.items()}
        for row in book[[*RATING_FACTORS, "exposure"]]
        .sample(n=min(args.policies, len(book)), random_state=3)
        .to_dict("records")
    ]
    loads = [Load(port, quoted, args.rate) for port in ports]

    repo = folder / "repo"  # the model repository at the modeller's commit
    (repo / "data").mkdir(parents=True)
    train.to_parquet(repo / "data" / "train.parquet", index=False)
    holdout.to_parquet(repo / "data" / "holdout.parquet", index=False)
    (repo / "train.py").write_text(TRAIN_PY)
    pipeline = {  # what a CI job has: the server's address and its own token, nothing else
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RATEKEEPER_"))
    }
    pipeline.update(
        MODEL=MODEL,
        PYTHONPATH=str(ROOT / "src"),
        RATEKEEPER_REGISTRY_URI=f"http://127.0.0.1:{ports[0]}",
        RATEKEEPER_TOKEN=token_of(team["ci"]),
    )
    approver = {**pipeline, "RATEKEEPER_TOKEN": token_of(team["carol"])}
    deployer = {**pipeline, "RATEKEEPER_TOKEN": token_of(team["dave"])}
    steps: list[tuple[str, float]] = []

    def ratekeeper(label: str, env: dict[str, str], *words: str) -> str:
        return timed(steps, label, [sys.executable, "-m", "ratekeeper", *words], repo, env)

    staged = args.promotion == "staged"
    plan = ["--steps", args.steps, "--bake", args.bake]
    for load in loads:
        load.start()
    try:
        time.sleep(1.0)
        commit = time.time()
        train_py = [sys.executable, "train.py", "--output", "version.txt"]
        timed(steps, "train.py: train, register (CI)", train_py, repo, pipeline)
        version = int((repo / "version.txt").read_text())
        uri, holdout_file = f"models:/{MODEL}/{version}", "data/holdout.parquet"
        ratekeeper(
            "ratekeeper check: the gates (CI)",
            pipeline,
            *("check", uri, "--holdout", holdout_file, "--against", "Production"),
            *("--report", "gate-report.html", "--json", "gate-report.json"),
        )
        ratekeeper(
            "ratekeeper request (CI)",
            pipeline,
            *("request", MODEL, str(version), "Production", "--holdout", holdout_file),
            *(("--rollout", "staged", *plan) if staged else ()),
            *("-m", "commit 0123abc"),
        )
        request_id = team["modeller"].list_requests(MODEL)[-1].id
        ratekeeper("ratekeeper approve (approver)", approver, "approve", str(request_id))
        if staged:
            ratekeeper(
                "ratekeeper rollout start (deployer)",
                deployer,
                *("rollout", "start", MODEL, str(version), "--mode", "staged", *plan),
            )
        wait_until(
            lambda: team["modeller"].resolve(f"models:/{MODEL}/Production").version == version,
            f"version {version} in Production",
            600,
        )
        time.sleep(args.settle)
    finally:
        for load in loads:
            load.stop()
    decided = next(r for r in team["modeller"].list_requests(MODEL) if r.id == request_id)
    assert decided.decided_at is not None
    approved = decided.decided_at.timestamp()
    served = [serving_from(load.answers, version, approved) for load in loads]
    if None in served:
        raise RuntimeError(f"a replica never answered with version {version}: {served}")
    last = max(s for s in served if s is not None)
    everything = [a for load in loads for a in load.answers]
    latencies = sorted(a.received - a.sent for a in everything if a.status == 200)
    return {
        "setup_s": setup,
        "steps": steps,
        "moves": rollout_moves(team["modeller"], approved) if staged else [],
        "approval_to_replica_s": [s - approved for s in served if s is not None],
        "approval_to_last_replica_s": last - approved,
        "commit_to_last_replica_s": last - commit,
        "floor_s": bake_seconds(args.bake) * (len(args.steps.split(",")) - 1) if staged else 0.0,
        "quotes": len(everything),
        "failed": sum(a.status != 200 for a in everything),
        "quote_median_ms": 1000 * statistics.median(latencies),
        "quote_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "rate": args.rate,
        "replicas": len(loads),
        "workers": args.workers,
        "promotion": (
            f"staged rollout, steps {args.steps} %, bake {args.bake} each"
            if staged
            else "plain promotion (the approval moves the version)"
        ),
        "version": version,
    }


def bake_seconds(bake: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(bake[:-1]) * units[bake[-1]] if bake[-1] in units else float(bake)


def rollout_moves(registry: Any, approved: float) -> list[tuple[str, float]]:
    """The rollout's moves as the registry recorded them, in seconds after the approval."""
    moves = []
    for event in registry.rollout_events(MODEL):
        at = datetime.fromisoformat(event["at"]).timestamp() - approved
        if event["kind"] in ("start", "step"):
            moves.append((f"rollout {event['kind']}: {event['percent']:g} % of policies", at))
        elif event["kind"] != "guards":
            moves.append((f"rollout {event['kind']}", at))
    return moves


def print_report(r: dict[str, Any]) -> None:
    print(
        f"\nThe Friday-night deploy: {r['replicas']} replicas x {r['workers']} workers on "
        f"PostgreSQL + S3 (moto), {r['rate']:.0f} quotes/s each; {r['promotion']}"
    )
    print(f"(setup, not part of the deploy: {r['setup_s']:.1f} s)\n")
    print(f"| {'step (each its own process)':<46} | {'seconds':>8} |")
    print(f"|{'-' * 48}|{'-' * 9}:|")
    for label, seconds in r["steps"]:
        print(f"| {label:<46} | {seconds:>8.2f} |")
    print(f"\n| {'after the approval (its recorded time)':<46} | {'seconds':>8} |")
    print(f"|{'-' * 48}|{'-' * 9}:|")
    after = [*r["moves"]]
    for i, seconds in enumerate(r["approval_to_replica_s"]):
        after.append((f"replica {'ab'[i]} serves v{r['version']} only", seconds))
    for label, seconds in sorted(after, key=lambda row: row[1]):
        print(f"| {label:<46} | {seconds:>8.2f} |")
    print(
        f"\nHeadline: approval → last replica serving v{r['version']}: "
        f"{r['approval_to_last_replica_s']:.2f} s"
        + (f" (the bakes before the last step: {r['floor_s']:.0f} s)" if r["floor_s"] else "")
    )
    print(f"Commit → last replica serving v{r['version']}: {r['commit_to_last_replica_s']:.2f} s")
    print(
        f"Failed requests: {r['failed']} of {r['quotes']:,}; quote latency through it all "
        f"(reference): median {r['quote_median_ms']:.1f} ms, p99 {r['quote_p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
