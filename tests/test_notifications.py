"""PostgreSQL LISTEN/NOTIFY on the generation counter: a rating server follows a stage move as it
commits, with polling as the fallback while the notifications are down (PostgreSQL restarting).

The watchers here poll only every 60 s: anything they follow sooner came by notification.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.engine.deployments import Deployments
from ratekeeper.store import database
from registries import TEST_KEY, open_registry

pytestmark = pytest.mark.postgres
MODEL = "motor_frequency"
NO_POLLING = 60.0  # seconds: longer than any wait below
WAIT = 20.0  # seconds to wait for what must happen (generous: two shared cores)


def wait_until(condition, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture()
def followed(private_postgres, tmp_path, portfolio, monkeypatch):
    """An open registry on the private server with two versions (1 in Production), and a
    watching ``Deployments`` that records every swap."""
    monkeypatch.setenv("RATEKEEPER_AUDIT_KEY", TEST_KEY)
    url = private_postgres.url(private_postgres.create_database())
    registry = open_registry(url, artifacts=tmp_path / "artifacts")
    train = portfolio.iloc[:2000]
    for offset in (0, 100):
        frame = portfolio.iloc[offset : offset + 2000]
        registry.register_model(train_glm(frame), MODEL, training_data=train, exposure="exposure")
    registry.transition_stage(MODEL, 1, "Production")
    swaps: list[int] = []
    served = rk.Registry(url)
    # The Production slot's swaps (the registry keeps @champion on the same version: its slot
    # swaps too, and is left out here).
    deployments = Deployments(
        served,
        on_swap=lambda _n, slot, version: swaps.append(version) if slot == "Production" else None,
    )
    deployments.refresh(force=True)
    stop = threading.Event()
    watcher = deployments.watch(NO_POLLING, stop)
    assert wait_until(lambda: deployments.following() == "notifications")
    yield registry, deployments, swaps
    stop.set()
    watcher.join(timeout=10)
    registry.close()
    served.close()


def test_a_committed_move_wakes_the_watcher_and_a_rolled_back_one_does_not(followed) -> None:
    registry, deployments, swaps = followed
    assert swaps == [1]
    registry.transition_stage(MODEL, 2, "Production")
    assert wait_until(lambda: swaps == [1, 2]), swaps
    assert deployments.served_versions() == {MODEL: {"Production": 2, "champion": 2}}
    assert deployments.status()["following"] == "notifications"
    # A transaction that bumps the generation but rolls back sends nothing.
    with psycopg.connect(_libpq(registry), autocommit=True) as probe:
        probe.execute(f"LISTEN {database.GENERATION_CHANNEL}")
        with (
            pytest.raises(RuntimeError, match="abandoned"),
            database.write_transaction(registry.engine) as conn,
        ):
            database.notify_generation(conn)
            raise RuntimeError("abandoned")
        assert list(probe.notifies(timeout=0.5)) == []
        registry.rollback(MODEL)
        (heard,) = list(probe.notifies(timeout=5.0, stop_after=1))
        assert (heard.channel, heard.payload) == (database.GENERATION_CHANNEL, "")
    assert wait_until(lambda: swaps == [1, 2, 1]), swaps


def test_the_listener_reconnects_after_a_restart_and_polls_meanwhile(
    followed, private_postgres
) -> None:
    registry, deployments, swaps = followed
    private_postgres.shut_down()
    assert wait_until(lambda: deployments.following() == "polling")
    assert deployments.served_versions()[MODEL]["Production"] == 1  # still serving
    private_postgres.start_again()
    assert wait_until(lambda: deployments.following() == "notifications")
    assert deployments._listener is not None and deployments._listener.connects == 2
    registry.transition_stage(MODEL, 2, "Production")  # the registry's pool reconnects too
    assert wait_until(lambda: swaps == [1, 2]), swaps


def _libpq(registry) -> str:
    from ratekeeper.store.notifications import conninfo

    return conninfo(registry.engine.url)
