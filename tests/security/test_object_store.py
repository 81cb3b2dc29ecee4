"""The S3 artifact store and the ledger shipped to it, attacked (issue 13, items 4 and 5).

Who holds what: the server holds the S3 credentials (from its environment or its instance,
never from ratekeeper's settings or database); someone with write access to the bucket (but not
the signing key) can plant, replace or delete objects; someone with access to the server's disk
can edit the spool. What each attack gets is checked against a real S3 server (moto).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.test_ledger import SIGNATURE, policy

import ratekeeper as rk
from ratekeeper import IntegrityError, InvalidInputError, Settings
from ratekeeper.engine.ids import new_quote_id
from ratekeeper.engine.ledger import LedgerConfig, QuoteLedger
from ratekeeper.engine.ledger_store import SpoolUploader, ledger_view, open_ledger_objects
from ratekeeper.engine.ledger_verify import verify_ledger
from ratekeeper.errors import StoreUnavailableError
from ratekeeper.governance.signing import SigningKey
from registries import TEST_KEY, open_registry

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
KEY = SigningKey(bytes.fromhex(TEST_KEY))


def test_the_store_credentials_reach_neither_the_database_nor_an_error_nor_the_log(
    s3_location: str,
    tmp_path: Path,
    motor_glm: Any,
    portfolio: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    registry = open_registry(tmp_path / "registry", artifacts=s3_location)
    registry.register_model(
        motor_glm, "motor", training_data=portfolio, target="claim_count", exposure="exposure"
    )
    with registry.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")):
                assert SECRET not in repr(row) and "testing" not in repr(tuple(row)), table
        recorded = conn.execute(sa.text("SELECT artifact_root FROM registry_state")).scalar()
    assert recorded == s3_location
    registry.close()

    monkeypatch.setenv("RATEKEEPER_S3_ENDPOINT_URL", "http://user:pw@127.0.0.1:9/")
    caplog.set_level(logging.DEBUG, logger="ratekeeper")  # ours (botocore's own debug log is
    caplog.set_level(logging.INFO)  # off by default, and names the endpoint as configured)
    store = rk.Registry(tmp_path / "registry", user="a").blobs
    with pytest.raises(
        StoreUnavailableError, match=r"\(http://127.0.0.1:9\) after 2 attempts"
    ) as err:
        store.get("0" * 64)
    spool = tmp_path / "spool"
    ledger = QuoteLedger(
        LedgerConfig(
            spool,
            key=KEY,
            store=open_ledger_objects(f"{s3_location}/ledger", Settings.from_env()),
        )
    )
    ledger.start()
    ledger.record(new_quote_id(), "motor", 1, SIGNATURE, "quote", "Production", policy(1), 1.0)
    ledger.close()  # the final upload fails: logged
    assert ledger.spool is not None and ledger.spool.error is not None
    for text in (str(err.value), ledger.spool.error, caplog.text):
        assert SECRET not in text and "pw@" not in text and "user:" not in text


def test_credentials_in_the_store_uri_are_refused_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"credentials come from the environment"):
        rk.Registry.create(
            tmp_path / "registry", admin="root", artifacts=f"s3://AKIA:{SECRET}@bucket/team"
        )
    assert not (tmp_path / "registry" / "registry.db").exists()


def test_an_object_planted_at_a_digest_is_refused_at_load(
    s3_location: str, tmp_path: Path, motor_glm: Any, portfolio: Any
) -> None:
    registry = open_registry(tmp_path / "registry", artifacts=s3_location)
    version = registry.register_model(
        motor_glm, "motor", training_data=portfolio, target="claim_count", exposure="exposure"
    )
    blobs: Any = registry.blobs
    planted = blobs.objects.get(blobs.key(version.artifact_digest)).replace(b"glm", b"gbm", 1)
    blobs.objects.put(blobs.key(version.artifact_digest), planted)  # the bucket's writer
    with pytest.raises(
        IntegrityError,
        match=rf"^motor version 1: artifact blob sha256:{version.artifact_digest[:12]} is corrupt",
    ):
        registry.load_model("models:/motor/1")
    with pytest.raises(IntegrityError, match=r"is corrupted"):  # nor trusted by a second writer
        registry.register_model(
            motor_glm, "motor", training_data=portfolio, target="claim_count", exposure="exposure"
        )
    registry.close()


def test_a_spooled_segment_edited_before_upload_is_never_shipped(
    s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    good = open_ledger_objects(f"{s3_location}/ledger", Settings.from_env())
    monkeypatch.setenv("RATEKEEPER_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    down = open_ledger_objects(f"{s3_location}/ledger", Settings.from_env())
    ledger = QuoteLedger(LedgerConfig(spool, key=KEY, store=down))
    ledger.start()
    for i in range(5):
        ledger.record(new_quote_id(), "motor", 1, SIGNATURE, "quote", "Production", policy(i), i)
    ledger.close()  # the store was down: the sealed segment waits in the spool
    [segment] = spool.rglob("*.parquet")
    segment.chmod(0o600)
    segment.write_bytes(segment.read_bytes()[:-8] + bytes(8))  # edited on the server's disk

    uploader = SpoolUploader(spool, good, max_bytes=1 << 20)
    assert uploader.ship() is False
    assert uploader.state.error is not None
    assert uploader.state.error.endswith("no longer hashes to what its chain sealed")
    assert segment.exists()  # kept, for the operator to see
    assert [key for key, _size in good.list() if key.endswith(".parquet")] == []
    with ledger_view(spool, good) as view:  # the spool's copy is read, and fails verification
        result = verify_ledger(view, KEY)
    assert not result.intact
    assert "differs" in result.failures[0].reason or "rows" in result.failures[0].reason
