"""The quote ledger: buffered, append-only, crash-tolerant segments, found by quote id, replayed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from tests.http_helpers import MODEL, bearer_tokens, make_registry, policies
from tests.server_process import rating_server, request

from ratekeeper.engine.ids import new_quote_id
from ratekeeper.engine.ledger import (
    LedgerConfig,
    QuoteLedger,
    close_orphaned_segments,
    find_quote,
    parse_since,
    quote_time,
    read_ledger,
    recording,
)
from ratekeeper.errors import InvalidInputError, NotFoundError
from ratekeeper.packaging.signature import Field, Signature

SIGNATURE = Signature(
    (
        Field("area", "categorical", levels=("A", "B")),
        Field("driver_age", "numeric", minimum=18, maximum=90),
        Field("exposure", "numeric", role="exposure"),
    )
)
OTHER = Signature((Field("area", "categorical", levels=("A", "B")), Field("power_kw", "numeric")))


def policy(i: int) -> dict[str, object]:
    return {"area": "AB"[i % 2], "driver_age": 18 + i % 70, "exposure": 0.5 + (i % 2) / 2}


def test_quotes_are_written_within_the_flush_interval_and_read_back(tmp_path) -> None:
    ids = [new_quote_id() for _ in range(300)]
    with recording(LedgerConfig(tmp_path, flush_interval=0.05)) as ledger:
        for i, quote_id in enumerate(ids):
            ledger.record(quote_id, "m", 1, SIGNATURE, "quote", "Production", policy(i), i / 7)
        deadline = time.monotonic() + 10
        while ledger.written < len(ids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ledger.written == 300  # by the background thread, before close()
        live = read_ledger(tmp_path, model="m")  # the open (stream) segment is readable
        assert live.num_rows == 300
    table = read_ledger(tmp_path, model="m")
    assert table.column("quote_id").to_pylist() == ids  # time-ordered ids, in order
    assert table.column("prediction").to_pylist() == [i / 7 for i in range(300)]
    assert table.column("endpoint").unique().to_pylist() == ["quote"]
    inputs = table.column("inputs").to_pylist()
    assert inputs[3] == {"area": "B", "driver_age": 21.0, "exposure": 1.0}
    # Closed on close(): only Parquet left, in <model>/v<version>/<day>/, and the writer's chain.
    files = sorted(p.relative_to(tmp_path).parts[:3] for p in tmp_path.rglob("*.*"))
    today = datetime.now(UTC).date().isoformat()
    assert files == [("m", "_chain", files[0][2]), ("m", "v1", today)]
    assert sorted(p.suffix for p in tmp_path.rglob("*.*")) == [".jsonl", ".parquet"]


def test_versions_filters_and_find_quote(tmp_path) -> None:
    with recording(LedgerConfig(tmp_path)) as ledger:
        first = new_quote_id()
        ledger.record(first, "m", 1, SIGNATURE, "quote", "Production", policy(1), 1.5)
        second = new_quote_id()
        ledger.record(
            second, "m", 2, OTHER, "score", "challenger", {"area": "A", "power_kw": 90}, 2
        )
        ledger.record(new_quote_id(), "n", 1, OTHER, "quote", "Production", {"area": "B"}, 3.0)
    assert read_ledger(tmp_path, model="m", version=2).column("quote_id").to_pylist() == [second]
    both = read_ledger(tmp_path, model="m")
    assert both.num_rows == 2
    assert set(both.schema.field("inputs").type.names) == {
        "area",
        "driver_age",
        "exposure",
        "power_kw",
    }
    assert read_ledger(tmp_path).num_rows == 3
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert read_ledger(tmp_path, since=later).num_rows == 0
    found = find_quote(tmp_path, second)
    assert found["model"] == "m" and found["version"] == 2 and found["route"] == "challenger"
    assert found["inputs"] == {"area": "A", "power_kw": 90.0}
    assert found["quoted_at"] >= quote_time(second) - timedelta(seconds=1)
    with pytest.raises(NotFoundError, match="not in the ledger"):
        find_quote(tmp_path, new_quote_id())
    with pytest.raises(InvalidInputError, match="not a quote id"):
        find_quote(tmp_path, "not-a-quote")


def test_rows_a_write_refuses_stay_queued_in_order_and_the_overflow_is_counted(tmp_path) -> None:
    events: list[tuple[str, int]] = []
    ledger = QuoteLedger(
        LedgerConfig(tmp_path, max_queued=5, fsync=False), lambda e, n: events.append((e, n))
    )
    (tmp_path / "m").write_text("a file where the model's folder should go")
    ids = [new_quote_id() for _ in range(7)]
    for i, quote_id in enumerate(ids[:3]):
        ledger.record(quote_id, "m", 1, SIGNATURE, "quote", "Production", policy(i), float(i))
    ledger.record(ids[3], "n", 1, OTHER, "quote", "Production", {"area": "A"}, 3.0)
    with pytest.raises(OSError):
        ledger.flush()  # m's write fails first: its three rows and n's are back in the queue
    for i, quote_id in enumerate(ids[4:], start=4):
        ledger.record(quote_id, "m", 1, SIGNATURE, "quote", "Production", policy(i), float(i))
    assert (ledger.recorded, ledger.dropped) == (5, 2)  # 5 queued at most: the last 2 dropped
    assert events.count(("dropped", 1)) == 2
    (tmp_path / "m").unlink()
    ledger.close()
    written = read_ledger(tmp_path, model="m")
    assert written.column("quote_id").to_pylist() == ids[:3] + ids[4:5]  # in order, none twice
    assert written.column("prediction").to_pylist() == [0.0, 1.0, 2.0, 4.0]
    assert read_ledger(tmp_path, model="n").column("quote_id").to_pylist() == [ids[3]]


def test_segments_rotate_into_parquet_that_duckdb_reads(tmp_path) -> None:
    config = LedgerConfig(tmp_path, flush_interval=0.02, segment_rows=50)
    with recording(config) as ledger:
        for _batch in range(4):
            for i in range(60):
                ledger.record(
                    new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(i), i
                )
            ledger.flush()
            time.sleep(0.1)  # the thread rotates the segment past 50 rows
    parquet = list(tmp_path.rglob("*.parquet"))
    assert len(parquet) >= 3
    ((count, mean_age),) = duckdb.sql(
        f"SELECT count(*), avg(inputs.driver_age) FROM read_parquet('{tmp_path}/**/*.parquet')"
    ).fetchall()
    assert count == 240
    assert mean_age == pytest.approx(sum(18 + i % 70 for i in range(60)) / 60)


CRASHING_WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from ratekeeper.engine.ids import new_quote_id
    from ratekeeper.engine.ledger import LedgerConfig, QuoteLedger
    from tests.test_ledger import SIGNATURE, policy

    ledger = QuoteLedger(LedgerConfig(Path(sys.argv[1]), flush_interval=0.05))
    ledger.start()
    for i in range(100):
        ledger.record(new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(i), i)
    while ledger.written < 100:
        time.sleep(0.01)
    for i in range(100, 150):  # queued, never flushed: the crash loses these (< one interval)
        ledger.record(new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(i), i)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_crash_loses_only_the_unflushed_interval_and_the_next_ledger_seals_it(tmp_path) -> None:
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(tmp_path)],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    left_open = list(tmp_path.rglob("*.arrows"))
    assert len(left_open) == 1
    assert read_ledger(tmp_path).column("prediction").to_pylist() == list(range(100))
    # A later ledger on this host closes what the dead process left open, as Parquet.
    assert close_orphaned_segments(tmp_path) == 1
    assert not list(tmp_path.rglob("*.arrows"))
    assert read_ledger(tmp_path).num_rows == 100


def test_a_stream_cut_mid_batch_keeps_its_complete_batches(tmp_path) -> None:
    ledger = QuoteLedger(LedgerConfig(tmp_path, fsync=False))
    ledger.start()
    for i in range(10):
        ledger.record(new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(i), i)
    ledger.flush()
    for i in range(10, 20):
        ledger.record(new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(i), i)
    ledger.flush()
    (segment,) = tmp_path.rglob("*.arrows")
    size = segment.stat().st_size
    with open(segment, "r+b") as handle:
        handle.truncate(size - 40)  # as if the machine died while writing the second batch
    assert read_ledger(tmp_path).column("prediction").to_pylist() == list(range(10))
    ledger._segments.clear()  # drop the handle without sealing: the file is "left open"
    for chain in ledger._chains.values():  # and its chain, without its closing entry
        chain.handle.close()
    ledger._stop.set()


def test_parse_since() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(InvalidInputError, match="duration"):
        parse_since("yesterday", now)


def test_the_rating_server_records_every_price_and_replay_reproduces_it(tmp_path) -> None:
    registry, book = make_registry(tmp_path / "registry")
    admin = {"authorization": bearer_tokens(registry)["admin"]}
    registry.close()
    ledger = tmp_path / "ledger"
    sent = policies(book, 12)
    with rating_server(
        tmp_path / "registry", "--ledger", str(ledger), "--invocations-model", MODEL
    ) as port:
        quotes = []
        for body in sent[:8]:
            status, answer = request(port, "POST", f"/v1/models/{MODEL}/quote", body)
            assert status == 200
            quotes.append(answer)
        status, pinned = request(
            port, "POST", f"/v1/models/{MODEL}/quote?alias=challenger", sent[0], headers=admin
        )
        assert status == 200 and pinned["version"] == 2
        status, by_number = request(
            port, "POST", f"/v1/models/{MODEL}/quote?version=3", sent[1], headers=admin
        )
        assert status == 200 and by_number["served_by"] == "version 3"
        status, scored = request(
            port, "POST", f"/v1/models/{MODEL}/score", {"policies": [sent[8], {"area": "Z"}]}
        )
        assert status == 200
        status, invoked = request(port, "POST", "/invocations", {"dataframe_records": sent[9:12]})
        assert status == 200
        status, _ = request(port, "POST", f"/v1/models/{MODEL}/quote", {"area": "nowhere"})
        assert status == 422
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # written within the flush interval (1 s)
            if os.path.isdir(ledger) and read_ledger(ledger).num_rows == 14:
                break
            time.sleep(0.1)
        priced = 'ratekeeper_policies_priced_total{model="motor_frequency",version="1"} 13.0'
        while time.monotonic() < deadline:  # each worker folds its counts every 0.25 s
            status, metrics = request(port, "GET", "/metrics")
            if priced in metrics:
                break
            time.sleep(0.1)
    table = read_ledger(ledger)
    assert table.num_rows == 8 + 2 + 1 + 3  # the rejected policies were not priced: no record
    assert sorted(table.column("endpoint").to_pylist()) == ["invocations"] * 3 + ["quote"] * 10 + [
        "score"
    ]
    by_id = {r["quote_id"]: r for r in table.to_pylist()}
    for body, answer in zip(sent, quotes, strict=False):
        record = by_id[answer["quote_id"]]
        assert record["prediction"] == answer["prediction"]
        assert record["version"] == 1 and record["route"] == "Production"
        assert {k: record["inputs"][k] for k in body} == {
            k: (float(v) if isinstance(v, int | float) else v) for k, v in body.items()
        }
    assert by_id[pinned["quote_id"]]["route"] == "challenger"
    assert by_id[by_number["quote_id"]]["route"] == "version 3"  # the answer's served_by
    assert (
        by_id[scored["results"][0]["quote_id"]]["prediction"] == scored["results"][0]["prediction"]
    )
    invocations = [r for r in table.to_pylist() if r["endpoint"] == "invocations"]
    assert [r["prediction"] for r in invocations] == invoked["predictions"]
    assert not list(ledger.rglob("*.arrows"))  # the server sealed its segments when it stopped

    cli = [sys.executable, "-m", "ratekeeper", "--registry", str(tmp_path / "registry")]
    shown = subprocess.run(
        [*cli, "ledger", "show", quotes[2]["quote_id"], "--ledger", str(ledger), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(shown.stdout)
    assert record["prediction"] == quotes[2]["prediction"]
    assert record["approval"]["moved by"] == "modeller"
    for quote in (quotes[5], pinned):
        replayed = subprocess.run(
            [*cli, "replay", quote["quote_id"], "--ledger", str(ledger)],
            capture_output=True,
            text=True,
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "identical" in replayed.stdout
        assert repr(quote["prediction"]) in replayed.stdout
    verified = subprocess.run(  # the server sealed its chain with the registry's key
        [*cli, "ledger", "verify", "--ledger", str(ledger)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.endswith("14 rows, 2 chains; seals checked\n")  # one per worker
    missing = subprocess.run(
        [*cli, "replay", new_quote_id(), "--ledger", str(ledger)], capture_output=True, text=True
    )
    assert missing.returncode == 3 and "not in the ledger" in missing.stderr
    assert missing.stderr.count("\n") == 1
    assert 'ratekeeper_ledger_rows_total{outcome="written"}' in metrics
    # every priced policy of version 1: 8 quotes, 2 in /score, 3 through /invocations
    assert priced in metrics


def test_a_replay_that_differs_exits_1(tmp_path) -> None:
    registry, book = make_registry(tmp_path / "registry")
    scorer = registry.load_model(f"models:/{MODEL}/1")
    body = policies(book, 1)[0]
    quote_id = new_quote_id()
    ledger = tmp_path / "ledger"
    with recording(LedgerConfig(ledger, key=registry.signing_key)) as writer:
        price = scorer.predict_one(body)
        writer.record(
            quote_id, MODEL, 1, scorer.signature, "quote", "Production", body, price * 1.01
        )
    registry.close()
    cli = [sys.executable, "-m", "ratekeeper", "--registry", str(tmp_path / "registry")]
    replayed = subprocess.run(
        [*cli, "replay", quote_id, "--ledger", str(ledger)], capture_output=True, text=True
    )
    assert replayed.returncode == 1
    assert "DIFFERS" in replayed.stdout


def test_ledger_schema_is_typed_by_the_signature(tmp_path) -> None:
    with recording(LedgerConfig(tmp_path)) as ledger:
        ledger.record(new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(0), 1.0)
    schema = read_ledger(tmp_path).schema
    assert schema.field("quoted_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("inputs").type == pa.struct(
        [("area", pa.string()), ("driver_age", pa.float64()), ("exposure", pa.float64())]
    )
