"""Schema upgrades are their own step (`ratekeeper migrate`): opening a registry never migrates it.

A registry at an older revision is made for real: Alembic's own upgrade to 0002 on an empty
database, exactly what an older ratekeeper release left behind.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import ratekeeper as rk
from ratekeeper.cli.main import main
from ratekeeper.errors import InvalidInputError, SchemaVersionError
from ratekeeper.store import database
from ratekeeper.store.database import HEAD_REVISION

OLDER = "0002"


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def database_url(uri: str | Path) -> str:
    return str(uri) if "://" in str(uri) else f"sqlite:///{Path(uri).resolve() / 'registry.db'}"


def upgrade_to(uri: str | Path, revision: str) -> None:
    """The schema an older release migrated this database to."""
    engine = database.create_engine(database_url(uri))
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("ratekeeper.store") / "migrations")
    )
    with database.write_transaction(engine) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    engine.dispose()


def stored_revision(uri: str | Path) -> str:
    engine = database.create_engine(database_url(uri))
    try:
        found = database.revision(engine)
    finally:
        engine.dispose()
    assert found is not None
    return found


def test_an_older_schema_is_refused_until_migrate_upgrades_it(capsys, registry_uri) -> None:
    uri = str(registry_uri)
    upgrade_to(uri, OLDER)
    refused = (
        rf"schema revision {OLDER} and this ratekeeper needs {HEAD_REVISION}: run "
        r"`ratekeeper migrate` first \(a server never migrates a registry under load\)"
    )
    with pytest.raises(SchemaVersionError, match=refused) as info:
        rk.Registry(uri)
    assert (info.value.found, info.value.needed) == (OLDER, HEAD_REVISION)
    with pytest.raises(SchemaVersionError, match=refused):
        rk.Registry.create(uri, admin="root")
    assert stored_revision(uri) == OLDER  # neither the read nor the create touched it

    # The server refuses before any worker starts: one line, a non-zero exit (in process:
    # --no-ledger, so that the command does not set up metrics for several processes).
    code, out, err = run(capsys, "--registry", uri, "serve", "--port", "0", "--no-ledger")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: the registry at ")
    assert f"has schema revision {OLDER}" in err and "run `ratekeeper migrate`" in err

    code, out, _ = run(capsys, "--registry", uri, "migrate")
    upgraded = f"upgraded the registry schema from revision {OLDER} to {HEAD_REVISION}\n"
    assert (code, out) == (0, upgraded)
    assert stored_revision(uri) == HEAD_REVISION
    code, out, _ = run(capsys, "--registry", uri, "migrate")
    assert (code, out) == (0, f"the registry schema is already at revision {HEAD_REVISION}\n")

    # The schema holds no registry yet (0002 had none): init creates it on the new schema.
    registry, _token = rk.Registry.create(uri, admin="root", policy="open")
    assert registry.list_models() == []
    registry.close()


def test_migrate_creates_the_schema_of_an_empty_database_and_init_follows(
    capsys, registry_uri
) -> None:
    uri = str(registry_uri)
    if "://" not in uri:
        Path(uri).mkdir(parents=True)
        (Path(uri) / "registry.db").touch()  # an empty file, as a volume mount leaves one
    code, out, _ = run(capsys, "--registry", uri, "migrate")
    assert (code, out) == (0, f"created the registry schema at revision {HEAD_REVISION}\n")
    with pytest.raises(rk.NotFoundError, match="create one with `ratekeeper init --admin NAME`"):
        rk.Registry(uri)
    registry, _token = rk.Registry.create(uri, admin="root", policy="open")
    assert registry.policy == "open"
    registry.close()


def test_a_newer_schema_is_refused_by_open_and_by_migrate(capsys, registry_uri) -> None:
    uri = str(registry_uri)
    registry, _token = rk.Registry.create(uri, admin="root", policy="open")
    with registry.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    registry.close()
    newer = (
        r"has schema revision 0999, which this ratekeeper does not know "
        rf"\(its newest is {HEAD_REVISION}\): upgrade ratekeeper"
    )
    with pytest.raises(SchemaVersionError, match=newer):
        rk.Registry(uri)
    with pytest.raises(SchemaVersionError, match=newer):
        rk.Registry.migrate(uri)
    code, out, err = run(capsys, "--registry", uri, "migrate")
    assert code == 1 and out == "" and err.count("\n") == 1 and "upgrade ratekeeper" in err


def test_migrate_needs_a_registry_where_it_is_told(capsys, tmp_path) -> None:
    code, _out, err = run(capsys, "--registry", str(tmp_path / "nowhere"), "migrate")
    assert code == 3 and err.startswith(f"error: no registry at {tmp_path / 'nowhere'}")
    assert not (tmp_path / "nowhere").exists()  # nothing created on the way
    with pytest.raises(InvalidInputError, match="migrated where its database is reachable"):
        rk.Registry.migrate("http://127.0.0.1:9/")


def test_a_registry_at_the_newest_schema_opens_without_alembic(tmp_path) -> None:
    registry, _token = rk.Registry.create(tmp_path / "r", admin="root", policy="open")
    registry.close()
    assert stored_revision(tmp_path / "r") == HEAD_REVISION
    assert rk.Registry.migrate(tmp_path / "r") == (HEAD_REVISION, HEAD_REVISION)
