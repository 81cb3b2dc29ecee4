"""Shared fixtures: a real PostgreSQL server, a registry per backend, a real fitted GLM.

Tests that need PostgreSQL skip when the server binaries are absent, unless
``RATEKEEPER_REQUIRE_POSTGRES=1`` (as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ratekeeper
from pg import PostgresServer, unavailable_reason
from ratekeeper.synthetic import (
    CATEGORICAL_FACTORS,
    NUMERIC_FACTORS,
    RATING_FACTORS,
    motor_portfolio,
)
from registries import TEST_KEY, open_registry
from s3_server import MotoS3, moto_session, s3_environment

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("RATEKEEPER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"RATEKEEPER_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test.

    A registry on a database server needs a signing key outside the database: the test key.
    """
    monkeypatch.setenv("RATEKEEPER_AUDIT_KEY", TEST_KEY)
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    # A connection the test left open is reported now, against this test, not by a later one.
    gc.collect()
    postgres_server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def registry_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a new registry goes, per backend: a folder (SQLite) or an empty PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return tmp_path / "registry"


@pytest.fixture
def registry(registry_uri: str | Path, tmp_path: Path) -> Iterator[ratekeeper.Registry]:
    """An empty registry acting as ``alice``, once per backend (parametrized by registry_uri).

    Its policy is ``open`` (direct stage moves allowed): the store's contract, without the
    governance workflow on top.
    """
    opened = open_registry(registry_uri, user="alice", artifacts=tmp_path / "artifacts")
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """A real S3-compatible server (moto) on 127.0.0.1 for the session."""
    yield from moto_session()


@pytest.fixture
def s3_location(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<a new bucket>/team``, with the S3 environment of a team-mode server set."""
    s3_environment(monkeypatch, moto_s3.endpoint)
    return f"s3://{moto_s3.new_bucket()}/team"


@pytest.fixture(scope="session")
def portfolio() -> Any:
    """3,000 synthetic motor policies (shared by the session: do not modify it)."""
    return motor_portfolio(3000)


@pytest.fixture(scope="session")
def motor_glm(portfolio: Any) -> Any:
    """A real fitted claim-frequency GLM: one-hot categorical factors + numerics, Poisson."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import PoissonRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    prepare = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(drop="first"), list(CATEGORICAL_FACTORS)),
            ("numeric", "passthrough", list(NUMERIC_FACTORS)),
        ]
    )
    model = Pipeline(
        [
            ("prepare", prepare),
            ("glm", PoissonRegressor(alpha=1e-6, solver="newton-cholesky")),
        ]
    )
    frequency = portfolio["claim_count"] / portfolio["exposure"]
    model.fit(portfolio[list(RATING_FACTORS)], frequency, glm__sample_weight=portfolio["exposure"])
    return model


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of one test module's own, for tests that stop and restart it."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("RATEKEEPER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"RATEKEEPER_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
