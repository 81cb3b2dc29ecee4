"""Versions pinned by a request (``?version=N``): loaded off the event loop, bounded, rate-limited.

Loading a version costs milliseconds to seconds (a 60 MB GBM: ~150 ms). Done on the event loop,
an anonymous client cycling ``?version=`` over 18 versions raised every quote's p50 from 0.4 ms
to 152 ms. Here a load runs in a small thread pool of its own (``LOADS_AT_ONCE`` at a time,
concurrent requests for the same version share one load), at most ``CACHE_SIZE`` pinned scorers
are kept (least recently used out first), and each client may start ``COLD_LOADS_PER_MINUTE``
loads per minute; beyond that it gets ``RateLimitedError`` (HTTP 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ratekeeper.engine.deployments import load_error
from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import RatekeeperError, RateLimitedError, UnavailableError

log = logging.getLogger("ratekeeper.engine")

CACHE_SIZE = 8
"""Pinned scorers kept per process (a GBM of 60 MB each at most: ~0.5 GB)."""
LOADS_AT_ONCE = 2
"""Pinned versions loading at the same time per process (the rest wait their turn)."""
COLD_LOADS_PER_MINUTE = 10
"""Loads one client (a token's user, else an IP address) may start per minute."""


class RateLimiter:
    """At most ``limit`` events per client in any ``window`` seconds (a sliding window)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._events: dict[str, deque[float]] = {}

    def take(self, client: str, what: str) -> None:
        now = time.monotonic()
        events = self._events.get(client)
        if events is None:
            if len(self._events) > 10_000:  # forget idle clients rather than grow without end
                recent = now - self.window
                self._events = {k: v for k, v in self._events.items() if v and v[-1] > recent}
            events = self._events.setdefault(client, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            wait = max(1, math.ceil(events[0] + self.window - now))
            raise RateLimitedError(
                f"at most {self.limit} {what} per {self.window:g} s per client: retry in {wait} s",
                retry_after=wait,
            )
        events.append(now)


class PinnedVersions:
    """Scorers of pinned versions; ``get`` is called on the event loop and never blocks it."""

    def __init__(
        self,
        load: Callable[[str, int], Scorer],
        *,
        size: int = CACHE_SIZE,
        at_once: int = LOADS_AT_ONCE,
        per_minute: int = COLD_LOADS_PER_MINUTE,
    ) -> None:
        self._load = load
        self.size = size
        self._cache: OrderedDict[tuple[str, int], Scorer] = OrderedDict()
        self._loading: dict[tuple[str, int], Future[Scorer]] = {}
        self._at_once = at_once
        self._pool: ThreadPoolExecutor | None = None  # made on the first load (and after close)
        self._limiter = RateLimiter(per_minute)
        self._lock = threading.Lock()  # the cache is also read by tests from other threads
        self.loads = 0
        """Loads started (cache misses that were not rate-limited)."""

    def cached(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._cache)

    async def get(self, name: str, version: int, client: str) -> Scorer:
        key = (name, version)
        with self._lock:
            scorer = self._cache.get(key)
            if scorer is not None:
                self._cache.move_to_end(key)
                return scorer
        future = self._loading.get(key)
        if future is None or (future.done() and future.exception() is not None):
            self._limiter.take(client, "loads of versions that are not cached")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._at_once, thread_name_prefix="ratekeeper-pin")
            future = self._pool.submit(self._load_one, name, version)
            self._loading[key] = future
            self.loads += 1
        try:
            scorer = await asyncio.wrap_future(future)
        finally:
            if future.done() and self._loading.get(key) is future:
                del self._loading[key]
        with self._lock:
            self._cache[key] = scorer
            self._cache.move_to_end(key)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return scorer

    def _load_one(self, name: str, version: int) -> Scorer:
        try:
            return self._load(name, version)
        except RatekeeperError:
            raise
        except Exception as exc:  # a crafted package raises anything: never a 500
            log.error("cannot load %s version %d", name, version, exc_info=True)
            raise UnavailableError(
                f"{name} version {version} failed to load: {load_error(exc)}"
            ) from None

    def close(self) -> None:
        """Stop loading (the app's shutdown); an app started again makes a new pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
