"""Alembic migrations create exactly the schema the code declares."""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import ratekeeper as rk
from ratekeeper.store.database import HEAD_REVISION
from ratekeeper.store.tables import metadata


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("ratekeeper.store") / "migrations")
    )
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_migrated_database_matches_the_declared_tables(tmp_path) -> None:
    registry, _token = rk.Registry.create(tmp_path, admin="root")
    with registry.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert differences == []
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert (
            conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            == HEAD_REVISION
        )


def test_reopening_a_registry_keeps_its_data_and_artifact_folder(tmp_path) -> None:
    first, _token = rk.Registry.create(tmp_path / "reg", artifacts=tmp_path / "blobs", admin="r")
    assert first.generation() == 0
    second = rk.Registry(tmp_path / "reg")
    assert second.blobs.root == (tmp_path / "blobs").resolve()
