"""Stage and alias moves, per backend: exactly one generation bump and the move's own audit
events per move (the bump rides on the audit head's UPDATE), and roles read afresh each move."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ratekeeper as rk
from ratekeeper.packaging.package import Package, build_package
from registries import governed_team

MODEL = "motor"


@pytest.fixture(scope="module")
def package(motor_glm: Any, portfolio: Any) -> Package:
    return build_package(motor_glm, portfolio, target="claim_count", exposure="exposure")


def add_versions(registry: rk.Registry, package: Package, count: int) -> None:
    for _ in range(count):
        registry.register_package(
            package, MODEL, metrics={}, lineage={}, description=None, tags={"team": "motor"}
        )


def test_each_move_bumps_the_generation_once_and_appends_its_own_events(
    registry: rk.Registry, package: Package
) -> None:
    add_versions(registry, package, 3)
    moves: list[tuple[Callable[[], object], list[tuple[str, int]]]] = [
        # The registry keeps champion on the Production version (alias.follow).
        (
            lambda: registry.transition_stage(MODEL, 1, "Production"),
            [("stage", 1), ("alias.follow", 1)],
        ),
        # Promoting version 2 archives version 1: two stage events, one bump.
        (
            lambda: registry.transition_stage(MODEL, 2, "Production"),
            [("stage", 1), ("stage", 2), ("alias.follow", 2)],
        ),
        (lambda: registry.set_alias(MODEL, "champion", 2), [("alias.set", 2)]),
        (lambda: registry.set_alias(MODEL, "champion", 3), [("alias.set", 3)]),
        (
            lambda: registry.rollback(MODEL, comment="kill switch"),
            [("rollback", 1), ("stage", 2), ("stage", 1), ("alias.follow", 1)],
        ),
        (lambda: registry.delete_alias(MODEL, "champion"), [("alias.delete", 1)]),
    ]
    for move, expected in moves:
        generation, seen = registry.generation(), len(registry.audit_log())
        move()
        assert registry.generation() == generation + 1
        assert [(e.action, e.version) for e in registry.audit_log()[seen:]] == expected
    # registry.create and its admin's token, three registrations, the twelve events of the moves
    check = registry.verify_audit()
    assert (check.ok, check.checked, check.sealed) == (True, 2 + 3 + 12, True)


def test_a_moved_alias_is_returned_on_its_new_version_only(
    registry: rk.Registry, package: Package
) -> None:
    add_versions(registry, package, 2)
    first = registry.set_alias(MODEL, "champion", 1)
    registry.set_alias(MODEL, "challenger", 1)
    moved = registry.set_alias(MODEL, "champion", 2)

    assert (first.version, first.aliases, first.tags) == (1, ("champion",), {"team": "motor"})
    assert (moved.version, moved.aliases, moved.tags) == (2, ("champion",), {"team": "motor"})
    assert registry.get_version(MODEL, 1).aliases == ("challenger",)
    event = registry.audit_log()[-1]
    assert (event.target, event.before, event.after) == ("champion", {"version": 1}, {"version": 2})


def test_roles_are_read_afresh_by_every_move(
    registry_uri: str | Path, tmp_path: Path, package: Package
) -> None:
    team = governed_team(
        registry_uri, {"alice": ["modeller"], "dave": ["deployer"]}, artifacts=tmp_path / "a"
    )
    admin = team["root"]
    try:
        add_versions(team["alice"], package, 1)
        dave = team["dave"]
        dave.set_alias(MODEL, "challenger", 1)

        admin.set_roles("dave", ["viewer"])
        with pytest.raises(rk.PermissionDeniedError, match=r"^dave \(viewer\) may not alias"):
            dave.set_alias(MODEL, "challenger", 1)
        with pytest.raises(rk.PermissionDeniedError, match=r"^dave \(viewer\) may not archive"):
            dave.transition_stage(MODEL, 1, "Archived")
        with pytest.raises(rk.PermissionDeniedError, match="needs an approved promotion request"):
            dave.transition_stage(MODEL, 1, "Production")
        with pytest.raises(rk.PermissionDeniedError, match="archive needs a credential"):
            admin.as_user("erin").transition_stage(MODEL, 1, "Archived")

        admin.set_roles("dave", ["deployer", "viewer"])
        assert dave.transition_stage(MODEL, 1, "Archived").stage == rk.Stage.ARCHIVED
    finally:
        for handle in team.values():
            handle.close()
