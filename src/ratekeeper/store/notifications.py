"""Listening for generation bumps on PostgreSQL (LISTEN/NOTIFY), so replicas follow at once.

Every transaction that bumps the registry's generation also sends ``NOTIFY`` on
``database.GENERATION_CHANNEL`` (PostgreSQL delivers it when, and only if, the transaction
commits). A ``GenerationListener`` holds one autocommit connection of its own that LISTENs, and
calls ``wake()`` for each notification: the rating server's watcher then re-reads the counter.

The channel is an accelerator, never the only path: while the listener is not connected
(PostgreSQL restarting, a network cut) ``connected`` is False and the watcher polls at its fast
interval; the listener reconnects with backoff, and wakes the watcher once on every (re)connect
for whatever committed while nobody listened. A connection that dies silently (no FIN, no RST) is
found by TCP keepalives and by a ``SELECT 1`` whenever ``check_every`` seconds pass without a
notification.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from ratekeeper.store.database import GENERATION_CHANNEL

log = logging.getLogger("ratekeeper.engine")

_FIRST_RETRY_S = 0.1
_LAST_RETRY_S = 5.0
# libpq settings for the listening connection: fail a connect in 5 s, and find a peer that
# vanished silently within about 5 + 3 × 2 = 11 s (TCP keepalives) rather than hours.
_CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "application_name": "ratekeeper-listener",
}


def conninfo(url: sa.URL) -> str:
    """A libpq connection URI for a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://``)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class GenerationListener:
    """A daemon thread that LISTENs for generation bumps and calls ``wake`` on each."""

    def __init__(
        self,
        url: sa.URL,
        wake: Callable[[], None],
        stop: threading.Event,
        *,
        check_every: float = 1.0,
    ) -> None:
        self._conninfo = conninfo(url)
        self._wake = wake
        self._stop = stop
        self.check_every = check_every
        self.connected = False
        """True while listening: the watcher may poll slowly; False: it polls at full rate."""
        self.connects = 0
        """How many times the listener has connected (1 + reconnections)."""
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._run, name="ratekeeper-listener", daemon=True)
        self._thread.start()
        return self._thread

    def _run(self) -> None:
        import psycopg

        delay = _FIRST_RETRY_S
        while not self._stop.is_set():
            try:
                self._listen()
                delay = _FIRST_RETRY_S
            except psycopg.Error as exc:
                if self.connected:
                    log.warning(
                        "registry notifications lost (%s); polling until they are back",
                        _first_line(exc),
                    )
                else:
                    log.debug("cannot listen for registry notifications: %s", _first_line(exc))
            except Exception:  # never let the listener die: the watcher polls meanwhile
                log.exception("registry notification listener failed")
            self.connected = False
            self._stop.wait(delay)
            delay = min(delay * 2, _LAST_RETRY_S)
        self._wake()  # let the watcher see the stop at once

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(self._conninfo, autocommit=True, **_CONNECT_OPTIONS) as conn:
            conn.execute(f"LISTEN {GENERATION_CHANNEL}")
            self.connected = True
            self.connects += 1
            if self.connects > 1:
                log.warning("registry notifications are back")
            self._wake()  # what committed while nobody listened
            while not self._stop.is_set():
                heard = False
                for _notify in conn.notifies(timeout=self.check_every):
                    heard = True
                    self._wake()
                if not heard:
                    conn.execute("SELECT 1")  # a dead connection raises here


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
