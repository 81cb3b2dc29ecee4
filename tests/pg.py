"""A private, throwaway PostgreSQL 15 server for one test run.

``initdb`` refuses to run as root, so when the tests run as root (as CI does) ``initdb`` and
``pg_ctl`` run through ``runuser -u postgres --``, on a data folder owned by ``postgres`` in a
temporary folder that user can read. The server listens on 127.0.0.1 only, on a free port, with
trust authentication and without durability (``fsync=off``): it exists only for the tests.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
INSTALL_HINT = "apt-get install -y postgresql"
_TIMEOUT_S = 60


def unavailable_reason() -> str | None:
    """Why this machine cannot start a test server (``None`` when it can)."""
    missing = [name for name in ("initdb", "pg_ctl") if not (PG_BIN / name).is_file()]
    if missing:
        return f"PostgreSQL 15 server binaries not found in {PG_BIN}: run `{INSTALL_HINT}`"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "`runuser` not found (needed to run initdb as the postgres user)"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return f"no 'postgres' OS user (initdb refuses root): run `{INSTALL_HINT}`"
    if importlib.util.find_spec("psycopg") is None:
        return "the psycopg driver is not installed: pip install 'psycopg[binary]'"
    return None


class PostgresServer:
    """``start()``, then ``create_database()`` per test, then ``stop()``."""

    def __init__(self) -> None:
        self.port = 0
        # Not under /root: the postgres user must be able to reach the data folder.
        self.base = Path(tempfile.mkdtemp(prefix="ratekeeper-pg-", dir="/tmp"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        for _attempt in range(3):  # a free port can be taken before the server binds it
            self.port = _free_port()
            started = self._start_on_port()
            if started.returncode == 0:
                return
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        raise RuntimeError(f"the test PostgreSQL server did not start:\n{started.stdout}\n{log}")

    def _start_on_port(self) -> subprocess.CompletedProcess[str]:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        return self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(_TIMEOUT_S),
            "-o",
            options,
            "start",
            check=False,
        )

    def shut_down(self) -> None:
        """Stop the server as an operator would (clients are disconnected); data kept."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start_again(self) -> None:
        """Start the server again after ``shut_down``, on the same port."""
        started = self._start_on_port()
        if started.returncode != 0:
            raise RuntimeError(f"the test PostgreSQL server did not restart:\n{started.stdout}")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False
                )
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of ``template``, which nobody may be connected to);
        returns its name."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        # FILE_COPY copies the template's files instead of WAL-logging every block (PostgreSQL
        # 15's default): about ten times faster for a server without durability.
        copy = f' TEMPLATE "{template}"' if template else ""
        self._admin(f'CREATE DATABASE "{name}"{copy} STRATEGY FILE_COPY')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True, connect_timeout=_TIMEOUT_S) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(PG_BIN / program), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S + 30,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
