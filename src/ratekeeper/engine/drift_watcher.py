"""Live drift: PSI of the quotes a rating server priced, as Prometheus gauges, with a webhook.

Every ``interval`` seconds the watcher reads the quote ledger's last ``window`` for each served
model version, computes PSI per rating factor and for the prediction against the version's
frozen reference profile (``ratekeeper.monitoring.drift``: the same bins, exposure weights and
1e-4 floor as ``ratekeeper drift``), and sets::

    ratekeeper_drift_psi{model, version, factor}      factor = a rating factor or "prediction"
    ratekeeper_drift_status{model, version}           0 stable, 1 warn, 2 alert (worst band)
    ratekeeper_drift_quotes{model, version}           quotes in the window

The prediction's PSI uses the prices the ledger recorded (divided by the exposure): the watcher
never scores a policy again and loads no model. A window with fewer than ``min_quotes`` quotes
(``monitoring.drift.MIN_SAMPLE`` by default, as for ``ratekeeper drift``) is not judged: PSI on
a handful of policies is noise. When a version's status changes (stable → warn → alert, or
back), the watcher POSTs a JSON alert to the webhook, if one is configured; a failed POST is
retried at the next interval.

The watcher runs in a process of its own beside the workers, at a lower CPU priority: one PSI
computation and one alert per change whatever the number of workers, and no work in the
processes that answer quotes. Its gauges reach ``/metrics`` through Prometheus' multiprocess
folder.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ratekeeper.engine.ledger import inputs_table, read_ledger
from ratekeeper.engine.ledger_store import ledger_view
from ratekeeper.errors import NotFoundError, RatekeeperError
from ratekeeper.monitoring.drift import BAND_ORDER, MIN_SAMPLE, STABLE, Bands, drift
from ratekeeper.registry.entities import ModelVersion, Stage
from ratekeeper.registry.registry import Registry

if TYPE_CHECKING:
    from ratekeeper.artifacts.s3 import S3Objects

log = logging.getLogger("ratekeeper.drift")


@dataclass(frozen=True)
class DriftWatchConfig:
    ledger: Path
    interval: float = 60.0
    window: timedelta = timedelta(hours=1)
    min_quotes: int = MIN_SAMPLE
    bands: Bands = field(default_factory=Bands)
    webhook: str | None = None
    webhook_timeout: float = 5.0
    store: S3Objects | None = None
    """The ledger on object storage (``ledger`` is then its local spool)."""


class DriftGauges:
    def __init__(self, registry: CollectorRegistry | None, multiprocess: bool) -> None:
        mode: dict[str, Any] = {"multiprocess_mode": "livemostrecent"} if multiprocess else {}
        self.psi = Gauge(
            "ratekeeper_drift_psi",
            "PSI of the served quotes in the drift window against the version's reference "
            'profile, by rating factor ("prediction" for the premium).',
            ["model", "version", "factor"],
            registry=registry,
            **mode,
        )
        self.status = Gauge(
            "ratekeeper_drift_status",
            "Worst PSI band of the served quotes in the window: 0 stable, 1 warn, 2 alert.",
            ["model", "version"],
            registry=registry,
            **mode,
        )
        self.quotes = Gauge(
            "ratekeeper_drift_quotes",
            "Quotes in the drift window.",
            ["model", "version"],
            registry=registry,
            **mode,
        )
        self.alerts = Counter(
            "ratekeeper_drift_alerts",
            "Drift status changes posted to the webhook, by outcome (sent, failed).",
            ["outcome"],
            registry=registry,
        )


class DriftWatcher:
    def __init__(
        self,
        registry: Registry,
        config: DriftWatchConfig,
        gauges: DriftGauges,
        models: list[str] | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.gauges = gauges
        self.models = models
        self.statuses: dict[tuple[str, int], str] = {}
        """The last status posted (or, without a webhook, seen) per model version."""
        self._versions: dict[tuple[str, int], ModelVersion] = {}

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.config.interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive a bad interval
                log.exception("drift check failed")

    def check(self, now: datetime | None = None) -> dict[tuple[str, int], str]:
        """One round: every served Production version; returns the status of each judged one."""
        now = now or datetime.now(UTC)
        judged: dict[tuple[str, int], str] = {}
        for name, version in self._served():
            try:
                since = now - self.config.window
                with ledger_view(
                    self.config.ledger, self.config.store, model=name, version=version, since=since
                ) as root:
                    quotes = read_ledger(root, model=name, version=version, since=since)
            except NotFoundError:  # no ledger yet: nothing was quoted
                continue
            self.gauges.quotes.labels(name, str(version)).set(quotes.num_rows)
            if quotes.num_rows < self.config.min_quotes:
                continue
            try:
                # The ledger holds the prices given: the prediction's PSI uses them, so the
                # watcher scores nothing again (and needs no model loaded).
                report = drift(
                    self._version(name, version),
                    inputs_table(quotes),
                    prices=quotes.column("prediction"),
                    bands=self.config.bands,
                )
            except RatekeeperError as exc:
                log.warning("drift of %s v%d: %s", name, version, exc.message)
                continue
            for factor in report.all:
                self.gauges.psi.labels(name, str(version), factor.name).set(factor.psi)
            self.gauges.status.labels(name, str(version)).set(BAND_ORDER.index(report.status))
            judged[(name, version)] = report.status
            self._notify(name, version, report.status, report.to_dict(), now)
        return judged

    def _version(self, name: str, version: int) -> ModelVersion:
        found = self._versions.get((name, version))
        if found is None:
            found = self._versions[(name, version)] = self.registry.get_version(name, version)
        return found

    def _served(self) -> list[tuple[str, int]]:
        """The Production versions (of the served models): what the champion priced."""
        return [
            (v.name, v.version)
            for v in self.registry.list_versions(stage=Stage.PRODUCTION)
            if self.models is None or v.name in self.models
        ]

    def _notify(
        self, name: str, version: int, status: str, report: dict[str, Any], now: datetime
    ) -> None:
        key = (name, version)
        previous = self.statuses.get(key, STABLE)
        if status == previous:
            return
        if self.config.webhook is None:
            self.statuses[key] = status
            return
        alert = {
            "event": "ratekeeper.drift",
            "model": name,
            "version": version,
            "status": status,
            "previous_status": previous,
            "at": now.isoformat(timespec="seconds"),
            "window_seconds": self.config.window.total_seconds(),
            "quotes": report["rows"],
            "bands": report["bands"],
            "factors": [
                {"factor": f["name"], "psi": f["psi"], "band": f["band"]}
                for f in [*report["factors"], report["prediction"]]
                if f is not None
            ],
        }
        if post_json(self.config.webhook, alert, self.config.webhook_timeout):
            self.gauges.alerts.labels("sent").inc()
            self.statuses[key] = status
            log.warning("drift of %s v%d: %s (was %s), posted", name, version, status, previous)
        else:
            self.gauges.alerts.labels("failed").inc()


def post_json(url: str, body: dict[str, Any], timeout: float) -> bool:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "user-agent": "ratekeeper"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.error("cannot post the drift alert to %s: %s", url, exc)
        return False
