"""Engines, transactions and migrations for SQLite and PostgreSQL.

Every dialect quirk of the registry store lives in this one module:

- SQLite runs in WAL mode (readers never block the writer) with a busy timeout, and every write
  transaction starts with ``BEGIN IMMEDIATE`` so that two writers serialise at the start of the
  transaction instead of failing at commit with "database is locked".
- SQLite uses ``synchronous=NORMAL``, set on every new connection: in WAL mode a commit appends to
  the WAL without an fsync, and the WAL is synced at each checkpoint. A committed transaction
  survives a crash of the process; a power cut or OS crash may lose the transactions committed
  since the last checkpoint, but never corrupts the database or leaves half a transaction.
- Switching a new SQLite file to WAL mode is retried: SQLite does not wait for that lock.
- PostgreSQL serialises writers of one model with ``SELECT ... FOR UPDATE`` on the model row.
- PostgreSQL serialises migrations (``ratekeeper migrate`` run twice at once, or with a
  ``Registry.create``) with a transaction-level advisory lock.
- ``INSERT ... ON CONFLICT DO NOTHING`` exists on both, under dialect-specific constructs.
- PostgreSQL tells rating servers of a generation bump with ``NOTIFY`` in the bumping transaction
  (delivered when, and only if, it commits; store/notifications.py listens). SQLite has no such
  channel: its servers poll.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ratekeeper.errors import InvalidInputError, SchemaVersionError
from ratekeeper.store import tables

HEAD_REVISION = "0004"
"""The newest migration: the schema this code reads and writes, and the only one it opens."""

_SQLITE_BUSY_TIMEOUT_MS = 60_000
_MIGRATION_LOCK_KEY = 0x7261_7465  # "rate": the PostgreSQL advisory lock held while migrating


def create_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(f"not a database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True)
    raise InvalidInputError(
        f"unsupported registry database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL"
    )


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy (not the driver) emit BEGIN, so that writes can use BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    # Turning a new database file to WAL needs it alone for a moment, and SQLite answers "database
    # is locked" at once, without its busy handler, when another process is opening it too.
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_on_begin(conn: sa.Connection) -> None:
    immediate = conn.get_execution_options().get("ratekeeper_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One write transaction: committed on success, rolled back on any exception."""
    with engine.connect() as conn:
        conn = conn.execution_options(ratekeeper_write=True)
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


# Built once (every stage and alias move runs it on PostgreSQL): building a SQLAlchemy statement
# and its cache key costs several times what the database takes to run it. The generation that
# rating servers watch is bumped by ``audit.append(bump_generation=True)``, in the UPDATE of
# ``registry_state`` that also moves the audit chain's head.
_LOCK_MODEL = (
    sa.select(tables.models.c.id)
    .where(tables.models.c.id == sa.bindparam("model_id"))
    .with_for_update()
)


def lock_model(conn: sa.Connection, model_id: int) -> bool:
    """Serialise writers of one model; True when a lock was taken (rows read before it may be
    stale). SQLite needs none: BEGIN IMMEDIATE already serialised the whole transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_MODEL, {"model_id": model_id})
        return True
    return False


GENERATION_CHANNEL = "ratekeeper_generation"
"""The PostgreSQL channel a generation bump is announced on (the payload is empty: listeners
re-read the counter, so notifications folded together by PostgreSQL lose nothing)."""
_NOTIFY_GENERATION = sa.select(sa.func.pg_notify(GENERATION_CHANNEL, ""))


def notify_generation(conn: sa.Connection) -> None:
    """Announce a generation bump to listening rating servers, in the caller's transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY_GENERATION)


def insert_ignoring_conflict(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert unless the key exists; True when this call inserted the row."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    result = conn.execute(insert(table).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)


def migrate(engine: sa.Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; returns (revision before, revision after).

    Only ``ratekeeper migrate`` (the deployment's migration step) and ``Registry.create`` call
    this: opening a registry never changes its schema (``check_schema``).
    """
    before = revision(engine)
    if before == HEAD_REVISION:
        return before, before
    if before is not None and before not in _known_revisions():
        raise _newer_schema(engine, before)
    from alembic import command

    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            # Two migrations at once: the second waits here, then finds the schema upgraded
            # (SQLite: already serialised by BEGIN IMMEDIATE).
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        config = _alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return before, HEAD_REVISION


def revision(engine: sa.Engine) -> str | None:
    """The schema revision of the database (``None``: no ratekeeper schema in it)."""
    with read_transaction(engine) as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        value = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)


def check_schema(engine: sa.Engine) -> str | None:
    """The revision, when it is the one this code reads and writes (or none at all, where no
    registry exists yet); SchemaVersionError for an older or a newer schema.

    A registry is upgraded by its own step (``ratekeeper migrate``, the deployment's migration
    job), never by whichever process opens it first: a rating server migrating under load would
    change the tables beneath the replicas still running the previous release.
    """
    found = revision(engine)
    if found is None or found == HEAD_REVISION:
        return found
    if found not in _known_revisions():
        raise _newer_schema(engine, found)
    raise SchemaVersionError(
        f"the registry at {_redact(engine)} has schema revision {found} and this ratekeeper "
        f"needs {HEAD_REVISION}: run `ratekeeper migrate` first (a server never migrates a "
        "registry under load)",
        found=found,
        needed=HEAD_REVISION,
    )


def _newer_schema(engine: sa.Engine, found: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"the registry at {_redact(engine)} has schema revision {found}, which this ratekeeper "
        f"does not know (its newest is {HEAD_REVISION}): upgrade ratekeeper",
        found=found,
        needed=HEAD_REVISION,
    )


def _redact(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("ratekeeper.store") / "migrations")
    )
    return config


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_alembic_config())
    return {script.revision for script in scripts.walk_revisions()}
