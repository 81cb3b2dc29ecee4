"""Running the rating engine: N uvicorn worker processes on one port.

Workers are forked from a parent that has imported the whole stack. Each worker opens its own
listening socket on the same address with ``SO_REUSEPORT``, so the
kernel spreads connections evenly over the workers (a single shared socket lets one worker take
nearly all of them). The socket is created with ``IPPROTO_TCP`` so that asyncio sets
``TCP_NODELAY`` on accepted connections (without it, small responses wait ~40 ms for the
client's delayed ACK). The parent process supervises: it restarts a worker that dies and stops
them all on SIGTERM or Ctrl-C. Metrics of all workers are aggregated through
prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ratekeeper.http.app import AppConfig
from ratekeeper.http.multiprocess import prepare_multiprocess_metrics
from ratekeeper.http.priority import background_priority
from ratekeeper.settings import Settings

log = logging.getLogger("ratekeeper.server")

GC_THRESHOLD = 50_000
"""Net allocations between two young-generation collections in a worker (CPython's: 700)."""


@dataclass(frozen=True)
class ServeConfig:
    settings: Settings
    registry_uri: str | None = None
    artifacts: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    app: AppConfig = field(default_factory=AppConfig)
    log_level: str = "info"


def serve(config: ServeConfig) -> None:
    _configure_logging(config.log_level)
    port = config.port or _free_port(config.host)
    config = replace(config, port=port)
    if config.workers <= 1 and config.app.drift is None:
        log.info("ratekeeper rating engine on http://%s:%d (1 worker)", config.host, port)
        run_worker(config, multiprocess=False)
        return
    metrics_dir = prepare_multiprocess_metrics()
    # Fork workers from a parent that has already imported the whole stack (a spawned worker
    # would import it again, on cores its siblings share): start-to-ready drops by seconds. The
    # parent holds no database connection, session or thread of its own when it forks.
    import onnxruntime  # noqa: F401
    import uvicorn  # noqa: F401

    import ratekeeper.http.app  # noqa: F401

    context = multiprocessing.get_context("fork")
    workers: list[Any] = []
    stopping = False

    def start_worker() -> Any:
        process = context.Process(target=run_worker, args=(config, True), daemon=False)
        process.start()
        return process

    def start_watcher() -> Any:
        process = context.Process(target=run_drift_watcher, args=(config,), daemon=False)
        process.start()
        return process

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "ratekeeper rating engine on http://%s:%d (%d workers)", config.host, port, config.workers
    )
    try:
        # With several workers, one process of its own watches drift (one alert per change).
        starts = [start_worker] * config.workers
        if config.app.drift is not None:
            starts.append(start_watcher)
        workers = [start() for start in starts]
        while not stopping:
            time.sleep(0.2)
            for i, process in enumerate(workers):
                if not process.is_alive() and not stopping:
                    log.error(
                        "%s %s exited with %s; starting a new one",
                        "worker" if starts[i] is start_worker else "drift watcher",
                        process.pid,
                        process.exitcode,
                    )
                    _mark_dead(process.pid)
                    workers[i] = starts[i]()
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
        for process in workers:
            process.join(timeout=10)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def run_worker(config: ServeConfig, multiprocess: bool) -> None:
    import uvicorn

    from ratekeeper.http.app import create_app
    from ratekeeper.registry.registry import Registry

    _configure_logging(config.log_level)
    registry = Registry(config.registry_uri, artifacts=config.artifacts, settings=config.settings)
    app = create_app(
        registry,
        replace(config.app, multiprocess_metrics=multiprocess, freeze_after_load=True),
    )
    app.state.load_models()  # before listening: a worker takes connections only once loaded
    # Everything loaded so far lives as long as the worker: keep it out of the collector's full
    # passes, which would otherwise walk every object of the models and libraries and pause the
    # event loop for tens of milliseconds now and then.
    gc.freeze()
    # Answering a quote leaves no cyclic garbage, but at CPython's default threshold (700 net
    # allocations) any burst of allocation — the ledger's writes, a large /score body — starts
    # a collection that pauses the event loop (1-12 ms for the older generation, measured at
    # 1,000 quotes/s). At 50,000 a worker collects every few minutes instead of several times a
    # second; each pass still only walks the young objects alive at that moment.
    gc.set_threshold(GC_THRESHOLD, 10, 10)
    sock = listening_socket(config.host, config.port)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=config.log_level,
            access_log=False,
            http="httptools",
            loop="uvloop" if _has("uvloop") else "asyncio",
            timeout_graceful_shutdown=10,
        )
    )
    server.run(sockets=[sock])


def run_drift_watcher(config: ServeConfig) -> None:
    """The drift watcher's own process: its gauges reach /metrics through the shared folder."""
    import threading

    from ratekeeper.engine.drift_watcher import DriftGauges, DriftWatcher
    from ratekeeper.registry.registry import Registry

    assert config.app.drift is not None
    _configure_logging(config.log_level)
    background_priority()  # the workers answering quotes come first; a drift check can wait
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    registry = Registry(config.registry_uri, artifacts=config.artifacts, settings=config.settings)
    gauges = DriftGauges(None, multiprocess=True)
    DriftWatcher(registry, config.app.drift, gauges, config.app.models).run(stop)


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _mark_dead(pid: int | None) -> None:
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    )
