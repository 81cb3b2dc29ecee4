"""Prometheus metrics of a rating server.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set by the server before the
workers start, and ``/metrics`` aggregates every worker's samples (prometheus_client's
multiprocess mode); with one process, samples live in memory.
"""

from __future__ import annotations

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

    def observe(
        self, endpoint: str, model: str, version: str, outcome: str, seconds: float
    ) -> None:
        self.requests.labels(endpoint, model, version, outcome).inc()
        self.latency.labels(endpoint, model, version, outcome).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
