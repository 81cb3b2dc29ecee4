"""The registry contract: one suite, run against every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import ratekeeper
from ratekeeper import (
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    Registry,
    Stage,
)
from ratekeeper.artifacts import LocalBlobStore
from ratekeeper.packaging.package import Package, build_package
from ratekeeper.synthetic import AREAS, COVERS, FUELS, RATING_FACTORS
from remote_server import remote_registry


@pytest.fixture(params=["embedded", "remote", "s3-artifacts"])
def registry(request: pytest.FixtureRequest, registry: Registry) -> Iterator[Registry]:
    """Every contract test on each backend, embedded and through the remote client (a rating
    server over that registry: the team-mode path), and embedded with its artifacts on a real
    S3 server (moto)."""
    if request.param == "remote":
        with remote_registry(registry) as remote:
            yield remote
    elif request.param == "s3-artifacts":
        # Still empty: another store may be given (a registry with versions refuses one that
        # lacks them, tests/test_artifacts.py).
        on_s3 = Registry(registry.url, artifacts=request.getfixturevalue("s3_location"))
        yield on_s3.as_user("alice")
        on_s3.close()
    else:
        yield registry


# Raw access to the stored blobs, as someone with access to the folder or the bucket has it.
def stored_blob(registry: Registry, digest: str) -> bytes:
    blobs = registry.blobs
    if isinstance(blobs, LocalBlobStore):
        return blobs.path(digest).read_bytes()
    data = blobs.objects.get(blobs.key(digest))
    assert data is not None
    return data


def overwrite_blob(registry: Registry, digest: str, data: bytes) -> None:
    blobs = registry.blobs
    if isinstance(blobs, LocalBlobStore):
        blobs.path(digest).chmod(0o644)
        blobs.path(digest).write_bytes(data)
    else:
        blobs.objects.put(blobs.key(digest), data)


def remove_blob(registry: Registry, digest: str) -> None:
    blobs = registry.blobs
    if isinstance(blobs, LocalBlobStore):
        blobs.path(digest).unlink()
    else:
        blobs.objects.delete(blobs.key(digest))


def register(
    registry: Registry, model: Any, data: Any, name: str = "motor", **options: Any
) -> ratekeeper.ModelVersion:
    return registry.register_model(
        model,
        name,
        training_data=data,
        target="claim_count",
        exposure="exposure",
        id_column="policy_id",
        **options,
    )


@pytest.fixture(scope="module")
def package(motor_glm: Any, portfolio: Any) -> Package:
    return build_package(
        motor_glm, portfolio, target="claim_count", exposure="exposure", id_column="policy_id"
    )


@pytest.fixture
def three_versions(registry: Registry, package: Package) -> Registry:
    """``motor`` versions 1, 2, 3 (tagged) and ``home`` version 1, from one built package."""
    for name, tags in [
        ("motor", {"team": "motor", "channel": "direct"}),
        ("motor", {"team": "motor", "channel": "broker"}),
        ("motor", {"team": "pricing"}),
        ("home", {"team": "home"}),
    ]:
        registry.register_package(
            package, name, metrics={}, lineage={}, description=None, tags=tags
        )
    return registry


def numbers(versions: list[ratekeeper.ModelVersion]) -> list[tuple[str, int]]:
    return [(v.name, v.version) for v in versions]


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "sha256").rglob("*") if p.is_file())


# -- registering --------------------------------------------------------------------------------
def test_version_numbers_start_at_one_per_model(
    registry: Registry, motor_glm: Any, portfolio: Any
) -> None:
    got = [register(registry, motor_glm, portfolio).version for _ in range(3)]
    other = register(registry, motor_glm, portfolio, name="home")

    assert got == [1, 2, 3]
    assert (other.name, other.version) == ("home", 1)
    assert [v.version for v in registry.list_versions("motor")] == [1, 2, 3]
    assert registry.get_model("motor").latest_version == 3


def test_a_version_carries_its_package_facts_and_lineage(
    registry: Registry, motor_glm: Any, portfolio: Any, tmp_path: Path
) -> None:
    before = datetime.now(UTC)
    version = register(
        registry,
        motor_glm,
        portfolio,
        metrics={"deviance": 0.42, "gini": 0.31},
        description="frequency GLM",
        tags={"team": "motor"},
    )
    after = datetime.now(UTC)

    assert (version.name, version.version, version.flavor) == ("motor", 1, "glm")
    assert version.uri == "models:/motor/1"
    assert (version.stage, version.description) == (Stage.NONE, "frequency GLM")
    assert version.metrics == {"deviance": 0.42, "gini": 0.31}
    assert version.tags == {"team": "motor"}
    assert version.aliases == ()
    assert version.created_by == "alice"

    # The digest is the SHA-256 of the stored manifest, and the manifest describes the version.
    assert re.fullmatch(r"[0-9a-f]{64}", version.artifact_digest)
    stored = stored_blob(registry, version.artifact_digest)
    if isinstance(registry.blobs, LocalBlobStore):
        assert registry.blobs.path(version.artifact_digest).is_relative_to(tmp_path / "artifacts")
    assert hashlib.sha256(stored).hexdigest() == version.artifact_digest
    manifest = json.loads(stored)
    assert manifest["flavor"] == "glm"
    assert manifest["signature"] == version.signature.to_dict()
    assert manifest["profile"] == version.profile.to_dict()
    assert version.artifact_size == len(stored)  # a GLM package is its manifest alone

    signature = version.signature
    assert signature.names == (*RATING_FACTORS, "exposure", "policy_id")
    assert signature.target == "claim_count"
    assert signature.exposure is not None and signature.exposure.name == "exposure"
    assert signature.id_field is not None and signature.id_field.name == "policy_id"
    assert signature.field("area").levels == AREAS
    assert signature.field("fuel").levels == FUELS
    assert signature.field("cover").levels == COVERS
    age = signature.field("driver_age")
    assert age.kind == "integer"
    ages = portfolio["driver_age"]
    assert (age.minimum, age.maximum) == (ages.min(), ages.max())

    profile = version.profile
    assert profile.rows == 3000
    assert profile.weight == "exposure"
    assert profile.total_weight == pytest.approx(portfolio["exposure"].sum())
    assert set(profile.factors) == set(RATING_FACTORS)

    data = version.lineage["training_data"]
    assert data["rows"] == 3000
    assert data["columns"] == {str(c): str(t) for c, t in portfolio.dtypes.items()}
    assert re.fullmatch(r"[0-9a-f]{64}", data["content_sha256"])
    libraries = version.lineage["libraries"]
    assert libraries["scikit-learn"] == metadata.version("scikit-learn")
    assert libraries["ratekeeper"] == ratekeeper.__version__
    assert version.lineage["model_class"] == "sklearn.pipeline.Pipeline"

    assert version.created_at.utcoffset() == timedelta(0)
    assert before <= version.created_at <= after
    assert version.stage_changed_at == version.created_at

    # What is read back later is what registering returned.
    assert registry.get_version("motor", 1) == version


def test_a_registered_version_prices_like_the_model(
    registry: Registry, motor_glm: Any, portfolio: Any
) -> None:
    register(registry, motor_glm, portfolio)
    scorer = registry.load_model("models:/motor/1")

    head = portfolio.head(50)
    expected = motor_glm.predict(head[list(RATING_FACTORS)]) * head["exposure"].to_numpy()
    assert (scorer.name, scorer.version, scorer.flavor) == ("motor", 1, "glm")
    np.testing.assert_allclose(scorer.predict(head), expected, rtol=1e-9)


def test_identical_content_is_stored_once(
    registry: Registry, motor_glm: Any, portfolio: Any, tmp_path: Path
) -> None:
    first = register(registry, motor_glm, portfolio, metrics={"gini": 0.1})
    second = register(registry, motor_glm, portfolio, metrics={"gini": 0.2})

    assert (first.version, second.version) == (1, 2)
    assert first.artifact_digest == second.artifact_digest
    blobs = registry.blobs
    if not isinstance(blobs, LocalBlobStore):  # on S3: one object, under its digest
        listed = [key for key, _size in blobs.objects.list("sha256/")]
        assert listed == [blobs.key(first.artifact_digest)]
        return
    files = blob_files(tmp_path / "artifacts")
    assert [f.name for f in files] == [first.artifact_digest]
    assert files[0].stat().st_mode & 0o777 == 0o400  # write-once, the owner's only
    assert files[0].parent.stat().st_mode & 0o777 == 0o700


def test_the_training_fingerprint_follows_the_data(
    registry: Registry, motor_glm: Any, portfolio: Any
) -> None:
    whole = register(registry, motor_glm, portfolio)
    again = register(registry, motor_glm, portfolio)
    half = register(registry, motor_glm, portfolio.iloc[:1500])

    assert again.lineage["training_data"] == whole.lineage["training_data"]
    assert half.lineage["training_data"]["rows"] == 1500
    assert (
        half.lineage["training_data"]["content_sha256"]
        != (whole.lineage["training_data"]["content_sha256"])
    )


# -- stages -------------------------------------------------------------------------------------
def test_stage_transitions_are_recorded_with_who_and_why(
    three_versions: Registry, tmp_path: Path
) -> None:
    registry = three_versions
    staged = registry.transition_stage("motor", 1, "Staging", comment="validation passed")
    code = registry.add_user("bob", ["admin"]).enrollment_code
    anonymous = Registry(registry.url)
    bob = Registry(registry.url, token=anonymous.enroll(code))
    anonymous.close()
    try:
        live = bob.transition_stage("motor", 1, Stage.PRODUCTION, comment="approved")
    finally:
        bob.close()

    assert staged.stage == Stage.STAGING
    assert live.stage == Stage.PRODUCTION
    assert live.stage_changed_at >= staged.stage_changed_at > staged.created_at
    history = registry.get_transitions("motor", 1)
    assert [(t.name, t.version, t.from_stage, t.to_stage, t.actor, t.comment) for t in history] == [
        ("motor", 1, Stage.NONE, Stage.STAGING, "alice", "validation passed"),
        ("motor", 1, Stage.STAGING, Stage.PRODUCTION, "bob", "approved"),
    ]
    assert all(t.at.utcoffset() == timedelta(0) for t in history)
    assert history[0].at <= history[1].at
    assert registry.get_transitions("motor", 2) == []
    assert registry.get_version("motor", 1).stage == Stage.PRODUCTION


def test_promoting_archives_the_previous_production_version(three_versions: Registry) -> None:
    registry = three_versions
    registry.transition_stage("motor", 1, "Production")
    registry.transition_stage("motor", 2, "staging")
    promoted = registry.transition_stage("motor", 2, "production", comment="better gini")

    assert promoted.stage == Stage.PRODUCTION
    assert registry.get_version("motor", 1).stage == Stage.ARCHIVED
    assert [v.version for v in registry.list_versions("motor", stage="Production")] == [2]
    assert [
        (t.version, t.from_stage, t.to_stage, t.comment) for t in registry.get_transitions("motor")
    ] == [
        (1, Stage.NONE, Stage.PRODUCTION, None),
        (2, Stage.NONE, Stage.STAGING, None),
        (1, Stage.PRODUCTION, Stage.ARCHIVED, "archived: version 2 promoted to Production"),
        (2, Stage.STAGING, Stage.PRODUCTION, "better gini"),
    ]

    registry.transition_stage("motor", 3, "Production")
    registry.transition_stage("home", 1, "Production")  # another model is independent
    stages = {(v.name, v.version): v.stage for v in registry.list_versions()}
    assert stages == {
        ("home", 1): Stage.PRODUCTION,
        ("motor", 1): Stage.ARCHIVED,
        ("motor", 2): Stage.ARCHIVED,
        ("motor", 3): Stage.PRODUCTION,
    }


def test_moving_to_the_current_stage_is_a_conflict(three_versions: Registry) -> None:
    registry = three_versions
    registry.transition_stage("motor", 1, "Production")
    generation = registry.generation()

    with pytest.raises(ConflictError, match=r"^motor version 1 is already in Production$"):
        registry.transition_stage("motor", 1, "Production")
    with pytest.raises(ConflictError, match=r"^motor version 2 is already in None$"):
        registry.transition_stage("motor", 2, "None")

    assert registry.generation() == generation
    assert len(registry.get_transitions("motor")) == 1


def test_a_version_can_leave_production(three_versions: Registry) -> None:
    registry = three_versions
    registry.transition_stage("motor", 1, "Production")
    registry.transition_stage("motor", 1, "Archived", comment="withdrawn")

    assert registry.get_model("motor").production_version is None
    with pytest.raises(NotFoundError, match=r"^model 'motor' has no version in Production$"):
        registry.resolve("models:/motor/Production")


# -- aliases and URIs ---------------------------------------------------------------------------
def test_aliases_are_set_moved_and_deleted(three_versions: Registry) -> None:
    registry = three_versions
    set_to = registry.set_alias("motor", "champion", 1)
    registry.set_alias("motor", "challenger", 2)

    assert set_to.aliases == ("champion",)
    assert registry.resolve("models:/motor@champion").version == 1
    assert registry.resolve("models:/motor@challenger").version == 2

    registry.set_alias("motor", "champion", 2)  # move
    assert registry.resolve("models:/motor@champion").version == 2
    assert registry.get_version("motor", 2).aliases == ("challenger", "champion")
    assert registry.get_version("motor", 1).aliases == ()

    registry.delete_alias("motor", "challenger")
    assert registry.get_version("motor", 2).aliases == ("champion",)
    assert registry.get_model("motor").aliases == {"champion": 2}
    with pytest.raises(NotFoundError, match=r"^model 'motor' has no alias 'challenger'$"):
        registry.resolve("models:/motor@challenger")


def test_an_alias_belongs_to_one_model(three_versions: Registry) -> None:
    registry = three_versions
    registry.set_alias("motor", "champion", 3)
    registry.set_alias("home", "champion", 1)

    assert registry.resolve("models:/motor@champion").version == 3
    assert registry.resolve("models:/home@champion").version == 1
    registry.delete_alias("home", "champion")
    assert registry.resolve("models:/motor@champion").version == 3


def test_uris_resolve_stage_version_latest_and_alias(three_versions: Registry) -> None:
    registry = three_versions
    registry.transition_stage("motor", 2, "Production")
    registry.transition_stage("motor", 1, "Staging")
    registry.set_alias("motor", "champion", 2)

    assert registry.resolve("models:/motor/Production").version == 2
    assert registry.resolve("models:/motor/production").version == 2
    assert registry.resolve("models:/motor/Staging").version == 1
    assert registry.resolve("models:/motor/2").version == 2
    assert registry.resolve("models:/motor/latest").version == 3
    assert registry.resolve("models:/home/latest").version == 1
    assert registry.resolve("models:/motor@champion").version == 2
    assert registry.resolve(" models:/motor/1 ").version == 1
    assert registry.load_model("models:/motor@champion").version == 2


def test_list_versions_filters(three_versions: Registry) -> None:
    registry = three_versions
    registry.transition_stage("motor", 2, "Production")
    registry.set_alias("motor", "champion", 2)
    registry.set_alias("home", "champion", 1)

    assert numbers(registry.list_versions()) == [
        ("home", 1),
        ("motor", 1),
        ("motor", 2),
        ("motor", 3),
    ]
    assert numbers(registry.list_versions("motor")) == [("motor", 1), ("motor", 2), ("motor", 3)]
    assert numbers(registry.list_versions(stage="Production")) == [("motor", 2)]
    assert numbers(registry.list_versions("motor", stage="None")) == [("motor", 1), ("motor", 3)]
    assert numbers(registry.list_versions(alias="champion")) == [("home", 1), ("motor", 2)]
    assert numbers(registry.list_versions("home", alias="champion")) == [("home", 1)]
    assert numbers(registry.list_versions(tag="channel")) == [("motor", 1), ("motor", 2)]
    assert numbers(registry.list_versions(tag="channel=broker")) == [("motor", 2)]
    assert numbers(registry.list_versions(tag=("team", "motor"))) == [("motor", 1), ("motor", 2)]
    assert numbers(registry.list_versions(tag="team=home")) == [("home", 1)]
    assert registry.list_versions(tag="team=nobody") == []
    assert registry.list_versions("motor", stage="Archived") == []


def test_list_models_shows_latest_production_and_aliases(three_versions: Registry) -> None:
    registry = three_versions
    registry.transition_stage("motor", 2, "Production")
    registry.set_alias("motor", "champion", 2)
    registry.set_alias("motor", "challenger", 3)

    summary = {
        m.name: (m.latest_version, m.production_version, m.aliases, m.created_by)
        for m in registry.list_models()
    }
    assert summary == {
        "home": (1, None, {}, "alice"),
        "motor": (3, 2, {"challenger": 3, "champion": 2}, "alice"),
    }
    assert [m.name for m in registry.list_models()] == ["home", "motor"]
    assert registry.get_model("motor").created_at.utcoffset() == timedelta(0)


def test_generation_increases_on_every_stage_and_alias_move(three_versions: Registry) -> None:
    registry = three_versions
    moves: list[Callable[[], object]] = [
        lambda: registry.transition_stage("motor", 1, "Staging"),
        lambda: registry.transition_stage("motor", 1, "Production"),
        lambda: registry.transition_stage("motor", 2, "Production"),  # also archives version 1
        lambda: registry.set_alias("motor", "champion", 2),
        lambda: registry.set_alias("motor", "champion", 3),
        lambda: registry.delete_alias("motor", "champion"),
    ]
    seen = [registry.generation()]
    for move in moves:
        move()
        seen.append(registry.generation())

    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


# -- errors -------------------------------------------------------------------------------------
Call = Callable[[Registry], object]
NO_MODEL = r"^model 'nope' does not exist$"
NO_VERSION = r"^model 'motor' has no version 9$"
NO_ALIAS = r"^model 'motor' has no alias 'champion'$"
UNKNOWN_STAGE = r"^unknown stage 'Live': use one of None, Staging, Production, Archived$"


def bad_alias(alias: str) -> str:
    return rf"^invalid alias '{re.escape(alias)}': use lower-case letters, digits, '_' or '-'"


def not_a_uri(uri: str) -> str:
    return rf"^not a model URI: '{re.escape(uri)}' \(expected models:/NAME/STAGE, models:/NAME/"


ERRORS: dict[str, list[tuple[Call, type[Exception], str]]] = {
    "unknown model": [
        (lambda r: r.get_version("nope", 1), NotFoundError, NO_MODEL),
        (lambda r: r.get_model("nope"), NotFoundError, NO_MODEL),
        (lambda r: r.list_versions("nope"), NotFoundError, NO_MODEL),
        (lambda r: r.get_transitions("nope"), NotFoundError, NO_MODEL),
        (lambda r: r.resolve("models:/nope/Production"), NotFoundError, NO_MODEL),
        (lambda r: r.resolve("models:/nope@champion"), NotFoundError, NO_MODEL),
        (lambda r: r.transition_stage("nope", 1, "Staging"), NotFoundError, NO_MODEL),
        (lambda r: r.set_alias("nope", "champion", 1), NotFoundError, NO_MODEL),
        (lambda r: r.delete_alias("nope", "champion"), NotFoundError, NO_MODEL),
    ],
    "unknown version": [
        (lambda r: r.get_version("motor", 9), NotFoundError, NO_VERSION),
        (lambda r: r.resolve("models:/motor/9"), NotFoundError, NO_VERSION),
        (lambda r: r.transition_stage("motor", 9, "Staging"), NotFoundError, NO_VERSION),
        (lambda r: r.set_alias("motor", "champion", 9), NotFoundError, NO_VERSION),
    ],
    "unknown stage": [
        (lambda r: r.transition_stage("motor", 1, "Live"), InvalidInputError, UNKNOWN_STAGE),
        (lambda r: r.list_versions(stage="Live"), InvalidInputError, UNKNOWN_STAGE),
        (lambda r: r.resolve("models:/motor/Live"), InvalidInputError, UNKNOWN_STAGE),
        (
            lambda r: r.resolve("models:/motor/Staging"),
            NotFoundError,
            r"^model 'motor' has no version in Staging$",
        ),
    ],
    "unknown alias": [
        (lambda r: r.resolve("models:/motor@champion"), NotFoundError, NO_ALIAS),
        (lambda r: r.delete_alias("motor", "champion"), NotFoundError, NO_ALIAS),
    ],
    "invalid alias name": [
        (
            lambda r: r.set_alias("motor", "Champion!", 1),
            InvalidInputError,
            bad_alias("Champion!"),
        ),
        (
            lambda r: r.set_alias("motor", "latest", 1),
            InvalidInputError,
            bad_alias("latest"),
        ),
        (
            lambda r: r.resolve("models:/motor@Champion"),
            InvalidInputError,
            bad_alias("Champion"),
        ),
        (
            lambda r: r.set_alias("motor", "production", 1),
            InvalidInputError,
            r"^invalid alias 'production': it is the name of a stage$",
        ),
    ],
    "bad uri": [
        (lambda r: r.resolve("motor/1"), InvalidInputError, not_a_uri("motor/1")),
        (
            lambda r: r.resolve("models:/motor/1/2"),
            InvalidInputError,
            not_a_uri("models:/motor/1/2"),
        ),
        (
            lambda r: r.resolve("models:/motor"),
            InvalidInputError,
            not_a_uri("models:/motor"),
        ),
        (lambda r: r.resolve(""), InvalidInputError, not_a_uri("")),
        (
            lambda r: r.resolve("models:/-motor/1"),
            InvalidInputError,
            r"^invalid model name '-motor': use letters, digits",
        ),
    ],
}


@pytest.mark.parametrize("kind", list(ERRORS))
def test_errors_are_specific(registry: Registry, motor_glm: Any, portfolio: Any, kind: str) -> None:
    register(registry, motor_glm, portfolio)
    generation = registry.generation()

    for call, error, message in ERRORS[kind]:
        with pytest.raises(error, match=message):
            call(registry)

    assert registry.generation() == generation
    assert [(v.version, v.stage, v.aliases) for v in registry.list_versions()] == [
        (1, Stage.NONE, ())
    ]


def test_invalid_model_names_are_refused(
    registry: Registry, motor_glm: Any, portfolio: Any
) -> None:
    refused = {
        "bad name!": r"^invalid model name 'bad name!': use letters, digits, '_', '-', '\.'",
        "": r"^invalid model name '': use letters",
        "a/b": r"^invalid model name 'a/b'",
        "_motor": r"^invalid model name '_motor'",
        "x" * 201: r"^invalid model name 'x{201}'",
    }
    for name, message in refused.items():
        with pytest.raises(InvalidInputError, match=message):
            register(registry, motor_glm, portfolio, name=name)

    assert registry.list_models() == []
    assert register(registry, motor_glm, portfolio, name="x" * 200).version == 1


def test_metrics_must_be_finite_numbers(registry: Registry, motor_glm: Any, portfolio: Any) -> None:
    for value in (float("nan"), float("inf"), -float("inf"), "0.3", True, None):
        message = rf"^metric 'gini' must be a finite number, got {re.escape(repr(value))}$"
        with pytest.raises(InvalidInputError, match=message):
            register(registry, motor_glm, portfolio, metrics={"deviance": 0.4, "gini": value})

    assert registry.list_models() == []
    kept = register(registry, motor_glm, portfolio, metrics={"deviance": 1, "gini": 0.25})
    assert kept.metrics == {"deviance": 1.0, "gini": 0.25}
    assert isinstance(kept.metrics["deviance"], float)


# -- integrity ----------------------------------------------------------------------------------
def test_a_corrupted_blob_is_refused_naming_the_version(
    registry: Registry, motor_glm: Any, portfolio: Any
) -> None:
    register(registry, motor_glm, portfolio)
    version = register(registry, motor_glm, portfolio, name="home")
    registry.set_alias("home", "champion", 1)
    data = bytearray(stored_blob(registry, version.artifact_digest))
    data[len(data) // 2] ^= 0x01
    overwrite_blob(registry, version.artifact_digest, bytes(data))

    digest = version.artifact_digest[:12]
    with pytest.raises(
        IntegrityError, match=rf"^home version 1: artifact blob sha256:{digest} is corrupted"
    ):
        registry.load_model("models:/home@champion")
    with pytest.raises(IntegrityError, match=r"^motor version 1: artifact blob .* is corrupted"):
        registry.load_package(registry.get_version("motor", 1))  # same content, same blob


def test_a_missing_blob_is_refused_naming_the_version(
    registry: Registry, motor_glm: Any, portfolio: Any
) -> None:
    register(registry, motor_glm, portfolio)
    version = register(registry, motor_glm, portfolio)
    remove_blob(registry, version.artifact_digest)

    digest = version.artifact_digest[:12]
    with pytest.raises(
        IntegrityError, match=rf"^motor version 2: artifact blob sha256:{digest} is missing$"
    ):
        registry.load_model("models:/motor/latest")


def test_the_database_itself_refuses_a_second_production_version(three_versions: Registry) -> None:
    registry = three_versions
    registry.transition_stage("motor", 1, "Production")
    registry.transition_stage("home", 1, "Production")
    update = sa.text(
        "UPDATE model_versions SET stage = 'Production' "
        "WHERE version = 2 AND model_id = (SELECT id FROM models WHERE name = 'motor')"
    )
    refusal = (
        r"ux_model_versions_one_production"
        if registry.engine.dialect.name == "postgresql"
        else r"UNIQUE constraint failed: model_versions\.model_id"
    )

    with pytest.raises(sa.exc.IntegrityError, match=refusal), registry.engine.begin() as conn:
        conn.execute(update)

    assert [v.version for v in registry.list_versions("motor", stage="Production")] == [1]
    assert registry.get_version("motor", 2).stage == Stage.NONE
