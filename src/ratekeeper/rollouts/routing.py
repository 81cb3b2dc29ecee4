"""The engine side of rollouts, one per serving process: which arm prices a policy, the shadow
pricing off the request path, the guards, and the two moves a server makes by itself.

On the request path: ``route(name)`` is one dictionary read (None when the model has no active
rollout), and ``Route.challenger_gets`` one SHA-256 of a short string (``hashing.py``). The
other model's price (a shadow's, or the sample a canary compares) is computed by one background
thread from a bounded queue: a full queue drops the comparison (counted), never the quote, and
a failing challenger never fails a customer's quote (a canary falls back to the champion's price
and counts the failure).

That thread also judges the guards every ``DRAIN_SECONDS`` and writes a snapshot of them to the
registry every ``snapshot_seconds``. A breach takes this process's route away at once, then
records the rollback in the registry (``roll_back_rollout``: an audit event and a generation
bump), which every other worker and replica follows at its next poll of the generation counter
(0.2 s by default). Staged steps are taken by ``tick()``, called by the watcher loop after each
poll: the first server to find a step baked takes it (the registry re-reads under its write lock,
so a step is taken once).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256 as _sha256
from typing import TYPE_CHECKING, Any

from ratekeeper.errors import RatekeeperError
from ratekeeper.packaging.signature import CATEGORICAL
from ratekeeper.rollouts import hashing
from ratekeeper.rollouts.guarding import GuardStats
from ratekeeper.rollouts.rollout import Rollout

if TYPE_CHECKING:
    from ratekeeper.engine.scorer import Scorer

log = logging.getLogger("ratekeeper.rollouts")

CHAMPION, CHALLENGER = "champion", "challenger"
QUEUE_SIZE = 10_000
"""Comparisons waiting for the background thread, per process; beyond it they are dropped."""
# Policies priced per call in the background (one vectorised call per model), then the GIL is
# handed back (``time.sleep(0)``): the serving thread must get it within a fraction of a
# millisecond. Measured at 1,000 quotes/s with a 100 % shadow (2 workers, 2 shared cores):
# batches of 256 raised the quote p99 by 88 %; see docs/rollouts.md for the numbers now.
BATCH = 64
DRAIN_SECONDS = 0.02
"""How often the background thread prices what is queued and judges the guards."""
SWITCH_INTERVAL = 0.001
SNAPSHOT_SECONDS = 5.0

ShadowRecord = Callable[
    [str, str, "Scorer", Mapping[str, Any], float, "Scorer", float | None], None
]
"""(quote_id, endpoint, champion, policy, champion's price, challenger, its price or None)."""
Job = tuple["Route", Mapping[str, Any], str, float, str | None, str]
"""(route, policy, the arm that priced it, its price, quote id to record or None, endpoint)."""


class Route:
    """One model's active rollout as this process serves it (rebuilt at each registry change).

    A plain slotted class with what ``price`` reads precomputed: attribute chains and frozen
    dataclasses cost tenths of a microsecond each on a path measured in single microseconds.
    """

    __slots__ = (
        "challenger", "champion", "factors", "key", "prefix", "rollout", "sample", "shadow",
        "stats", "threshold",
    )  # fmt: skip

    def __init__(
        self,
        rollout: Rollout,
        champion: Scorer,
        challenger: Scorer,
        stats: GuardStats,
        threshold: int,
        key: str | None,
        factors: tuple[str, ...],
    ) -> None:
        self.rollout, self.champion, self.challenger, self.stats = (
            rollout, champion, challenger, stats,
        )  # fmt: skip
        self.threshold, self.key, self.factors = threshold, key, factors
        self.shadow = rollout.mode == "shadow"
        self.sample = rollout.guards.sample
        self.prefix = f"{rollout.name}{hashing.SEPARATOR}".encode()

    def challenger_gets(self, policy: Mapping[str, Any]) -> bool:
        """Canary, staged: the policy gets the challenger's price. Shadow: it is also priced by
        the challenger in the background. (``hashing.bucket``, inlined.)"""
        if self.threshold >= hashing.BUCKETS:
            return True
        key = hashing.policy_key(policy, self.key, self.factors)
        digest = _sha256(self.prefix + key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % hashing.BUCKETS < self.threshold


@dataclass(slots=True)
class Priced:  # not frozen: a frozen dataclass costs ~0.9 µs to make here, a slotted one ~0.2
    scorer: Scorer
    arm: str
    price: float
    recorded: bool = False
    """The engine records this quote in the ledger itself (a shadow's row, with both prices)."""

    @property
    def served_by(self) -> str:
        return "Production" if self.arm == CHAMPION else CHALLENGER


class RolloutEngine:
    def __init__(
        self,
        registry: Any,
        *,
        queue_size: int = QUEUE_SIZE,
        snapshot_seconds: float = SNAPSHOT_SECONDS,
        on_shadow: ShadowRecord | None = None,
    ) -> None:
        self.registry = registry
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        self._routes: dict[str, Route] = {}
        self._rollouts: dict[str, Rollout] = {}
        self._stats: dict[int, GuardStats] = {}
        self._broken: set[int] = set()
        self._queue: deque[Job] = deque()
        self._queue_size = queue_size
        self._snapshot_seconds = snapshot_seconds
        self._on_shadow = on_shadow
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rollbacks: list[tuple[str, int, str]] = []
        """(model, rollout id, why) for each rollback this process started."""

    # -- the request path ---------------------------------------------------------------------
    def route(self, name: str) -> Route | None:
        return self._routes.get(name)

    def price(
        self, route: Route, policy: Mapping[str, Any], quote_id: str | None, endpoint: str
    ) -> Priced:
        """Price one policy under the rollout; raises only what the champion raises."""
        stats = route.stats
        chosen = route.challenger_gets(policy)
        if route.shadow or not chosen:
            price = route.champion.predict_one(policy)
            stats.champion_quotes += 1
            recorded = False
            if route.shadow:
                if chosen:
                    self._submit(route, policy, CHAMPION, price, quote_id, endpoint)
                    recorded = quote_id is not None and self._on_shadow is not None
            elif route.sample and random.random() < route.sample:
                self._submit(route, policy, CHAMPION, price, None, endpoint)
            return Priced(route.champion, CHAMPION, price, recorded)
        started = time.perf_counter()
        try:
            price = route.challenger.predict_one(policy)
        except Exception as exc:  # a crafted or broken challenger: the champion answers
            fallback = route.champion.predict_one(policy)  # raises for a bad policy: a 4xx
            stats.challenger_quotes += 1
            stats.challenger_errors += 1
            if not isinstance(exc, RatekeeperError):
                log.warning("challenger %s failed: %s", route.challenger, type(exc).__name__)
            return Priced(route.champion, CHAMPION, fallback)
        stats.timed((time.perf_counter() - started) * 1000)
        stats.challenger_quotes += 1
        if route.sample and random.random() < route.sample:
            self._submit(route, policy, CHALLENGER, price, None, endpoint)
        return Priced(route.challenger, CHALLENGER, price)

    def _submit(
        self,
        route: Route,
        policy: Mapping[str, Any],
        arm: str,
        price: float,
        quote_id: str | None,
        endpoint: str,
    ) -> bool:
        """Queue the other model's pricing of this policy; False when the queue was full."""
        if len(self._queue) >= self._queue_size:
            route.stats.shadow_dropped += 1
            if quote_id is not None and self._on_shadow is not None:
                self._on_shadow(
                    quote_id, endpoint, route.champion, policy, price, route.challenger, None
                )
            return False
        self._queue.append((route, policy, arm, price, quote_id, endpoint))
        return True

    # -- following the registry (the watcher thread) ------------------------------------------
    def update(self, served: Mapping[str, Any], rollouts: Mapping[str, Rollout]) -> None:
        """Rebuild the routes from the served scorers (``Deployments``) and running rollouts."""
        routes: dict[str, Route] = {}
        for name, rollout in rollouts.items():
            slots = served.get(name)
            if rollout.status != "active" or rollout.id in self._broken or slots is None:
                continue
            champion, challenger = slots.production, slots.slots.get(CHALLENGER)
            if champion is None or challenger is None or challenger.version != rollout.version:
                continue  # not loaded here (a load failure is reported by /readyz)
            signature = champion.signature
            factors = tuple(f.name for f in signature.rating_factors)
            id_field = signature.id_field
            stats = self._stats.get(rollout.id)
            if stats is None:
                segment = [f.name for f in signature.rating_factors if f.kind == CATEGORICAL]
                stats = self._stats[rollout.id] = GuardStats(rollout.id, rollout.guards, segment)
            routes[name] = Route(
                rollout,
                champion,
                challenger,
                stats,
                hashing.threshold(rollout.percent),
                rollout.key or (id_field.name if id_field is not None else None),
                factors,
            )
        self._routes = routes  # one assignment: the request path sees the old or the new table
        self._rollouts = dict(rollouts)
        if routes and self._thread is None:
            self.start()

    def tick(self, now: datetime | None = None) -> None:
        """Take a staged step whose bake time is over (the guards holding here)."""
        now = now or datetime.now(UTC)
        for route in list(self._routes.values()):
            due = route.rollout.next_step_at()
            if due is not None and due <= now and route.stats.breach(route.rollout.guards) is None:
                self.registry.advance_rollouts(now)
                return

    # -- the background thread ----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        # A serving thread that wants the GIL while this one prices waits at most the switch
        # interval (5 ms by default) for it; 1 ms bounds what a shadow adds to a quote's wait.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ratekeeper-rollouts", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Price what is queued (so the ledger gets its shadow rows), then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._drain()

    def _run(self) -> None:
        # Woken on a clock, not per quote: at 500 quotes/s per worker, waking for each one
        # handed the GIL back and forth ~500 times a second and doubled the quotes' p99; every
        # DRAIN_SECONDS the queue is priced in vectorised groups instead.
        snapshot = time.monotonic()
        while not self._stop.wait(DRAIN_SECONDS):
            try:
                while self._drain(BATCH) == BATCH:
                    pass
                self._check_guards()
                now = time.monotonic()
                if now - snapshot >= self._snapshot_seconds:
                    snapshot = now
                    self._write_snapshots()
            except Exception:  # never let the thread die: log and go on
                log.exception("rollout thread")

    def _drain(self, limit: int | None = None) -> int:
        jobs: list[Job] = []
        while limit is None or len(jobs) < limit:
            try:
                jobs.append(self._queue.popleft())
            except IndexError:
                break
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            route, _policy, arm = job[0], job[1], job[2]
            other = route.challenger if arm == CHAMPION else route.champion
            groups.setdefault(id(other), []).append(job)
        for group in groups.values():
            self._price_group(group)
            time.sleep(0)  # let the serving thread run between groups
        return len(jobs)

    def _price_group(self, group: list[Job]) -> None:
        route, _policy, arm = group[0][0], group[0][1], group[0][2]
        other = route.challenger if arm == CHAMPION else route.champion
        started = time.perf_counter()
        try:
            outcomes: list[Any] = other.predict_each([job[1] for job in group])
        except Exception:  # a broken challenger: every one of them failed
            outcomes = [None] * len(group)
        each_ms = (time.perf_counter() - started) * 1000 / len(group)
        for (job_route, policy, job_arm, price, quote_id, endpoint), outcome in zip(
            group, outcomes, strict=True
        ):
            stats = job_route.stats
            other_price = outcome if isinstance(outcome, float) else None
            if job_arm == CHAMPION:  # the challenger priced it in the background
                stats.shadow_priced += 1
                stats.timed(each_ms)
                if other_price is None:
                    stats.challenger_errors += 1
                else:
                    stats.compare(price, other_price, job_route.rollout.guards.move, policy)
                if quote_id is not None and self._on_shadow is not None:
                    self._on_shadow(
                        quote_id, endpoint, job_route.champion, policy, price,
                        job_route.challenger, other_price,
                    )  # fmt: skip
            elif other_price is not None:  # a canary's challenger quote, compared
                stats.compare(other_price, price, job_route.rollout.guards.move, policy)

    def _check_guards(self) -> None:
        for name, route in list(self._routes.items()):
            why = route.stats.breach(route.rollout.guards)
            if why is not None:
                self._roll_back(name, route, why)

    def _roll_back(self, name: str, route: Route, why: str) -> None:
        rollout = route.rollout
        self._broken.add(rollout.id)
        self._routes = {k: v for k, v in self._routes.items() if k != name}  # 0 % here, now
        self.rollbacks.append((name, rollout.id, why))
        evidence = {k: v for k, v in route.stats.snapshot().items() if k != "segments"}
        evidence["worker"] = self.worker
        log.warning("rolling back the %s rollout of %s: %s", rollout.mode, name, why)
        try:
            done = self.registry.roll_back_rollout(name, rollout.id, why, evidence)
        except Exception:
            log.exception("could not record the rollback of %s", name)
            return
        webhook = rollout.guards.webhook
        if done is not None and webhook:
            body = {"event": "rollout.rollback", "model": name, "rollout": done.to_dict()}
            threading.Thread(target=_post, args=(webhook, body), daemon=True).start()

    def _write_snapshots(self) -> None:
        for route in list(self._routes.values()):
            snapshot = route.stats.snapshot()
            try:
                self.registry.record_guard_snapshot(route.rollout.id, self.worker, snapshot)
            except Exception:
                log.exception("could not record the guards of %s", route.rollout.name)

    def status(self) -> dict[str, Any]:
        return {
            name: {"rollout": r.rollout.id, "mode": r.rollout.mode, "percent": r.rollout.percent,
                   "queued": len(self._queue), **r.stats.snapshot()}
            for name, r in self._routes.items()
        }  # fmt: skip


def _post(url: str, body: dict[str, Any]) -> None:
    """Tell a webhook (best effort: a failure is logged, the rollback stands)."""
    data = json.dumps(body, default=str).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
    except Exception as exc:
        log.warning("the rollback webhook %s failed: %s", url, exc)
