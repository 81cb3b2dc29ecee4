"""Hot swap and kill switch against real server processes (two workers) under steady load.

Promotions and rollbacks come from other processes (this test's Python API and the CLI); every
worker must follow within a second, with no failed request and no response from a version that
was not live at that moment.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from tests.http_helpers import MODEL, policies
from tests.server_process import SteadyQuotes, rating_server, request

from registries import open_registry

SWAP_WINDOW = 1.0  # seconds a server may keep answering with the version it had


@pytest.fixture()
def world(tmp_path):
    from ratekeeper.demo import train_glm
    from ratekeeper.synthetic import motor_portfolio

    book = motor_portfolio(2000, seed=4)
    registry = open_registry(tmp_path, user="modeller")
    glm = train_glm(book)
    for i in range(3):  # three versions with (slightly) different training data
        registry.register_model(
            glm if i == 0 else train_glm(book.iloc[i * 50 :]),
            MODEL,
            training_data=book.iloc[i * 50 :],
            exposure="exposure",
        )
    registry.transition_stage(MODEL, 1, "Production")
    return registry, policies(book, 1)[0], tmp_path


def cli(folder, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "ratekeeper", "--registry", str(folder), *args],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_twenty_promotions_and_rollbacks_under_load(world) -> None:
    registry, policy, folder = world
    # (when the move started, when it had committed, the Production version it made)
    timeline = [(0.0, 0.0, 1)]
    with (
        rating_server(folder, "--poll-interval", "0.1") as port,
        SteadyQuotes(port, MODEL, policy, rate=150.0, threads=3) as load,
    ):
        time.sleep(0.5)
        for move in range(20):
            started = time.monotonic()
            if move % 4 == 3:
                cli(folder, "rollback", MODEL)  # the kill switch, from another process
                live = registry.resolve(f"models:/{MODEL}/Production").version
            elif move % 4 == 2:
                live = registry.rollback(MODEL).version
            else:
                current = registry.resolve(f"models:/{MODEL}/Production").version
                live = current % 3 + 1
                registry.transition_stage(MODEL, live, "Production", comment=f"move {move}")
            timeline.append((started, time.monotonic(), live))
            time.sleep(1.3)
    records = load.records
    assert len(records) > 1500
    failures = [r for r in records if r[2] != 200]
    assert failures == [], f"{len(failures)} failed requests, first: {failures[:3]}"

    def live_between(start: float, end: float) -> set[int]:
        """Versions that were (or were becoming) Production at some moment in [start, end]."""
        versions = set()
        for i, (began, _, version) in enumerate(timeline):
            until = timeline[i + 1][1] if i + 1 < len(timeline) else float("inf")
            if began <= end and until >= start:
                versions.add(version)
        return versions

    for sent, received, _, version in records:
        assert version in live_between(sent - SWAP_WINDOW, received), (sent, version)
    # Within the swap window after each move, every worker answers with the new version.
    ends = [t[0] for t in timeline[2:]] + [float("inf")]
    for (_, committed, version), next_move in zip(timeline[1:], ends, strict=True):
        settled = [v for s, _, _, v in records if committed + SWAP_WINDOW <= s < next_move]
        assert settled and set(settled) == {version}


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(world) -> None:
    registry, policy, folder = world
    with rating_server(folder, "--poll-interval", "0.1") as port:
        broken = registry.get_version(MODEL, 2)
        path = registry.blobs.path(broken.artifact_digest)
        path.chmod(0o644)
        path.write_bytes(b"{}")  # corrupt version 2's manifest
        registry.transition_stage(MODEL, 2, "Production")
        time.sleep(1.0)
        for _ in range(10):  # both workers, several connections
            status, body = request(port, "POST", f"/v1/models/{MODEL}/quote", policy)
            assert (status, body.get("version")) == (200, 1), body
        status, ready = request(port, "GET", "/readyz")
        assert status == 200 and ready["status"] == "degraded"
        assert ready["load_failures"][0]["version"] == 2
        assert "corrupted" in ready["load_failures"][0]["error"]
        _, metrics = request(port, "GET", "/metrics")
        assert (
            'ratekeeper_model_load_failures_total{model="motor_frequency",version="2"}' in metrics
        )
        # The kill switch puts version 1 back in the registry too; serving never stopped.
        cli(folder, "rollback", MODEL)
        time.sleep(0.5)
        _, ready = request(port, "GET", "/readyz")
        assert ready["status"] == "ok" and ready["models"] == {
            MODEL: {"Production": 1, "champion": 1}  # the registry keeps champion on Production
        }
