"""Writers in separate OS processes, on both backends.

Children are started with the "spawn" method and open their own ``Registry`` on the same
database and artifact folder as the test's. They meet at a barrier so that their writes really
overlap, report what they saw in a JSON file, and every wait is bounded by ``TIMEOUT_S``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ratekeeper import ConflictError, ModelVersion, RatekeeperError, Registry, Stage
from ratekeeper.packaging.package import Package, build_package, load_package
from registries import open_registry

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT_S = 120.0
NAME = "motor"
Call = tuple[str, list[Any], dict[str, Any]]
"""A registry method's name, positional arguments and keyword arguments."""


# -- what the child processes run ---------------------------------------------------------------
def _open(url: str, artifacts: str, digest: str, user: str) -> tuple[Registry, Package]:
    """A child's own registry, and the package the parent stored under ``digest``."""
    registry = Registry(url, artifacts=artifacts, user=user)
    return registry, load_package(registry.blobs.get(digest), registry.blobs.get)


def create_registry(url: str, artifacts: str, start: Any) -> None:
    """Create the registry; a process that comes second is told it exists (and nothing else)."""
    start.wait(TIMEOUT_S)
    try:
        open_registry(url, artifacts=artifacts, user="opener").close()
    except ConflictError as exc:
        assert "a registry already exists at" in exc.message


def register_many(
    url: str, artifacts: str, digest: str, user: str, count: int, start: Any, out: str
) -> None:
    registry, package = _open(url, artifacts, digest, user)
    got = []
    try:
        start.wait(TIMEOUT_S)
        for i in range(count):
            version = registry.register_package(
                package,
                NAME,
                metrics={"i": float(i)},
                lineage={"writer": user},
                description=None,
                tags={"writer": user},
            )
            got.append(version.version)
    finally:
        registry.close()
    Path(out).write_text(json.dumps(got))


def race(
    url: str, artifacts: str, digest: str, user: str, calls: list[Call], start: Any, out: str
) -> None:
    """Make each registry call after the barrier; record "ok" or the typed error it raised."""
    registry, _ = _open(url, artifacts, digest, user)
    outcomes = []
    try:
        for method, args, options in calls:
            start.wait(TIMEOUT_S)
            try:
                getattr(registry, method)(*args, **options)
                outcomes.append("ok")
            except RatekeeperError as exc:  # anything else is a bug: let it print a traceback
                outcomes.append(f"{type(exc).__name__}: {exc.message}")
    finally:
        registry.close()
    Path(out).write_text(json.dumps(outcomes))


class _PauseWhenRead(dict[str, str]):
    """Tags whose reading, inside register_package's transaction, signals and then hangs."""

    def __init__(self, ready: Any) -> None:
        super().__init__(writer="doomed")
        self.ready = ready

    def items(self) -> Any:
        self.ready.set()
        time.sleep(TIMEOUT_S)
        return super().items()


def register_and_hang(url: str, artifacts: str, digest: str, ready: Any) -> None:
    registry, package = _open(url, artifacts, digest, "doomed")
    registry.register_package(
        package, NAME, metrics={}, lineage={}, description=None, tags=_PauseWhenRead(ready)
    )


# -- helpers for the test process ---------------------------------------------------------------
@pytest.fixture(scope="module")
def package(motor_glm: Any, portfolio: Any) -> Package:
    return build_package(
        motor_glm, portfolio, target="claim_count", exposure="exposure", id_column="policy_id"
    )


@pytest.fixture
def shared(registry: Registry, package: Package) -> tuple[str, str, str]:
    """What a child needs: the registry URL, the artifact folder, the stored package's digest."""
    return registry.url, str(registry.blobs.root), registry.blobs.put(package.manifest_bytes)


def run_children(*children: tuple[Any, tuple[Any, ...]], start: Any) -> None:
    """Run the children to the end (bounded) and require a clean exit from each.

    When one child fails, ``start`` (their barrier) is broken so the others stop waiting for it.
    """
    processes = [SPAWN.Process(target=target, args=args) for target, args in children]
    for process in processes:
        process.start()
    deadline = time.monotonic() + TIMEOUT_S
    running = list(processes)
    try:
        while running and time.monotonic() < deadline:
            wait([p.sentinel for p in running], deadline - time.monotonic())
            for process in [p for p in running if not p.is_alive()]:
                running.remove(process)
                if process.exitcode != 0:
                    start.abort()
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join(10)
    assert [p.exitcode for p in processes] == [0] * len(processes)


def add_versions(registry: Registry, package: Package, count: int) -> list[int]:
    return [
        registry.register_package(
            package, NAME, metrics={}, lineage={}, description=None, tags={}
        ).version
        for _ in range(count)
    ]


def replay(registry: Registry, versions: list[ModelVersion]) -> dict[int, Stage]:
    """Replay the whole stage history and check that every step starts where the last ended."""
    stages = dict.fromkeys((v.version for v in versions), Stage.NONE)
    for step in registry.get_transitions(NAME):
        assert step.from_stage == stages[step.version], step
        stages[step.version] = step.to_stage
        assert list(stages.values()).count(Stage.PRODUCTION) <= 1
    return stages


# -- tests --------------------------------------------------------------------------------------
def test_processes_creating_a_registry_at_once_make_exactly_one(
    registry_uri: str | Path, tmp_path: Path, package: Package
) -> None:
    artifacts = str(tmp_path / "artifacts")
    start = SPAWN.Barrier(2)
    run_children(*[(create_registry, (str(registry_uri), artifacts, start))] * 2, start=start)

    registry = Registry(registry_uri, user="alice")
    try:
        assert registry.blobs.root == Path(artifacts)  # recorded once, by whichever came first
        assert registry.generation() == 0
        assert registry.policy == "open"
        assert [(u.name, sorted(u.roles)) for u in registry.list_users()] == [("opener", ["admin"])]
        assert add_versions(registry, package, 2) == [1, 2]
        with registry.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM registry_state")).scalar_one() == 1
    finally:
        registry.close()


def test_concurrent_registrations_get_distinct_gap_free_numbers(
    registry: Registry, shared: tuple[str, str, str], tmp_path: Path
) -> None:
    start = SPAWN.Barrier(2)
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    run_children(
        (register_many, (*shared, "writer-a", 50, start, str(outs[0]))),
        (register_many, (*shared, "writer-b", 50, start, str(outs[1]))),
        start=start,
    )

    got_a, got_b = (json.loads(out.read_text()) for out in outs)
    assert len(got_a) == len(got_b) == 50
    assert got_a == sorted(got_a) and got_b == sorted(got_b)
    assert sorted(got_a + got_b) == list(range(1, 101))
    stored = registry.list_versions(NAME)
    assert [v.version for v in stored] == list(range(1, 101))
    writers = {v.version: v.tags["writer"] for v in stored}
    assert [n for n, w in writers.items() if w == "writer-a"] == got_a
    assert [v.lineage["writer"] for v in stored] == [writers[v.version] for v in stored]
    assert [m.name for m in registry.list_models()] == [NAME]
    assert registry.get_model(NAME).latest_version == 100
    # Both writers extended one audit chain, one event at a time.
    assert registry.verify_audit().ok
    registered = [(e.actor, e.version) for e in registry.audit_log(NAME) if e.action == "register"]
    assert sorted(registered) == sorted((writers[n], n) for n in range(1, 101))


def test_racing_promotions_leave_exactly_one_production_version(
    registry: Registry, package: Package, shared: tuple[str, str, str], tmp_path: Path
) -> None:
    rounds = 5
    add_versions(registry, package, 1 + 2 * rounds)
    registry.transition_stage(NAME, 1, "Production")
    generation = registry.generation()

    def promotions(first: int, user: str) -> list[Call]:
        return [
            (
                "transition_stage",
                [NAME, first + 2 * r, "Production"],
                {"comment": f"round {r} by {user}"},
            )
            for r in range(rounds)
        ]

    start = SPAWN.Barrier(2)
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    run_children(
        (race, (*shared, "writer-a", promotions(2, "writer-a"), start, str(outs[0]))),
        (race, (*shared, "writer-b", promotions(3, "writer-b"), start, str(outs[1]))),
        start=start,
    )

    assert [json.loads(out.read_text()) for out in outs] == [["ok"] * rounds] * 2
    versions = registry.list_versions(NAME)
    live = [v.version for v in versions if v.stage == Stage.PRODUCTION]
    assert len(live) == 1 and live[0] in (2 * rounds, 2 * rounds + 1)
    assert registry.get_model(NAME).production_version == live[0]
    assert registry.resolve(f"models:/{NAME}/Production").version == live[0]
    assert replay(registry, versions) == {v.version: v.stage for v in versions}
    assert sorted(v.version for v in versions if v.stage == Stage.ARCHIVED) == [
        n for n in range(1, 2 * rounds + 2) if n != live[0]
    ]
    # Each promotion archived the version live just before it, in the same transaction.
    history = registry.get_transitions(NAME)
    assert len(history) == 1 + 2 * 2 * rounds
    for archived, promoted in zip(history[1::2], history[2::2], strict=True):
        assert (archived.from_stage, archived.to_stage) == (Stage.PRODUCTION, Stage.ARCHIVED)
        assert archived.comment == f"archived: version {promoted.version} promoted to Production"
        assert promoted.to_stage == Stage.PRODUCTION
        assert promoted.comment == f"round {(promoted.version - 2) // 2} by {promoted.actor}"
        assert archived.actor == promoted.actor
    assert registry.generation() == generation + 2 * rounds
    assert registry.verify_audit().ok


def test_racing_on_the_same_version_or_alias_gives_typed_errors(
    registry: Registry, package: Package, shared: tuple[str, str, str], tmp_path: Path
) -> None:
    add_versions(registry, package, 3)
    registry.set_alias(NAME, "champion", 1)
    calls: list[Call] = [
        ("transition_stage", [NAME, 2, "Production"], {}),
        ("delete_alias", [NAME, "champion"], {}),
        ("set_alias", [NAME, "challenger", 3], {}),
        ("get_version", ["nope", 1], {}),
        ("get_version", [NAME, 99], {}),
        ("transition_stage", [NAME, 3, "Live"], {}),
        ("resolve", [f"models:/{NAME}@ghost"], {}),
    ]
    start = SPAWN.Barrier(2)
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    run_children(
        (race, (*shared, "writer-a", calls, start, str(outs[0]))),
        (race, (*shared, "writer-b", calls, start, str(outs[1]))),
        start=start,
    )

    outcomes = [
        sorted(pair) for pair in zip(*(json.loads(o.read_text()) for o in outs), strict=True)
    ]
    unknown_stage = "unknown stage 'Live': use one of None, Staging, Production, Archived"
    assert outcomes == [
        [f"ConflictError: {NAME} version 2 is already in Production", "ok"],
        [f"NotFoundError: model '{NAME}' has no alias 'champion'", "ok"],
        ["ok", "ok"],
        ["NotFoundError: model 'nope' does not exist"] * 2,
        [f"NotFoundError: model '{NAME}' has no version 99"] * 2,
        [f"InvalidInputError: {unknown_stage}"] * 2,
        [f"NotFoundError: model '{NAME}' has no alias 'ghost'"] * 2,
    ]
    assert [v.version for v in registry.list_versions(NAME, stage="Production")] == [2]
    assert [(t.version, t.to_stage) for t in registry.get_transitions(NAME)] == [
        (2, Stage.PRODUCTION)
    ]
    assert registry.get_model(NAME).aliases == {"challenger": 3}
    assert registry.verify_audit().ok


def test_a_writer_killed_mid_transaction_leaves_no_version_and_no_gap(
    registry: Registry, package: Package, shared: tuple[str, str, str]
) -> None:
    add_versions(registry, package, 2)
    ready = SPAWN.Event()
    child = SPAWN.Process(target=register_and_hang, args=(*shared, ready))
    child.start()
    pool = ThreadPoolExecutor(1)
    try:
        assert ready.wait(TIMEOUT_S), "the child never reached the middle of its transaction"
        assert_write_transaction_open(registry)
        assert [v.version for v in registry.list_versions(NAME)] == [1, 2]
        waiting = pool.submit(add_versions, registry, package, 1)  # queues behind the child
        wait_for_blocked_writer(registry)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(TIMEOUT_S)
        assert waiting.result(TIMEOUT_S) == [3]
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
        pool.shutdown(wait=True)

    assert child.exitcode == -signal.SIGKILL
    stored = registry.list_versions(NAME)
    assert [v.version for v in stored] == [1, 2, 3]
    assert registry.list_versions(tag="writer") == []  # nothing of the killed writer survived
    assert add_versions(registry, package, 1) == [4]
    assert registry.verify_audit().ok
    assert [e.version for e in registry.audit_log(NAME) if e.action == "register"] == [1, 2, 3, 4]


def assert_write_transaction_open(registry: Registry) -> None:
    """Prove that another process is inside a write transaction that inserted a version."""
    if registry.engine.dialect.name == "postgresql":
        with registry.engine.connect() as conn:
            holders = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'model_versions' AND l.mode = 'RowExclusiveLock' "
                    "AND l.granted AND l.pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert holders == 1
    else:
        probe = sqlite3.connect(registry.engine.url.database, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match=r"^database is locked$"):
                probe.execute("BEGIN IMMEDIATE")
        finally:
            probe.close()


def wait_for_blocked_writer(registry: Registry) -> None:
    """On PostgreSQL, wait (bounded) until the second writer queues behind the first."""
    if registry.engine.dialect.name != "postgresql":
        return  # SQLite's busy handler waits invisibly; the result is checked all the same
    deadline = time.monotonic() + TIMEOUT_S
    query = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
    while time.monotonic() < deadline:
        with registry.engine.connect() as conn:
            if conn.execute(query).scalar_one() > 0:
                return
        time.sleep(0.05)
    pytest.fail("the second writer never queued behind the first")
