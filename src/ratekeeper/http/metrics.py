"""Prometheus metrics of a rating server.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set by the server before the
workers start, and ``/metrics`` aggregates every worker's samples (prometheus_client's
multiprocess mode); with one process, samples live in memory.
"""

from __future__ import annotations

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
        # Label children, looked up once per (endpoint, model, version, outcome): .labels() takes a
        # lock and builds a key on every call, which shows on a quote's CPU profile.
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._priced: dict[tuple[str, str], Any] = {}

    def observe(
        self, endpoint: str, model: str, version: str, outcome: str, seconds: float
    ) -> None:
        key = (endpoint, model, version, outcome)
        children = self._children.get(key)
        if children is None:
            children = self.requests.labels(*key), self.latency.labels(*key)
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def priced(self, model: str, version: str, n: int) -> None:
        """Count ``n`` priced policies (/quote, /score and /invocations alike)."""
        child = self._priced.get((model, version))
        if child is None:
            child = self._priced[(model, version)] = self.policies.labels(model, version)
        child.inc(n)

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
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
