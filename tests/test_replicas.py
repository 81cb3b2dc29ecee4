"""Two `ratekeeper serve` replicas sharing one PostgreSQL registry and one S3 store (moto on
loopback: the artifacts, and each replica's quote ledger shipped there), under steady load
through promotions, rollbacks, rollouts started (a canary of every policy) and aborted, and a
restart of PostgreSQL.

Every change must reach both replicas (both workers of each) within a second, by notification:
the replicas poll only every 5 s. No request may fail, and no answer may come from a version
that was not live at that moment. While PostgreSQL is down the replicas keep pricing (they poll
meanwhile); once it is back, their listeners reconnect and the next change arrives as fast.
The time each change took to reach each replica is printed (run with ``-s`` to read it).
Once the replicas have stopped, every quote they answered is in the ledger on S3, verified.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
from tests.http_helpers import policies
from tests.server_process import SteadyQuotes, rating_server, request

from ratekeeper import Settings
from ratekeeper.demo import train_glm
from ratekeeper.engine.ledger_store import ledger_view, open_ledger_objects
from ratekeeper.engine.ledger_verify import verify_ledger
from ratekeeper.governance.signing import SigningKey
from ratekeeper.synthetic import motor_portfolio
from registries import TEST_KEY, open_registry

pytestmark = pytest.mark.postgres
MODEL = "motor_frequency"
SEEN_WITHIN = 1.0  # seconds from a move's commit to every answer of every replica
POLL = "5"  # seconds between the replicas' polls: only notifications are faster
WAIT = 30.0


@pytest.fixture()
def world(private_postgres, s3_location, tmp_path, monkeypatch):
    # The replicas inherit the environment: the key, the store, its endpoint and credentials
    # (s3_location sets RATEKEEPER_S3_ENDPOINT_URL and the AWS_* variables, as a team's would).
    monkeypatch.setenv("RATEKEEPER_AUDIT_KEY", TEST_KEY)
    monkeypatch.setenv("RATEKEEPER_ARTIFACTS", s3_location)
    url = private_postgres.url(private_postgres.create_database())
    book = motor_portfolio(2000, seed=4)
    registry = open_registry(url, user="modeller", artifacts=s3_location)
    for i in range(3):  # three versions with (slightly) different training data
        registry.register_model(
            train_glm(book.iloc[i * 50 :]),
            MODEL,
            training_data=book.iloc[i * 50 :],
            exposure="exposure",
        )
    registry.transition_stage(MODEL, 1, "Production")
    yield registry, url, policies(book, 1)[0], s3_location
    registry.close()


def following(port: int, workers: int = 2) -> set[str]:
    """How each worker of a replica follows the registry (asks until both have answered)."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + WAIT
    while len(seen) < workers and time.monotonic() < deadline:
        status, body = request(port, "GET", "/readyz")  # a new connection: any worker
        if status == 200:
            seen[body["worker"]] = body["following"]
    return set(seen.values())


def wait_for(port: int, state: str) -> None:
    deadline = time.monotonic() + WAIT
    while following(port) != {state}:
        assert time.monotonic() < deadline, f"replica on {port} never reached {state}"
        time.sleep(0.1)


def test_two_replicas_follow_every_move_within_a_second(world, tmp_path, private_postgres):
    registry, url, policy, store = world
    timeline = [(0.0, 0.0, 1)]  # (move started, move committed, the Production version it made)

    def move(n: int) -> None:
        started = time.monotonic()
        production = registry.resolve(f"models:/{MODEL}/Production").version
        if n >= 12 and n % 2 == 0:  # a canary of every policy: its version answers them all
            live = production % 3 + 1
            registry.start_rollout(MODEL, live, mode="canary", percent=100, comment=f"move {n}")
        elif n >= 12:
            registry.abort_rollout(MODEL, reason=f"move {n}")
            live = production
        elif n % 3 == 2:
            live = registry.rollback(MODEL).version
        else:
            live = production % 3 + 1
            registry.transition_stage(MODEL, live, "Production", comment=f"move {n}")
        timeline.append((started, time.monotonic(), live))
        time.sleep(1.5)

    options = ["--poll-interval", POLL, "--drift-interval", "0"]
    with (
        rating_server(
            tmp_path, *options, "--ledger", str(tmp_path / "ledger-a"), registry=url
        ) as a,
        rating_server(
            tmp_path, *options, "--ledger", str(tmp_path / "ledger-b"), registry=url
        ) as b,
    ):
        wait_for(a, "notifications")
        wait_for(b, "notifications")
        with SteadyQuotes(a, MODEL, policy) as load_a, SteadyQuotes(b, MODEL, policy) as load_b:
            time.sleep(0.5)
            for n in range(6):
                move(n)
            private_postgres.shut_down()  # the replicas keep pricing meanwhile
            wait_for(a, "polling")
            wait_for(b, "polling")
            time.sleep(1.0)
            restarted = time.monotonic()
            private_postgres.start_again()
            wait_for(a, "notifications")
            wait_for(b, "notifications")
            reconnected = time.monotonic() - restarted
            for n in range(6, 16):  # four more: rollouts started and aborted
                move(n)

    delays = {}
    for name, load in (("a", load_a), ("b", load_b)):
        records = load.records
        failures = [r for r in records if r[2] != 200]
        assert failures == [], f"replica {name}: {len(failures)} failed, first: {failures[:3]}"
        assert len(records) > 2000
        delays[name] = check_timeline(records, timeline)
    everything = sorted(delays["a"] + delays["b"])
    print(
        f"\n{len(everything)} changes seen (2 replicas x {len(timeline) - 1} moves), seconds "
        f"from commit to the last old answer: median {statistics.median(everything):.3f}, "
        f"p90 {everything[int(0.9 * len(everything))]:.3f}, max {everything[-1]:.3f}; "
        f"all: {[round(d, 3) for d in everything]}; of the rollouts' starts and aborts, max "
        f"{max(delays['a'][12:] + delays['b'][12:]):.3f}; listeners back "
        f"{reconnected:.2f} s after PostgreSQL's start"
    )
    assert everything[-1] < SEEN_WITHIN
    shipped_to_s3(store, tmp_path, answered=len(load_a.records) + len(load_b.records))


def shipped_to_s3(store: str, tmp_path: Path, answered: int) -> None:
    """The stopped replicas' spools are empty, and the ledger on S3 holds every quote answered,
    its chains and seals intact: one chain per worker that priced a quote (a worker may get
    none: the load's two keep-alive connections per replica can land on one worker)."""
    for name in ("ledger-a", "ledger-b"):
        assert [p for p in (tmp_path / name).rglob("*") if p.is_file()] == [], name
    objects = open_ledger_objects(f"{store}/ledger", Settings.from_env())
    with ledger_view(None, objects, model=MODEL) as view:
        result = verify_ledger(view, SigningKey(bytes.fromhex(TEST_KEY)))
    assert result.intact, result.summary()
    assert (result.rows, result.open_chains) == (answered, 0)
    assert 2 <= result.chains <= 4


def check_timeline(records: list, timeline: list) -> list[float]:
    """Each answer came from a version live at that moment; returns, per move, the seconds from
    its commit to the end of the replica's last answer from the previous version."""

    def live_between(start: float, end: float) -> set[int]:
        versions = set()
        for i, (began, _, version) in enumerate(timeline):
            until = timeline[i + 1][1] if i + 1 < len(timeline) else float("inf")
            if began <= end and until >= start:
                versions.add(version)
        return versions

    for sent, received, _, version in records:
        assert version in live_between(sent - SEEN_WITHIN, received), (sent, version)
    delays = []
    ends = [t[0] for t in timeline[2:]] + [float("inf")]
    for (started, committed, version), next_move in zip(timeline[1:], ends, strict=True):
        window = [r for r in records if started <= r[0] < next_move]
        old = [received for _, received, _, v in window if v != version]
        assert window and window[-1][3] == version
        delays.append(max(0.0, max(old, default=committed) - committed))
    return delays
