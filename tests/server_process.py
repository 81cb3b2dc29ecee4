"""Start a real `ratekeeper serve` process on 127.0.0.1 for a test, and always stop it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def rating_server(
    registry_folder: Path,
    *args: str,
    workers: int = 2,
    timeout: float = 60.0,
    registry: str | None = None,
) -> Iterator[int]:
    """``registry``: a registry URL to serve instead of the folder (which then keeps the log)."""
    port = free_port()
    # The form the rating-engine issue gives: `ratekeeper serve --registry URI ...`.
    command = [
        sys.executable,
        "-m",
        "ratekeeper",
        "serve",
        "--registry",
        registry or str(registry_folder),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        *args,
    ]
    log = open(registry_folder / f"server-{port}.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        deadline = time.monotonic() + timeout
        ready: set[int] = set()  # a worker listens only once loaded: wait to have seen them all
        while time.monotonic() < deadline:
            assert process.poll() is None, (registry_folder / f"server-{port}.log").read_text()
            try:
                status, body = request(port, "GET", "/readyz")
                if status == 200:
                    ready.add(body["worker"])
                    if len(ready) == workers:
                        break
                    continue
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise TimeoutError("the rating server did not become ready")
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    connection: http.client.HTTPConnection | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    own = connection is None
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        sent = {"content-type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        data = response.read()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(data) if "json" in kind else data.decode()
    finally:
        if own:
            conn.close()


class SteadyQuotes:
    """Quotes of one policy at a steady rate on keep-alive connections (the hot-swap and
    replica tests); records (sent, received, status, version)."""

    def __init__(
        self, port: int, model: str, policy: dict, rate: float = 100.0, threads: int = 2
    ) -> None:
        self.port, self.policy, self.interval = port, policy, threads / rate
        self.path = f"/v1/models/{model}/quote"
        self.records: list[tuple[float, float, int, int | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        next_send = time.monotonic()
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                status, body = request(self.port, "POST", self.path, self.policy, connection=conn)
                version = body.get("version") if status == 200 else None
            except OSError:
                status, version = 0, None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.records.append((sent, time.monotonic(), status, version))
            next_send += self.interval
            time.sleep(max(0.0, next_send - time.monotonic()))
        conn.close()

    def __enter__(self) -> SteadyQuotes:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)
