"""The rating server's side doors, each tried as an attacker would; each test fails if it reopens.

Issue 10, "What breaks" 3, 4 and 6: load failures of any exception type are contained (the
server keeps serving and following the registry, never a crash loop); anonymous clients price
only what customers are priced by; pinned loads cannot stall the Production quote path; the
registry views need a token; ids beyond 2^63 are 404; an unexpected error is the one JSON body.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.http_helpers import MODEL, bearer_tokens, glm_and_gbm, make_registry, policies
from tests.server_process import rating_server, request

import ratekeeper as rk
from ratekeeper.artifacts import LocalBlobStore
from ratekeeper.demo import train_glm
from ratekeeper.engine.deployments import Deployments
from ratekeeper.http.app import AppConfig, create_app

QUOTE = f"/v1/models/{MODEL}/quote"


def register_unloadable(registry: rk.Registry, book) -> int:
    """A new GBM version whose ONNX graph blob is deleted after registration (a disk lost it):
    loading it fails. Package validation refuses anything stranger at registration."""
    from ratekeeper.demo import train_gbm

    version = registry.register_model(
        train_gbm(book, n_trees=7), MODEL, training_data=book, exposure="exposure"
    )
    manifest = registry.load_package(version).manifest
    registry.blobs.path(manifest["files"]["model.onnx"]).unlink()
    return version.version


class FailingDisk(LocalBlobStore):
    """A disk that answers EIO when one blob is read: the one fault that still reaches the
    loader as a raw exception (an OSError from read(), past every typed check)."""

    def __init__(self, root: Path, failing: str) -> None:
        super().__init__(root)
        self.failing = failing

    def _read(self, path: Path, digest: str) -> bytes:
        if digest == self.failing:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return super()._read(path, digest)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """v1 Production (GLM), v2 GBM behind `champion` (protected) and `challenger`, v3 a GLM
    nobody approved, v4 a GLM in Staging; tokens of an admin, a viewer and a modeller."""
    registry, book = make_registry(tmp_path_factory.mktemp("serving"), n_policies=1500)
    registry.set_alias(MODEL, "champion", 2)
    registry.register_model(
        train_glm(book.head(1200)), MODEL, training_data=book.head(1200), exposure="exposure"
    )
    registry.transition_stage(MODEL, 4, "Staging")
    assert "champion" in registry.protected_aliases()
    tokens = {role: {"authorization": value} for role, value in bearer_tokens(registry).items()}
    return registry, book, tokens


def client_for(registry: rk.Registry, **config: int) -> Iterator[TestClient]:
    app = create_app(registry, AppConfig(**config))
    assert app.state.load_models()
    with TestClient(app) as client:
        yield client


@pytest.fixture()
def client(world) -> Iterator[TestClient]:
    yield from client_for(world[0])


@pytest.fixture()
def policy(world) -> dict:
    return policies(world[1], 1)[0]


# -- no side doors around approval -----------------------------------------------------------
def test_an_unapproved_version_needs_a_token_whose_role_may_test(client, world, policy) -> None:
    _, _, tokens = world
    anonymous = client.post(f"{QUOTE}?version=3", json=policy)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    forged = client.post(f"{QUOTE}?version=3", json=policy, headers={"authorization": "Bearer x"})
    assert forged.status_code == 401
    viewer = client.post(f"{QUOTE}?version=3", json=policy, headers=tokens["viewer"])
    assert viewer.status_code == 403
    assert viewer.json()["error"] == {
        "code": "permission_denied",
        "message": "vera (viewer) may not price a version that is not approved (not Production, "
        "Staging or a protected alias): that needs the admin or approver or deployer or "
        "modeller role",
    }
    modeller = client.post(f"{QUOTE}?version=3", json=policy, headers=tokens["modeller"])
    assert modeller.status_code == 200
    assert (modeller.json()["version"], modeller.json()["served_by"]) == (3, "version 3")
    # The same holds on /score.
    url = f"/v1/models/{MODEL}/score?version=3"
    assert client.post(url, json=[policy]).status_code == 401
    assert client.post(url, json=[policy], headers=tokens["modeller"]).json()["version"] == 3


def test_anyone_prices_production_staging_and_protected_aliases_only(client, policy) -> None:
    for pin, version, served_by in [
        ("version=1", 1, "version 1"),  # Production
        ("version=4", 4, "version 4"),  # Staging: approved for it by the gates
        ("alias=champion", 2, "champion"),  # protected: moves only through an approved request
        ("version=2", 2, "version 2"),  # the champion's version
    ]:
        response = client.post(f"{QUOTE}?{pin}", json=policy)
        assert response.status_code == 200, (pin, response.text)
        assert (response.json()["version"], response.json()["served_by"]) == (version, served_by)
    # The same version behind an alias that is not protected: anyone may move it, so not anyone
    # may price through it.
    assert client.post(f"{QUOTE}?alias=challenger", json=policy).status_code == 401
    assert client.post(f"{QUOTE}?alias=ghost", json=policy).status_code == 401


def test_pinned_loads_are_bounded_and_rate_limited_and_never_stop_production(world, policy) -> None:
    registry, _, tokens = world
    for client in client_for(registry, pinned_cache=1, pinned_loads_per_minute=3):
        pinned = client.app.state.pinned
        # An anonymous client cycling ?version= over unapproved versions loads nothing.
        for _ in range(20):
            assert client.post(f"{QUOTE}?version=3", json=policy).status_code == 401
        assert pinned.loads == 0 and pinned.cached() == []
        # A modeller cycling two versions through a cache of one: every quote is a cold load.
        # Loads of v3 count against the token's user, of v4 (Staging, anyone may) against the
        # client's address; three a minute each, then 429. Production answers throughout.
        statuses = []
        for version in (3, 4, 3, 4, 3, 4, 3):
            response = client.post(
                f"{QUOTE}?version={version}", json=policy, headers=tokens["modeller"]
            )
            statuses.append(response.status_code)
            production = client.post(QUOTE, json=policy)
            assert (production.status_code, production.json()["version"]) == (200, 1)
        assert statuses == [200] * 6 + [429]
        assert pinned.loads == 6 and pinned.cached() == [(MODEL, 4)]
        assert response.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # A cached version costs no load, so no share of the limit.
        again = client.post(f"{QUOTE}?version=4", json=policy)
        assert again.status_code == 200 and pinned.loads == 6


# -- the registry views ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/v1/models", f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/1"]
)
def test_registry_views_need_a_token_that_may_read(client, world, path) -> None:
    _, _, tokens = world
    anonymous = client.get(path)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthenticated")
    assert "created_by" not in anonymous.text and "lineage" not in anonymous.text
    assert client.get(path, headers={"authorization": "Bearer rk_forged"}).status_code == 401
    viewer = client.get(path, headers=tokens["viewer"])
    assert viewer.status_code == 200 and MODEL in viewer.text


def test_operations_and_the_openapi_document_stay_anonymous(client) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


# -- ids beyond 2^63 -------------------------------------------------------------------------
@pytest.mark.parametrize("number", [2**63, 2**64 + 1, 10**40])
def test_ids_beyond_what_the_registry_stores_are_404(client, world, policy, number) -> None:
    _, _, tokens = world
    for response in (
        client.get(f"/v1/models/{MODEL}/versions/{number}", headers=tokens["viewer"]),
        client.post(f"{QUOTE}?version={number}", json=policy),
        client.post(f"/v1/models/{MODEL}/score?version={number}", json=[policy]),
    ):
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


# -- the catch-all ---------------------------------------------------------------------------
def test_an_unexpected_error_is_one_json_body_with_a_correlation_id(tmp_path, caplog) -> None:
    registry, admin_token = rk.Registry.create(tmp_path, admin="root", policy="open")
    token = {"authorization": f"Bearer {admin_token}"}
    client = TestClient(create_app(registry))
    # A database that lost a table under the server (a botched migration, a hand edit): the
    # registry raises sqlite3's OperationalError, which no route expects.
    with sqlite3.connect(tmp_path / "registry.db") as db:
        db.execute("ALTER TABLE models RENAME TO models_elsewhere")
    with caplog.at_level(logging.ERROR, logger="ratekeeper.http"):
        response = client.get("/v1/models", headers=token)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    correlation_id = response.headers["x-correlation-id"]
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "an internal error occurred; the server's log has the details under "
            f"correlation id {correlation_id}",
            "correlation_id": correlation_id,
        }
    }
    assert "Traceback" not in response.text and "models_elsewhere" not in response.text
    logged = [r for r in caplog.records if correlation_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # the traceback, server-side
    assert "no such table" in str(logged[0].exc_info[1])


# -- containment of load failures -----------------------------------------------------------
@pytest.fixture()
def broken_world(tmp_path: Path):
    """v1 GLM in Production, v2 a GBM, v3 a GBM whose graph was lost; a second model, fine."""
    registry, book = glm_and_gbm(tmp_path, n_policies=800)
    broken = register_unloadable(registry, book)
    registry.register_model(
        train_glm(book), "home_frequency", training_data=book, exposure="exposure"
    )
    registry.transition_stage("home_frequency", 1, "Production")
    return registry, broken, policies(book, 1)[0], tmp_path


def test_a_raw_load_error_is_contained_and_the_watcher_keeps_following(broken_world) -> None:
    registry, _broken, _policy, _folder = broken_world
    registry.transition_stage(MODEL, 1, "Production")
    deployments = Deployments(registry, [MODEL])
    deployments.refresh(force=True)
    # Version 2 sits on a disk that fails under a read: OSError, not a ratekeeper error.
    digest = registry.load_package(registry.get_version(MODEL, 2)).manifest["files"]["model.onnx"]
    registry.blobs = FailingDisk(registry.blobs.root, digest)
    registry.transition_stage(MODEL, 2, "Production")
    deployments.refresh()
    # The old one serves, in Production and as champion (which the registry moved with it).
    assert deployments.served_versions()[MODEL] == {"Production": 1, "champion": 1}
    failures = deployments.status()["load_failures"]
    assert [(f["version"], f["slot"]) for f in failures] == [(2, "Production"), (2, "champion")]
    assert all(f["error"].startswith("OSError") for f in failures)
    # The watcher still follows the registry: a good version is picked up.
    registry.blobs = LocalBlobStore(registry.blobs.root)
    registry.set_alias(MODEL, "challenger", 1)  # any move bumps the generation
    deployments.refresh()
    assert deployments.served_versions()[MODEL] == {
        "Production": 2,
        "champion": 2,
        "challenger": 1,
    }
    assert deployments.status()["load_failures"] == []


def test_a_load_failure_in_a_running_server_is_contained(broken_world) -> None:
    registry, broken, policy, folder = broken_world
    registry.transition_stage(MODEL, 1, "Production")
    with rating_server(folder, "--poll-interval", "0.1", "--no-ledger") as port:
        registry.transition_stage(MODEL, broken, "Production")
        registry.set_alias(MODEL, "champion", broken)
        time.sleep(1.0)
        for _ in range(6):  # both workers keep the old version
            status, body = request(port, "POST", QUOTE, policy)
            assert (status, body.get("version")) == (200, 1), body
        status, ready = request(port, "GET", "/readyz")
        assert status == 200 and ready["status"] == "degraded"
        failures = {(f["slot"], f["version"]) for f in ready["load_failures"]}
        assert failures == {("Production", broken), ("champion", broken)}
        assert all("is missing" in f["error"] for f in ready["load_failures"])
        # champion followed Production to the broken version: its slot keeps the old one
        status, body = request(port, "POST", f"{QUOTE}?alias=champion", policy)
        assert (status, body["version"]) == (200, 1), body
        # The watcher still follows the registry: a good version is picked up.
        registry.transition_stage(MODEL, 2, "Production")
        registry.delete_alias(MODEL, "champion")
        time.sleep(1.0)
        for _ in range(6):
            status, body = request(port, "POST", QUOTE, policy)
            assert (status, body.get("version")) == (200, 2), body
        _, ready = request(port, "GET", "/readyz")
        assert ready["status"] == "ok" and ready["models"][MODEL] == {"Production": 2}


def test_a_model_that_cannot_load_at_start_answers_503_and_the_server_stays_up(
    broken_world,
) -> None:
    registry, broken, policy, folder = broken_world
    registry.transition_stage(MODEL, broken, "Production")  # the only Production version
    with rating_server(folder, "--poll-interval", "0.1", "--no-ledger") as port:
        time.sleep(2.0)  # a crash loop restarts workers within this
        assert request(port, "GET", "/healthz") == (200, {"status": "ok"})
        status, ready = request(port, "GET", "/readyz")
        assert status == 200 and ready["status"] == "degraded"
        assert ready["load_failures"][0]["version"] == broken
        status, body = request(port, "POST", QUOTE, policy)
        assert (status, body["error"]["code"]) == (503, "unavailable")
        assert body["error"]["message"].startswith(f"{MODEL} version {broken} (Production) failed")
        status, body = request(port, "POST", "/v1/models/home_frequency/quote", policy)
        assert status == 200 and body["version"] == 1
        log = next(folder.glob("server-*.log")).read_text()
    assert "starting a new one" not in log  # no worker ever exited
