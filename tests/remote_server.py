"""A real rating server (uvicorn, in a thread, on a loopback port) over a registry, for tests of
the remote registry client: ``serving(registry)`` yields its base URL and always stops it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

import ratekeeper as rk
from ratekeeper.http.app import AppConfig, create_app
from ratekeeper.http.transport import OneWriteProtocol
from ratekeeper.registry.remote import RemoteRegistry


@contextmanager
def serving(registry: rk.Registry, config: AppConfig | None = None) -> Iterator[str]:
    with serving_app(registry, config) as (url, _app):
        yield url


@contextmanager
def serving_app(
    registry: rk.Registry, config: AppConfig | None = None
) -> Iterator[tuple[str, Any]]:
    """``serving``, yielding the application too (its ``state``), with the server's protocol."""
    app = create_app(registry, config or AppConfig(poll_interval=0.05))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            ws="none",
            access_log=False,
            http=OneWriteProtocol,  # as ``ratekeeper serve`` (the body handoff lives there)
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="rating-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the rating server stopped while starting"
            assert time.monotonic() < deadline, "the rating server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def remote_handle(url: str, token: str, **options: Any) -> rk.Registry:
    """``rk.Registry(url, token=...)``: the remote registry client."""
    return rk.Registry(url, token=token, **options)


class RemoteWithServerFiles(RemoteRegistry):
    """The remote client, plus the server's artifact store and database engine: for the contract
    tests that corrupt the server's blobs or run SQL on its database (the attack is on the
    server; what the client then sees is what is tested)."""

    def __init__(self, url: str, embedded: rk.Registry) -> None:
        from registries import token_of

        super().__init__(url, token=token_of(embedded))
        self.blobs = embedded.blobs
        self.engine = embedded.engine


@contextmanager
def remote_registry(embedded: rk.Registry) -> Iterator[rk.Registry]:
    """A rating server over ``embedded`` and a remote client acting with its token."""
    with serving(embedded) as url:
        remote = RemoteWithServerFiles(url, embedded)
        try:
            yield remote  # type: ignore[misc]
        finally:
            remote.close()
