"""The quote ledger on object storage: a local spool, shipped to a real S3 server (moto).

The outage is real too: the S3 server is stopped while quotes flow, and started again on the
same port.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.server_process import free_port, rating_server, request
from tests.test_ledger import SIGNATURE, policy

from ratekeeper import Settings
from ratekeeper.engine.ids import new_quote_id
from ratekeeper.engine.ledger import LedgerConfig, QuoteLedger, read_ledger
from ratekeeper.engine.ledger_store import ledger_view, open_ledger_objects
from ratekeeper.engine.ledger_verify import verify_ledger
from ratekeeper.errors import NotFoundError
from ratekeeper.governance.signing import SigningKey
from registries import TEST_KEY, open_registry
from s3_server import MotoS3, s3_environment

KEY = SigningKey(bytes.fromhex(TEST_KEY))


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def keys(server: MotoS3, location: str) -> list[str]:
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")  # type: ignore[attr-defined]
    return sorted(item["Key"].removeprefix(f"{prefix}/") for item in listed.get("Contents", []))


def config(spool: Path, location: str, **options: Any) -> LedgerConfig:
    return LedgerConfig(
        spool,
        flush_interval=0.05,
        upload_interval=0.05,
        key=KEY,
        store=open_ledger_objects(location, Settings.from_env()),
        **options,
    )


def record(ledger: QuoteLedger, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        ids.append(new_quote_id())
        ledger.record(ids[-1], "motor", 1, SIGNATURE, "quote", "Production", policy(i), i / 8)
    return ids


def in_segments(ledger: QuoteLedger, n: int, start: int = 0, per: int = 30) -> list[str]:
    """``n`` quotes, ``per`` at a time, each lot written (so sealed) before the next is sent."""
    ids: list[str] = []
    for first in range(start, start + n, per):
        count = min(per, start + n - first)
        target = ledger.written + count
        ids += record(ledger, count, start=first)
        wait_for(lambda target=target: ledger.written >= target, "a lot of quotes written")
    return ids


def test_sealed_segments_are_shipped_and_the_spool_empties(
    s3_location: str, moto_s3: MotoS3, tmp_path: Path
) -> None:
    location = f"{s3_location}/ledger"
    ledger = QuoteLedger(config(tmp_path / "spool", location, segment_rows=40))
    ledger.start()
    ids = record(ledger, 100)
    ledger.close()
    shipped = keys(moto_s3, location)
    assert [k.split("/")[1] for k in shipped].count("_chain") == 1
    assert sum(k.endswith(".parquet") for k in shipped) >= 1
    assert all(k.startswith("motor/") for k in shipped)
    assert [p for p in (tmp_path / "spool").rglob("*") if p.is_file()] == []  # all confirmed
    assert ledger.spool is not None and ledger.spool.bytes == 0 and not ledger.spool.full

    store = open_ledger_objects(location, Settings.from_env())
    with ledger_view(None, store, model="motor") as view:
        assert read_ledger(view, model="motor").column("quote_id").to_pylist() == ids
        result = verify_ledger(view, KEY)
    assert result.intact, result.summary()
    assert result.rows == 100 and result.chains == 1 and result.seals_checked


@pytest.fixture
def own_moto(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Callable[[], None], Callable[[], None], str]]:
    """An S3 server of this test's own on a fixed port: ``stop()``, ``start()``, location."""
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the dev extra)")
    from moto.server import ThreadedMotoServer

    port = free_port()
    servers: list[Any] = []

    def start() -> None:
        servers.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
        servers[-1].start()

    def stop() -> None:
        servers.pop().stop()

    start()
    endpoint = f"http://127.0.0.1:{port}"
    s3_environment(monkeypatch, endpoint)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="rk-outage")
    try:
        yield stop, start, "s3://rk-outage/team/ledger"
    finally:
        while servers:
            stop()


def test_nothing_is_lost_while_the_store_is_down(
    own_moto: tuple[Callable[[], None], Callable[[], None], str], tmp_path: Path
) -> None:
    stop, start, location = own_moto
    spool = tmp_path / "spool"
    ledger = QuoteLedger(config(spool, location, segment_rows=30, spool_max_bytes=4096))
    ledger.start()
    try:
        before = in_segments(ledger, 60)
        wait_for(lambda: ledger.spool is not None and ledger.spool.segments == 0, "the uploads")
        stop()  # the store goes down while quotes flow
        during = in_segments(ledger, 200, start=60)
        wait_for(lambda: len(list(spool.rglob("*.parquet"))) >= 6, "segments sealed into the spool")
        # The spool's state is measured at each upload round, and the rounds back off while the
        # store is down (up to a minute): wait for a round that saw the sealed segments.
        wait_for(
            lambda: ledger.spool is not None and ledger.spool.full and ledger.spool.segments >= 5,
            "the spool to fill",
            seconds=90,
        )
        state = ledger.spool
        assert state is not None and state.bytes >= 4096 and state.segments >= 5
        assert state.error is not None and state.error.startswith("cannot reach the artifact store")
        start()  # the store is back: the spool drains
        wait_for(lambda: not list(spool.rglob("*.parquet")), "the spool to drain")
        after = record(ledger, 10, start=260)
    finally:
        ledger.close()
    assert [p for p in spool.rglob("*") if p.is_file()] == []
    store = open_ledger_objects(location, Settings.from_env())
    with ledger_view(None, store) as view:
        recorded = read_ledger(view).column("quote_id").to_pylist()
        result = verify_ledger(view, KEY)
    assert recorded == before + during + after  # nothing lost, in order
    assert result.intact, result.summary()
    assert result.rows == 270


def test_a_deleted_or_edited_segment_on_s3_is_detected(
    s3_location: str, moto_s3: MotoS3, tmp_path: Path
) -> None:
    location = f"{s3_location}/ledger"
    ledger = QuoteLedger(config(tmp_path / "spool", location, segment_rows=25))
    ledger.start()
    in_segments(ledger, 100, per=25)
    ledger.close()
    store = open_ledger_objects(location, Settings.from_env())
    segments = [k for k in keys(moto_s3, location) if k.endswith(".parquet")]
    assert len(segments) == 4
    edited = store.get(segments[1])
    assert edited is not None
    store.delete(segments[0])
    store.put(segments[1], edited[:-200] + bytes(200))  # rewritten in place
    with ledger_view(None, store) as view:
        result = verify_ledger(view, KEY)
    reasons = {f.segment: f.reason for f in result.failures}
    assert reasons[segments[0]] == "missing: the chain sealed it with 25 rows"
    assert (
        reasons[segments[1]].startswith("its content differs")
        or "SHA-256 differs" in reasons[segments[1]]
    )
    chain = next(k for k in keys(moto_s3, location) if "/_chain/" in k)
    entries = store.get(chain)
    assert entries is not None
    cut = b"\n".join(entries.splitlines()[:-1]) + b"\n"  # the closing entry removed
    store.put(chain, cut)
    with ledger_view(None, store) as view:
        assert not verify_ledger(view, KEY).intact


def test_a_key_outside_the_ledger_layout_never_becomes_a_path(s3_location: str) -> None:
    store = open_ledger_objects(f"{s3_location}/ledger", Settings.from_env())
    planted = ["../../escape-1.parquet", "motor/v1/2026-11-30/../../../../escape-2.parquet"]
    for key in planted:
        store.put(key, b"x")
    assert sorted(key for key, _size in store.list()) == sorted(planted)  # stored as named
    with (
        pytest.raises(
            NotFoundError, match=r"^there is no quote ledger at s3://rk-test-\d+/team/ledger$"
        ),
        ledger_view(None, store),
    ):
        pass
    temp = Path(tempfile.gettempdir())
    assert not (temp / "escape-1.parquet").exists() and not (temp / "escape-2.parquet").exists()


# -- a rating server in team mode, and the CLI reading from S3 ---------------------------------
def test_a_server_ships_its_ledger_and_the_cli_reads_it_from_s3(
    s3_location: str, moto_s3: MotoS3, tmp_path: Path
) -> None:
    from ratekeeper.demo import train_glm
    from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio

    book = motor_portfolio(2000, seed=5)
    registry = open_registry(tmp_path / "registry", artifacts=s3_location)
    registry.register_model(train_glm(book), "motor", training_data=book, exposure="exposure")
    registry.transition_stage("motor", 1, "Production")
    registry.close()
    spool = tmp_path / "spool"
    rows = book[[*RATING_FACTORS, "exposure"]].head(40).to_dict("records")
    sent = [
        {k: (str(v) if k in ("area", "fuel", "cover") else v) for k, v in r.items()} for r in rows
    ]
    with rating_server(tmp_path / "registry", "--ledger", str(spool), workers=1) as port:
        answers = []
        for body in sent:
            status, answer = request(port, "POST", "/v1/models/motor/quote", body)
            assert status == 200, answer
            answers.append(answer)
        status, ready = request(port, "GET", "/readyz")
        assert status == 200 and ready["ledger_spool"]["full"] is False
    # Stopped: its segments sealed and shipped, its spool empty; everything is read from S3.
    assert [p for p in spool.rglob("*") if p.is_file()] == []
    cli = [sys.executable, "-m", "ratekeeper", "--registry", str(tmp_path / "registry")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args, "--ledger", str(spool)], capture_output=True, text=True)

    verified = run("ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout == "ledger intact: 1 sealed segment, 40 rows, 1 chain; seals checked\n"
    shown = run("ledger", "show", answers[3]["quote_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["prediction"] == answers[3]["prediction"]
    replayed = run("replay", answers[7]["quote_id"])
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert (
        "identical" in replayed.stdout
        and "verified: hash, rows and chain intact" in replayed.stdout
    )
    listed = run("ledger", "list", "--since", "1h")
    assert "Quotes in the last 1h: 40" in listed.stdout
    drift = subprocess.run(
        [
            *cli,
            "drift",
            "models:/motor/1",
            "--ledger",
            "--ledger-dir",
            str(spool),
            "--min-rows",
            "10",
        ],
        capture_output=True,
        text=True,
    )
    assert drift.stdout.startswith("Drift — motor v1: "), drift.stdout + drift.stderr
    assert "(40 rows, shares of exposure)" in drift.stdout  # every quote, read from S3


def test_readyz_is_degraded_and_the_metric_grows_while_the_spool_is_full(
    s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from ratekeeper.demo import train_glm
    from ratekeeper.http.app import AppConfig, create_app
    from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio

    book = motor_portfolio(1000, seed=3)
    registry = open_registry(tmp_path / "registry")
    registry.register_model(train_glm(book), "motor", training_data=book, exposure="exposure")
    registry.transition_stage("motor", 1, "Production")
    monkeypatch.setenv("RATEKEEPER_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # the store is down
    ledger = config(tmp_path / "spool", f"{s3_location}/ledger", spool_max_bytes=1024)
    body = json.loads(book[[*RATING_FACTORS, "exposure"]].head(1).to_json(orient="records"))[0]
    with TestClient(create_app(registry, AppConfig(ledger=ledger))) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, "the models to load")
        assert client.get("/readyz").json()["status"] == "ok"
        for _ in range(20):
            assert client.post("/v1/models/motor/quote", json=body).status_code == 200
        app_ledger = client.app.state.ledger  # type: ignore[attr-defined]
        wait_for(lambda: app_ledger.spool.full, "the spool to fill")
        ready = client.get("/readyz")
        metrics = client.get("/metrics").text
    assert ready.status_code == 200
    answer = ready.json()
    assert answer["status"] == "degraded"
    assert answer["ledger_spool"]["full"] is True and answer["ledger_spool"]["bytes"] >= 1024
    assert answer["ledger_spool"]["uploading"] is False  # the reason is in the log, not here
    assert "s3://" not in ready.text and "127.0.0.1:9" not in ready.text
    assert app_ledger.spool.error.startswith("cannot reach the artifact store s3://")
    assert 'ratekeeper_ledger_spool{unit="bytes"}' in metrics
    assert 'ratekeeper_ledger_uploads_total{outcome="upload_error"}' in metrics
    # Nothing was lost: every quote is in the spool, sealed, waiting for the store.
    assert read_ledger(tmp_path / "spool").num_rows == 20
    registry.close()


def test_the_drift_watcher_reads_the_quotes_shipped_to_s3(s3_location: str, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry
    from tests.http_helpers import MODEL, make_registry
    from tests.test_serve_drift import older_drivers

    from ratekeeper.engine.drift_watcher import DriftGauges, DriftWatchConfig, DriftWatcher

    registry, book = make_registry(tmp_path / "registry", n_policies=2000)
    scorer = registry.load_model(f"models:/{MODEL}/1")
    location = f"{s3_location}/ledger"
    spool = tmp_path / "spool"
    ledger = QuoteLedger(config(spool, location))
    ledger.start()
    for policy_ in older_drivers(book, 300):
        price = scorer.predict_one(policy_)
        ledger.record(
            new_quote_id(), MODEL, 1, scorer.signature, "quote", "Production", policy_, price
        )
    ledger.close()
    assert not list(spool.rglob("*.parquet"))  # shipped: the quotes are in S3 only
    store = open_ledger_objects(location, Settings.from_env())
    gauges = DriftGauges(CollectorRegistry(), multiprocess=False)
    watcher = DriftWatcher(registry, DriftWatchConfig(spool, min_quotes=100, store=store), gauges)
    assert watcher.check() == {(MODEL, 1): "alert"}  # every driver is 80 now
    assert gauges.quotes.labels(MODEL, "1")._value.get() == 300
    registry.close()
