"""The content-addressed, write-once artifact store."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from ratekeeper import IntegrityError
from ratekeeper.artifacts import LocalBlobStore


def test_identical_content_is_stored_once_under_its_sha256(tmp_path) -> None:
    store = LocalBlobStore(tmp_path)
    first = store.put(b"base rate 0.12")
    second = store.put(b"base rate 0.12")
    assert first == second == hashlib.sha256(b"base rate 0.12").hexdigest()
    blobs = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert blobs == [store.path(first)]
    assert store.get(first) == b"base rate 0.12"


def test_blobs_are_read_only_and_never_overwritten(tmp_path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"relativities")
    assert not os.stat(store.path(digest)).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert store.put(b"relativities") == digest
    assert store.get(digest) == b"relativities"


def test_a_corrupted_blob_is_an_integrity_error(tmp_path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"coefficients")
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"coefficientZ")
    with pytest.raises(IntegrityError, match=rf"blob sha256:{digest[:12]} is corrupted"):
        store.get(digest)


def test_a_missing_blob_is_an_integrity_error(tmp_path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"graph")
    store.path(digest).unlink()
    with pytest.raises(IntegrityError, match=rf"blob sha256:{digest[:12]} is missing"):
        store.get(digest)
