"""Rollouts against real server processes: two replicas of two workers each, one registry.

Stickiness everywhere; a challenger pricing three times higher rolled back by the premium guard
within a second with no failed request; a staged rollout with bakes of a second that ends in
Production; a shadow whose two prices reach the ledger for every quote.
"""

from __future__ import annotations

import http.client
import threading
import time
from datetime import UTC, datetime

import pytest
from tests.server_process import rating_server, request

import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.engine.ledger import read_ledger
from ratekeeper.rollouts import hashing
from ratekeeper.synthetic import CATEGORICAL_FACTORS, RATING_FACTORS, motor_portfolio
from registries import open_registry

MODEL = "motor_frequency"
ROLLBACK_WINDOW = 1.0  # seconds after the rollback is recorded in which a challenger may answer
CALM = rk.Guards(median_ratio=(0.5, 2.0), move=1.0, max_moved_share=1.0, max_p99_ms=10_000)


@pytest.fixture()
def world(tmp_path):
    """v1 in Production; v2 prices three times higher; v3 is v1 trained on claims a little
    different (the same rating factors' ranges: it prices every policy v1 prices)."""
    book = motor_portfolio(2000, seed=4)
    registry = open_registry(tmp_path, user="deployer")
    tripled = book.assign(claim_count=book["claim_count"] * 3)
    fewer = book.assign(claim_count=book["claim_count"].where(book["policy_id"] % 7 != 0, 0))
    for model, data in ((train_glm(book), book), (train_glm(tripled), tripled),
                        (train_glm(fewer), fewer)):  # fmt: skip
        registry.register_model(
            model, MODEL, training_data=data, exposure="exposure", id_column="policy_id"
        )
    registry.transition_stage(MODEL, 1, "Production")
    rows = book[[*RATING_FACTORS, "exposure", "policy_id"]].to_dict("records")
    sent = [{k: (str(v) if k in CATEGORICAL_FACTORS else v) for k, v in r.items()} for r in rows]
    yield registry, sent, tmp_path
    registry.close()


def quote(port: int, policy: dict, conn: http.client.HTTPConnection | None = None) -> dict:
    status, body = request(port, "POST", f"/v1/models/{MODEL}/quote", policy, connection=conn)
    assert status == 200, body
    return body


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_canary_is_sticky_across_workers_and_replicas(world) -> None:
    registry, sent, folder = world
    registry.start_rollout(MODEL, 3, mode="canary", percent=30, guards=CALM)
    factors = RATING_FACTORS
    with rating_server(folder, workers=2) as one, rating_server(folder, workers=2) as two:
        arms: dict[str, set[tuple[str, int]]] = {}
        for policy in sent[:80]:
            for port in (one, two, one, two):  # a new connection each time: any worker
                answer = quote(port, policy)
                arms.setdefault(str(policy["policy_id"]), set()).add(
                    (answer["arm"], answer["version"])
                )
        expected = {
            str(p["policy_id"]): hashing.arm_of(MODEL, p, 30, "policy_id", factors)
            for p in sent[:80]
        }
        for key, seen in arms.items():
            assert seen == {(expected[key], 3 if expected[key] == "challenger" else 1)}
        share = sum(e == "challenger" for e in expected.values()) / len(expected)
        assert 0.15 < share < 0.45
    assert registry.get_rollout(MODEL).status == "active"


class Load:
    """Quotes of many policies at a steady rate; records (received at, status, arm)."""

    def __init__(self, port: int, sent: list[dict], rate: float = 200.0, threads: int = 4) -> None:
        self.port, self.sent, self.interval = port, sent, threads / rate
        self.records: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)
        ]

    def run(self, offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        i, next_send = offset, time.monotonic()
        while not self.stop.is_set():
            policy = self.sent[i % len(self.sent)]
            i += len(self.threads)
            try:
                status, body = request(
                    self.port, "POST", f"/v1/models/{MODEL}/quote", policy, connection=conn
                )
                arm = body.get("arm") if status == 200 else None
            except OSError:
                status, arm = 0, None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.records.append((time.time(), status, arm))
            next_send += self.interval
            time.sleep(max(0.0, next_send - time.monotonic()))
        conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def test_a_challenger_three_times_dearer_is_rolled_back_within_a_second(world) -> None:
    registry, sent, folder = world
    posted: list[dict] = []
    hook = _Webhook(posted)
    guards = rk.Guards(min_quotes=30, sample=1.0, max_p99_ms=10_000, webhook=hook.url)
    with hook, rating_server(folder, "--poll-interval", "0.2", workers=2) as port:
        with Load(port, sent[:500]) as load:
            time.sleep(0.5)
            registry.start_rollout(MODEL, 2, mode="canary", percent=50, guards=guards)
            wait_for(lambda: registry.get_rollout(MODEL).status == "rolled_back")
            time.sleep(ROLLBACK_WINDOW + 1.0)
        rollout = registry.get_rollout(MODEL)
        assert rollout.reason.startswith("median premium ratio 3.")
        event = registry.audit_log(MODEL)[-2]
        assert (event.action, event.actor) == ("rollout.rollback", "guards")
        recorded_at = event.at.timestamp()
    statuses = {status for _, status, _ in load.records}
    assert statuses == {200}, "every quote was answered"
    challengers = [at for at, _, arm in load.records if arm == "challenger"]
    assert challengers, "the challenger was live before the guard tripped"
    late = [at - recorded_at for at in challengers if at > recorded_at + ROLLBACK_WINDOW]
    assert late == [], f"challenger answers {late} s after the rollback"
    assert registry.get_model(MODEL).aliases == {"champion": 1}
    wait_for(lambda: len(posted) >= 1)  # the webhook heard it, from the worker that tripped
    assert [(b["event"], b["model"], b["rollout"]["status"]) for b in posted] == [
        ("rollout.rollback", MODEL, "rolled_back")
    ]
    assert posted[0]["rollout"]["reason"] == rollout.reason


class _Webhook:
    """A loopback HTTP endpoint that keeps the JSON bodies POSTed to it."""

    def __init__(self, posted: list[dict]) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                posted.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _Webhook:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_a_staged_rollout_steps_by_itself_and_ends_in_production(world) -> None:
    registry, sent, folder = world
    server = rating_server(folder, "--poll-interval", "0.1", workers=2)
    with server as port, Load(port, sent[:300], rate=100) as load:
        registry.start_rollout(MODEL, 3, mode="staged", steps="20,60,100", bake="1s", guards=CALM)
        wait_for(lambda: registry.get_rollout(MODEL).status == "completed", timeout=30)
        wait_for(lambda: quote(port, sent[0])["version"] == 3)
        time.sleep(0.3)
    assert {status for _, status, _ in load.records} == {200}
    assert {arm for _, _, arm in load.records} == {"champion", "challenger"}
    assert registry.resolve(f"models:/{MODEL}/Production").version == 3
    assert registry.get_version(MODEL, 1).stage == rk.Stage.ARCHIVED
    assert registry.resolve(f"models:/{MODEL}@champion").version == 3
    moves = [e for e in registry.rollout_events(MODEL) if e["kind"] != "guards"]
    assert [(e["kind"], e["actor"], e["percent"]) for e in moves] == [
        ("start", "deployer", 20.0),
        ("step", "rollout", 60.0),
        ("step", "rollout", 100.0),
        ("complete", "rollout", 0.0),
    ]
    assert registry.verify_audit().ok


def test_a_shadow_records_both_prices_for_every_quote(world) -> None:
    registry, sent, folder = world
    ledger = folder / "ledger"
    registry.start_rollout(MODEL, 3, mode="shadow", guards=CALM)
    started = datetime.now(UTC)
    with rating_server(folder, "--ledger", str(ledger), workers=2) as port:
        answers = [quote(port, policy) for policy in sent[:40]]
    assert {(a["arm"], a["version"]) for a in answers} == {("champion", 1)}
    rows = {r["quote_id"]: r for r in read_ledger(ledger, model=MODEL, since=started).to_pylist()}
    expected = rk.load_model(f"models:/{MODEL}/3", registry)
    for answer, policy in zip(answers, sent[:40], strict=True):
        row = rows[answer["quote_id"]]
        assert (row["version"], row["arm"], row["prediction"]) == (
            1,
            "champion",
            answer["prediction"],
        )
        assert row["shadow_version"] == 3
        assert row["shadow_prediction"] == pytest.approx(expected.predict_one(policy), rel=1e-9)
