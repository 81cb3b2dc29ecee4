"""Prometheus metrics of a rating server.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set by the server before the
workers start, and ``/metrics`` aggregates every worker's samples (prometheus_client's
multiprocess mode); with one process, samples live in memory.

The pricing routes count every request (``observe``, ``priced``), so those counts are plain
Python numbers in lists, added to on the event loop's thread: no lock, no label lookup, no
write to a memory-mapped file per quote (prometheus_client's ``inc`` and ``observe`` took
~2 µs of a quote's CPU, a lock and a file write each). ``fold()`` adds what was counted since
its last call to the prometheus_client metrics: at every scrape, and with several workers every
``FOLD_SECONDS`` on the worker's event loop (``start()``), since a scrape reaches one worker and
reads the others' from their files. So with several workers ``/metrics`` may lag a worker's
last quarter second. On the event loop, not in a thread of its own: a thread that wakes wants
the GIL, and the loop's thread may hold it up to the switch interval (5 ms) before yielding.
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
FOLD_SECONDS = 0.25
_COUNT, _SUM, _BUCKET = 0, 1, 2  # a request cell: count, sum of seconds, then one per bucket


class Metrics:
    def __init__(self, *, multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ratekeeper_requests",
            "Pricing requests by endpoint, model, version and outcome.",
            ["endpoint", "model", "version", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ratekeeper_request_duration_seconds",
            "Time to answer a pricing request, by endpoint, model, version and outcome.",
            ["endpoint", "model", "version", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.policies = Counter(
            "ratekeeper_policies_priced",
            "Policies priced, by model and version.",
            ["model", "version"],
            registry=self.registry,
        )
        self.swaps = Counter(
            "ratekeeper_model_swaps",
            "Model versions swapped in, by model and slot.",
            ["model", "slot"],
            registry=self.registry,
        )
        self.load_failures = Counter(
            "ratekeeper_model_load_failures",
            "Versions that failed to load (and were refused).",
            ["model", "version"],
            registry=self.registry,
        )
        self.served_version = Gauge(
            "ratekeeper_served_version",
            "The version served, by model and slot.",
            ["model", "slot"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )

        self.ledger_rows = Counter(
            "ratekeeper_ledger_rows",
            "Priced policies written to the quote ledger, or dropped (the disk refused writes).",
            ["outcome"],
            registry=self.registry,
        )
        self.ledger_write_errors = Counter(
            "ratekeeper_ledger_write_errors",
            "Failed writes of the quote ledger (rows are kept and retried).",
            registry=self.registry,
        )
        # The ledger's local spool while it is shipped to object storage (every worker measures
        # the same shared folder: the largest recent value is the answer).
        self.ledger_spool = Gauge(
            "ratekeeper_ledger_spool",
            "The quote ledger's local spool not yet in the object store: bytes and segments.",
            ["unit"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.ledger_uploads = Counter(
            "ratekeeper_ledger_uploads",
            "Ledger segments shipped to the object store, and failed upload rounds.",
            ["outcome"],
            registry=self.registry,
        )
        # Counted on the hot path, folded into the metrics above by fold().
        self._cells: dict[tuple[str, str, str, str], list[Any]] = {}
        self._priced: dict[tuple[str, str], list[int]] = {}
        self._folded: dict[tuple[Any, ...], list[Any]] = {}  # what fold() has added so far
        self._fold_lock = threading.Lock()  # one fold at a time
        self._timer: asyncio.TimerHandle | None = None

    def observe(
        self, endpoint: str, model: str, version: str, outcome: str, seconds: float
    ) -> None:
        """Count one pricing request and its duration (called on the event loop's thread)."""
        cell = self._cells.get((endpoint, model, version, outcome))
        if cell is None:
            cell = [0, 0.0] + [0] * (len(LATENCY_BUCKETS) + 1)
            self._cells[(endpoint, model, version, outcome)] = cell
        cell[_COUNT] += 1
        cell[_SUM] += seconds
        cell[_BUCKET + bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: the first bound >= it

    def priced(self, model: str, version: str, n: int) -> None:
        """Count ``n`` priced policies (/quote, /score and /invocations alike)."""
        cell = self._priced.get((model, version))
        if cell is None:
            cell = self._priced[(model, version)] = [0]
        cell[0] += n

    def fold(self) -> None:
        """Add what was counted since the last fold to the prometheus_client metrics."""
        with self._fold_lock:
            for key, cell in list(self._cells.items()):
                now = cell[:]  # one copy, while the event loop may go on counting
                before = self._folded.get(key)
                if before == now:
                    continue
                before = before or [0] * len(now)
                self.requests.labels(*key).inc(now[_COUNT] - before[_COUNT])
                # Histogram.observe() puts one value in one bucket; these are many at once:
                # its per-bucket values and sum (prometheus_client 0.2x: _buckets, _sum).
                latency = self.latency.labels(*key)
                latency._sum.inc(now[_SUM] - before[_SUM])
                for i in range(_BUCKET, len(now)):
                    if now[i] != before[i]:
                        latency._buckets[i - _BUCKET].inc(now[i] - before[i])
                self._folded[key] = now
            for priced_key, counted in list(self._priced.items()):
                total = counted[0]
                done = self._folded.get(priced_key, [0])[0]
                if total != done:
                    self.policies.labels(*priced_key).inc(total - done)
                    self._folded[priced_key] = [total]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """With several workers: fold every FOLD_SECONDS on ``loop`` (the worker's)."""
        if not self.multiprocess or self._timer is not None:
            return

        def tick() -> None:
            self.fold()
            self._timer = loop.call_later(FOLD_SECONDS, tick)

        self._timer = loop.call_later(FOLD_SECONDS, tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.fold()

    def ledger_event(self, event: str, n: int) -> None:
        if event == "write_error":
            self.ledger_write_errors.inc(n)
        elif event in ("spool_bytes", "spool_segments"):
            self.ledger_spool.labels(event.removeprefix("spool_")).set(n)
        elif event in ("uploaded", "upload_error"):
            self.ledger_uploads.labels(event).inc(n)
        else:
            self.ledger_rows.labels(event).inc(n)

    def render(self) -> tuple[bytes, str]:
        self.fold()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
