"""A real S3-compatible server for tests: moto's, on 127.0.0.1, one per test session.

Each test gets a bucket of its own and the environment a server gets in team mode: credentials
in ``AWS_*`` (moto takes any), the endpoint in ``RATEKEEPER_S3_ENDPOINT_URL``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest

_buckets = itertools.count()
FAST_RETRIES = "2"
"""Attempts per S3 request in tests: one retry keeps an unreachable store's answer quick."""


class MotoS3:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def new_bucket(self) -> str:
        name = f"rk-test-{next(_buckets)}"
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name


def s3_environment(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    monkeypatch.setenv("RATEKEEPER_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("RATEKEEPER_S3_MAX_ATTEMPTS", FAST_RETRIES)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def moto_session() -> Iterator[MotoS3]:
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the dev extra)")
    server = MotoS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()
