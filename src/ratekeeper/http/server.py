"""Running the rating engine: N uvicorn worker processes on one port.

Workers are forked from a parent that has imported the whole stack. Each worker opens its own
listening socket on the same address with ``SO_REUSEPORT``, so the
kernel spreads connections evenly over the workers (a single shared socket lets one worker take
nearly all of them). The socket is created with ``IPPROTO_TCP`` so that asyncio sets
``TCP_NODELAY`` on accepted connections (without it, small responses wait ~40 ms for the
client's delayed ACK). The parent process supervises: it restarts a worker that dies and stops
them all on SIGTERM or Ctrl-C. A worker that dies before it ever listened is not restarted: the
start failed, and restarting it would only fail again (a crash loop seen at 87 restarts in 20 s);
the parent stops the others and exits non-zero. Before any worker starts, the parent claims the
address (http/startup.py), so a port in use or a second server on it is refused with one line.
Metrics of all workers are aggregated through prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ratekeeper.errors import RatekeeperError, UnavailableError
from ratekeeper.http.app import AppConfig
from ratekeeper.http.multiprocess import prepare_multiprocess_metrics
from ratekeeper.http.priority import background_priority
from ratekeeper.http.startup import TLSFiles, claim_port
from ratekeeper.settings import Settings

log = logging.getLogger("ratekeeper.server")

GC_THRESHOLD = 50_000
"""Net allocations between two young-generation collections in a worker (CPython's: 700)."""

RESTARTS_PER_MINUTE = 10
"""Worker restarts the parent allows in any minute; beyond, it stops (the failure is not
transient: an orchestrator restarting the whole server, with backoff, is the better judge)."""

SHUTDOWN_GRACE_SECONDS = 10
"""In-flight requests get this long to finish after SIGTERM; the ledger then seals its segment.
Kubernetes' terminationGracePeriodSeconds must leave room for both (deploy/kubernetes)."""


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
    tls: TLSFiles | None = None
    """Serve HTTPS with this certificate and key (http/startup.py checked them)."""
    pricing_tokens: tuple[bytes, ...] = ()
    """SHA-256 digests of the pricing tokens: none = pricing open (http/pricing_gate.py)."""


def serve(config: ServeConfig) -> None:
    _configure_logging(config.log_level)
    port = config.port or _free_port(config.host)
    config = replace(config, port=port)
    claim = claim_port(config.host, port)  # held until this process exits
    try:
        _serve(config)
    finally:
        if claim is not None:
            claim.close()


def _serve(config: ServeConfig) -> None:
    port = config.port
    scheme = "https" if config.tls else "http"
    if config.workers <= 1 and config.app.drift is None:
        log.info("ratekeeper rating engine on %s://%s:%d (1 worker)", scheme, config.host, port)
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
    started: dict[int | None, Any] = {}  # pid → the event a worker sets once it listens
    restarts: list[float] = []
    stopping = False

    def start_worker() -> Any:
        listening = context.Event()
        process = context.Process(target=_worker_main, args=(config, listening), daemon=False)
        process.start()
        started[process.pid] = listening
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
        "ratekeeper rating engine on %s://%s:%d (%d workers)",
        scheme,
        config.host,
        port,
        config.workers,
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
                    what = "worker" if starts[i] is start_worker else "drift watcher"
                    listening = started.pop(process.pid, None)
                    if listening is not None and not listening.is_set():
                        raise UnavailableError(
                            f"the server did not start: a {what} exited with code "
                            f"{process.exitcode} before it listened (its error is above)"
                        )
                    now = time.monotonic()
                    restarts[:] = [t for t in restarts if t > now - 60] + [now]
                    if len(restarts) > RESTARTS_PER_MINUTE:
                        raise UnavailableError(
                            f"stopping: workers died {len(restarts)} times in a minute "
                            "(their errors are above)"
                        )
                    log.error(
                        "%s %s exited with %s; starting a new one",
                        what,
                        process.pid,
                        process.exitcode,
                    )
                    _mark_dead(process.pid)
                    workers[i] = starts[i]()
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS + 10  # for all: they stop together
        for process in workers:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in workers:  # never left behind: the interpreter's exit would wait for it
            if process.is_alive():
                log.error("worker %s did not stop on SIGTERM; killing it", process.pid)
                process.kill()
                process.join(timeout=10)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _worker_main(config: ServeConfig, listening: Any) -> None:
    """A forked worker: one line and exit code 1 for an error of ours (no traceback)."""
    # The fork copied the parent's handlers, which only set the parent's flag: a SIGTERM while
    # the worker still loads its models (before uvicorn installs its own) was ignored, and the
    # worker went on to serve with no parent (seen in a test that stopped a server at once).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        run_worker(config, multiprocess=True, listening=listening)
    except (RatekeeperError, OSError) as exc:
        message = exc.message if isinstance(exc, RatekeeperError) else str(exc)
        log.error("worker %d cannot start: %s", os.getpid(), message)
        sys.exit(1)


def run_worker(config: ServeConfig, multiprocess: bool, listening: Any = None) -> None:
    import uvicorn

    from ratekeeper.http.app import create_app
    from ratekeeper.http.auth import TokenAuth
    from ratekeeper.http.pricing_gate import PricingGate
    from ratekeeper.http.transport import OneWriteProtocol
    from ratekeeper.registry.registry import Registry

    _configure_logging(config.log_level)
    registry = Registry(config.registry_uri, artifacts=config.artifacts, settings=config.settings)
    app = create_app(
        registry,
        replace(config.app, multiprocess_metrics=multiprocess, freeze_after_load=True),
    )
    served: Any = app
    if config.pricing_tokens:
        served = PricingGate(app, config.pricing_tokens, TokenAuth(registry))
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
    if listening is not None:
        listening.set()
    server = uvicorn.Server(
        uvicorn.Config(
            served,
            log_level=config.log_level,
            access_log=False,
            http=OneWriteProtocol,  # httptools, one write per response (http/transport.py)
            loop="uvloop" if _has("uvloop") else "asyncio",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            ssl_certfile=str(config.tls.certfile) if config.tls else None,
            ssl_keyfile=str(config.tls.keyfile) if config.tls else None,
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
