"""Live drift: the rating server's PSI gauges over the quote ledger, and the webhook alert."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.http_helpers import MODEL, make_registry, policies
from tests.server_process import free_port, rating_server, request

from ratekeeper.engine.drift_watcher import DriftGauges, DriftWatchConfig, DriftWatcher
from ratekeeper.engine.ids import new_quote_id
from ratekeeper.engine.ledger import LedgerConfig, inputs_table, read_ledger, recording
from ratekeeper.monitoring import drift


@contextmanager
def webhook_receiver(port: int = 0) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on loopback that keeps every JSON body POSTed to it."""
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def gauge(metrics: str, name: str, **labels: str) -> float | None:
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def record_quotes(ledger: Path, scorer: Any, quoted: list[dict[str, Any]]) -> None:
    """Price each policy with ``scorer`` and record it in the ledger, as the server would."""
    with recording(LedgerConfig(ledger)) as writer:
        for policy in quoted:
            price = scorer.predict_one(policy)
            writer.record(
                new_quote_id(), MODEL, 1, scorer.signature, "quote", "Production", policy, price
            )


def older_drivers(book: Any, n: int) -> list[dict[str, Any]]:
    """Policies like the book's, except that every driver is 80: the book has aged."""
    return [{**p, "driver_age": 80} for p in policies(book.sample(frac=1, random_state=3), n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_server_exports_live_psi_and_posts_an_alert_when_the_book_drifts(
    tmp_path, workers
) -> None:
    registry, book = make_registry(tmp_path / "registry", n_policies=3000)
    registry.close()
    with (
        webhook_receiver() as (hook, received),
        rating_server(
            tmp_path / "registry",
            "--drift-interval",
            "0.3",
            "--drift-min-quotes",
            "300",
            "--alert-webhook",
            hook,
            workers=workers,
        ) as port,
    ):
        like_training = policies(book, 1000)
        for start in range(0, 1000, 250):
            status, _ = request(
                port, "POST", f"/v1/models/{MODEL}/score", like_training[start : start + 250]
            )
            assert status == 200
        # A check may run between two batches (at 500 quotes, already over the minimum): wait
        # for the one that saw all 1000.
        metrics = wait_for(
            port,
            lambda m: (
                gauge(m, "ratekeeper_drift_quotes", model=MODEL, version="1") == 1000
                and gauge(m, "ratekeeper_drift_status", version="1") == 0
            ),
        )
        age_psi = gauge(metrics, "ratekeeper_drift_psi", version="1", factor="driver_age")
        assert age_psi is not None and age_psi < 0.10
        assert gauge(metrics, "ratekeeper_drift_psi", version="1", factor="prediction") < 0.10
        assert received == []  # stable from the start: nothing to say

        aged = older_drivers(book, 3000)
        for start in range(0, 3000, 250):
            status, _ = request(
                port, "POST", f"/v1/models/{MODEL}/score", aged[start : start + 250]
            )
            assert status == 200
        metrics = wait_for(port, lambda m: gauge(m, "ratekeeper_drift_status", version="1") == 2)
        assert gauge(metrics, "ratekeeper_drift_psi", version="1", factor="driver_age") >= 0.25
        assert gauge(metrics, "ratekeeper_drift_psi", version="1", factor="area") < 0.10
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
    (alert,) = received  # one alert from one watcher process, however many workers
    assert alert["event"] == "ratekeeper.drift"
    assert (alert["model"], alert["version"]) == (MODEL, 1)
    assert (alert["status"], alert["previous_status"]) == ("alert", "stable")
    by_factor = {f["factor"]: f for f in alert["factors"]}
    assert by_factor["driver_age"]["band"] == "alert"
    assert by_factor["area"]["band"] == "stable"
    assert 1000 < alert["quotes"] <= 4000  # as many as the window held at that check

    # The same ledger, judged offline by the command a monthly monitoring pack runs.
    judged = subprocess.run(
        [sys.executable, "-m", "ratekeeper", "--registry", str(tmp_path / "registry"), "drift",
         f"models:/{MODEL}/1", "--ledger", "--since", "1h", "--json"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert judged.returncode == 2, judged.stderr  # alert
    report = json.loads(judged.stdout)
    assert report["rows"] == 4000
    by_name = {f["name"]: f for f in report["factors"]}
    assert by_name["driver_age"]["psi"] >= 0.25 and by_name["area"]["band"] == "stable"


def wait_for(port: int, ready: Any, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status, body = request(port, "GET", "/metrics")
        assert status == 200
        if ready(body):
            return str(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_a_failed_webhook_is_retried_at_the_next_check(tmp_path) -> None:
    registry, book = make_registry(tmp_path / "registry", n_policies=2000)
    scorer = registry.load_model(f"models:/{MODEL}/1")
    ledger = tmp_path / "ledger"
    record_quotes(ledger, scorer, older_drivers(book, 400))
    port = free_port()  # nothing listens there yet
    config = DriftWatchConfig(
        ledger, window=timedelta(hours=1), min_quotes=100, webhook=f"http://127.0.0.1:{port}/h"
    )
    gauges = DriftGauges(CollectorRegistry(), multiprocess=False)
    watcher = DriftWatcher(registry, config, gauges)
    assert watcher.check() == {(MODEL, 1): "alert"}
    assert gauges.alerts.labels("failed")._value.get() == 1
    with webhook_receiver(port) as (_, received):
        assert watcher.check() == {(MODEL, 1): "alert"}
        assert [a["status"] for a in received] == ["alert"]
        watcher.check()  # no change since the last alert: nothing more is posted
        assert len(received) == 1
    assert gauges.psi.labels(MODEL, "1", "driver_age")._value.get() >= 0.25
    registry.close()


def test_too_few_quotes_are_not_judged(tmp_path) -> None:
    registry, book = make_registry(tmp_path / "registry", n_policies=2000)
    scorer = registry.load_model(f"models:/{MODEL}/1")
    ledger = tmp_path / "ledger"
    record_quotes(ledger, scorer, older_drivers(book, 50))
    gauges = DriftGauges(CollectorRegistry(), multiprocess=False)
    watcher = DriftWatcher(registry, DriftWatchConfig(ledger, min_quotes=100), gauges)
    assert watcher.check() == {}
    assert gauges.quotes.labels(MODEL, "1")._value.get() == 50
    registry.close()


def test_the_recorded_prices_give_the_prediction_psi_of_scoring_again(tmp_path) -> None:
    registry, book = make_registry(tmp_path / "registry", n_policies=2000)
    scorer = registry.load_model(f"models:/{MODEL}/1")
    ledger = tmp_path / "ledger"
    record_quotes(ledger, scorer, policies(book.sample(frac=1, random_state=5), 600))
    quotes = read_ledger(ledger)
    rescored = drift(scorer, inputs_table(quotes))
    recorded = drift(scorer.model_version, inputs_table(quotes), prices=quotes["prediction"])
    assert recorded.prediction is not None and rescored.prediction is not None
    assert recorded.prediction.psi == pytest.approx(rescored.prediction.psi, rel=1e-9)
    assert recorded.prediction.stability.actual == pytest.approx(
        rescored.prediction.stability.actual, rel=1e-9
    )
    assert [f.psi for f in recorded.factors] == [f.psi for f in rescored.factors]
    registry.close()
