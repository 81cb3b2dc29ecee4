"""The artifact store's contract: one suite, run against the local folder and a real S3 server.

The S3 backend is moto's server on 127.0.0.1 (the real S3 HTTP protocol, conditional writes
included); each test has a bucket of its own.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import ratekeeper as rk
from ratekeeper import IntegrityError, InvalidInputError, Settings
from ratekeeper.artifacts import BlobStore, LocalBlobStore, open_blob_store
from ratekeeper.artifacts.s3 import S3BlobStore, parse_s3_uri
from ratekeeper.errors import StoreAccessDeniedError, StoreUnavailableError
from registries import open_registry
from s3_server import MotoS3


@dataclass
class Backend:
    """A store, and raw access to what it holds (to tamper with it as an attacker could)."""

    store: BlobStore
    keys: Callable[[], list[str]]
    overwrite: Callable[[str, bytes], None]
    remove: Callable[[str], None]


def local_backend(root: Path) -> Backend:
    store = LocalBlobStore(root)

    def overwrite(digest: str, data: bytes) -> None:
        path = store.path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.chmod(0o600)
        path.write_bytes(data)

    return Backend(
        store,
        lambda: sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()),
        overwrite,
        lambda digest: store.path(digest).unlink(),
    )


def s3_backend(location: str, server: MotoS3) -> Backend:
    store = open_blob_store(location, Settings.from_env())
    assert isinstance(store, S3BlobStore)
    bucket, prefix = parse_s3_uri(location)
    client: Any = server.client()

    def keys() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(item["Key"].removeprefix(prefix) for item in listed)

    return Backend(
        store,
        keys,
        lambda digest, data: client.put_object(
            Bucket=bucket, Key=prefix + store.key(digest), Body=data
        ),
        lambda digest: client.delete_object(Bucket=bucket, Key=prefix + store.key(digest)),
    )


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "s3":
        return s3_backend(
            request.getfixturevalue("s3_location"), request.getfixturevalue("moto_s3")
        )
    return local_backend(tmp_path / "artifacts")


def test_identical_content_is_stored_once_under_its_sha256(backend: Backend) -> None:
    first = backend.store.put(b"base rate 0.12")
    second = backend.store.put(b"base rate 0.12")
    digest = hashlib.sha256(b"base rate 0.12").hexdigest()
    assert first == second == digest
    assert backend.keys() == [f"sha256/{digest[:2]}/{digest}"]
    assert backend.store.get(first) == b"base rate 0.12"
    assert backend.store.exists(first)
    assert not backend.store.exists("0" * 64)


def test_a_stored_blob_is_never_overwritten_and_a_planted_one_is_refused(backend: Backend) -> None:
    digest = backend.store.put(b"relativities")
    assert backend.store.put(b"relativities") == digest
    assert backend.store.get(digest) == b"relativities"
    backend.overwrite(digest, b"relativitieZ")  # planted at the key, under the store's back
    with pytest.raises(IntegrityError, match=rf"blob sha256:{digest[:12]} is corrupted"):
        backend.store.put(b"relativities")  # a second writer does not take it on trust


def test_a_corrupted_blob_is_an_integrity_error(backend: Backend) -> None:
    digest = backend.store.put(b"coefficients")
    backend.overwrite(digest, b"coefficientZ")
    actual = hashlib.sha256(b"coefficientZ").hexdigest()
    with pytest.raises(
        IntegrityError,
        match=rf"blob sha256:{digest[:12]} is corrupted \(content hashes to {actual[:12]}\)",
    ):
        backend.store.get(digest)


def test_a_missing_blob_is_an_integrity_error(backend: Backend) -> None:
    digest = backend.store.put(b"graph")
    backend.remove(digest)
    with pytest.raises(IntegrityError, match=rf"blob sha256:{digest[:12]} is missing"):
        backend.store.get(digest)
    assert not backend.store.exists(digest)


@pytest.mark.parametrize("reference", ["../../etc/passwd", "A" * 64, "abc", ""])
def test_only_a_digest_names_a_blob(backend: Backend, reference: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^an artifact reference must be a SHA-256"):
        backend.store.get(reference)
    assert backend.keys() == []


def test_local_blobs_are_read_only(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"relativities")
    assert not os.stat(store.path(digest)).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


# -- S3 only: the store's location, and its failures as typed errors --------------------------
@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://key:secret@bucket/x", r"^an s3:// store URI names a bucket and a prefix only"),
        ("s3://Bad_Bucket/x", r"is not an S3 bucket name"),
        ("s3://bucket/../x", r"^an S3 prefix is made of letters"),
        ("s3://bucket/x?versionId=1", r"^an s3:// store URI names a bucket and a prefix only"),
        ("gs://bucket/x", r"^an artifact store is a local folder or s3://bucket/prefix"),
    ],
)
def test_a_bad_store_uri_is_refused(uri: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        open_blob_store(uri, Settings(home=Path(".")))


def test_an_unreachable_store_is_a_typed_error_after_the_retries(
    s3_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATEKEEPER_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens
    store = open_blob_store(s3_location, Settings.from_env())
    with pytest.raises(
        StoreUnavailableError,
        match=r"^cannot reach the artifact store s3://rk-test-\d+/team \(http://127.0.0.1:9\) "
        r"after 2 attempts \(EndpointConnectionError\)",
    ):
        store.put(b"premium")


def test_a_missing_bucket_and_missing_credentials_are_access_errors(
    s3_location: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nowhere = open_blob_store("s3://rk-no-such-bucket/team", Settings.from_env())
    with pytest.raises(
        StoreAccessDeniedError, match=r"rk-no-such-bucket/team .*the bucket does not exist"
    ):
        nowhere.get("0" * 64)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    anonymous = open_blob_store(s3_location, Settings.from_env())
    with pytest.raises(
        StoreAccessDeniedError, match=r": no S3 credentials \(set AWS_ACCESS_KEY_ID"
    ):
        anonymous.put(b"premium")


# -- a registry on S3 artifacts ---------------------------------------------------------------
def test_a_registry_keeps_its_artifacts_on_s3_and_records_the_store(
    s3_location: str, tmp_path: Path, motor_glm: Any, portfolio: Any, moto_s3: MotoS3
) -> None:
    registry = open_registry(tmp_path / "registry", artifacts=s3_location)
    version = registry.register_model(
        motor_glm, "motor", training_data=portfolio, target="claim_count", exposure="exposure"
    )
    assert registry.blobs.location == s3_location
    bucket, prefix = parse_s3_uri(s3_location)
    listed = moto_s3.client().list_objects_v2(Bucket=bucket)["Contents"]  # type: ignore[attr-defined]
    keys = {item["Key"] for item in listed}
    assert f"{prefix}sha256/{version.artifact_digest[:2]}/{version.artifact_digest}" in keys
    assert not (tmp_path / "registry" / "artifacts").exists()
    registry.close()

    # Reopened without saying where: the store it recorded (the URI only, never credentials).
    reopened = rk.Registry(tmp_path / "registry", user="alice")
    assert reopened.blobs.location == s3_location
    expected = reopened.load_model("models:/motor/1").predict(portfolio.head(3))
    assert len(expected) == 3
    reopened.close()

    # Opened with another store that lacks its artifacts: one clear line, not a later failure.
    with pytest.raises(
        InvalidInputError,
        match=rf"^this registry keeps its artifacts in {s3_location}, and "
        rf"{tmp_path / 'elsewhere'} \(given by --artifacts or RATEKEEPER_ARTIFACTS\) does not "
        r"hold them \(models:/motor/1 is missing\)",
    ):
        rk.Registry(tmp_path / "registry", artifacts=tmp_path / "elsewhere")
    monkeypatch_free = rk.Registry(tmp_path / "registry", artifacts=s3_location)
    assert monkeypatch_free.blobs.location == s3_location
    monkeypatch_free.close()


def test_the_command_line_takes_an_s3_store_and_fails_in_one_line(
    s3_location: str,
    tmp_path: Path,
    motor_glm: Any,
    portfolio: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ratekeeper.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return int(exit_info.value.code or 0), out, err

    home = str(tmp_path / "team")
    monkeypatch.delenv("RATEKEEPER_TOKEN", raising=False)
    code, out, _err = run(
        "--registry", home, "--artifacts", s3_location, "init", "--admin", "root", "--policy",
        "open",
    )  # fmt: skip
    assert code == 0, _err
    registry = rk.Registry(home, token=out.strip())
    assert registry.blobs.location == s3_location  # recorded: later commands need no --artifacts
    registry.register_model(
        motor_glm, "motor", training_data=portfolio, target="claim_count", exposure="exposure"
    )
    registry.close()
    code, out, err = run(
        "--registry", home, "export-tables", "models:/motor/1", "-o", str(tmp_path / "t")
    )
    assert code == 0, err
    assert (tmp_path / "t" / "area.csv").exists()

    code, _out, err = run(
        "--registry", home, "--artifacts", str(tmp_path / "none"), "models", "list"
    )
    assert code == 2
    assert err.startswith(f"error: this registry keeps its artifacts in {s3_location}, and ")
    assert err.count("\n") == 1

    monkeypatch.setenv("RATEKEEPER_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # the store is down
    code, _out, err = run(
        "--registry", home, "export-tables", "models:/motor/1", "-o", str(tmp_path / "u")
    )
    assert code == 1
    assert err == (
        f"error: cannot reach the artifact store {s3_location} (http://127.0.0.1:9) after 2 "
        "attempts (EndpointConnectionError)\n"
    )
    assert err.count("\n") == 1 and "Traceback" not in err
