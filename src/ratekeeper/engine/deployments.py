"""What a rating server serves right now, and how it follows the registry (hot swap).

A ``Deployments`` object maps each served model to its Production scorer and to the scorers of
its aliases. ``refresh()`` reads the registry's generation counter (bumped by every stage and
alias move, by any process); when it changed, it loads the versions now wanted *beside* the old
ones and then replaces the whole table in one assignment. A request holds the scorer it started
with, so in-flight requests finish on the old version and no request ever sees a half-loaded
one. A version that fails to load is refused, whatever the exception (a missing or corrupted
artifact, a graph onnxruntime rejects, a KeyError in a crafted manifest, memory): the slot keeps
its old scorer, the failure is reported by ``status()`` and counted, and the next generation is
followed as usual. Versions pinned by a request (``?version=N``) live in ``engine/pinned.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import NotFoundError, RatekeeperError, UnavailableError
from ratekeeper.registry.entities import ModelVersion, Stage
from ratekeeper.registry.registry import Registry
from ratekeeper.rollouts.rollout import Rollout
from ratekeeper.store.notifications import GenerationListener

log = logging.getLogger("ratekeeper.engine")
PRODUCTION = Stage.PRODUCTION.value  # read per quote: an Enum's .value is a descriptor call

LISTENING_POLL_S = 1.0
"""Seconds between two reads of the generation while PostgreSQL notifications arrive: a safety
net only (a notification reaches every replica within milliseconds; docs/serving.md)."""


@dataclass(frozen=True)
class Served:
    """One model's live scorers: ``slots`` maps "Production" or an alias to a scorer."""

    name: str
    slots: dict[str, Scorer]

    @property
    def production(self) -> Scorer | None:
        return self.slots.get(PRODUCTION)


@dataclass
class LoadFailure:
    name: str
    version: int
    slot: str
    error: str
    at: float = field(default_factory=time.time)


class Deployments:
    def __init__(
        self,
        registry: Registry,
        models: list[str] | None = None,
        *,
        on_swap: Callable[[str, str, int], None] | None = None,
        on_failure: Callable[[LoadFailure], None] | None = None,
        on_refresh: Callable[[Deployments], None] | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """``on_refresh`` hears of each new table (the rollout engine rebuilds its routes);
        ``on_tick`` runs after every poll of the watcher (the rollout engine's staged steps)."""
        self.registry = registry
        self.explicit_models = list(models) if models else None
        self._table: dict[str, Served] = {}
        self._generation: int | None = None
        self._failures: dict[tuple[str, str], LoadFailure] = {}
        self._public: dict[str, frozenset[int]] = {}
        self.protected: frozenset[str] = frozenset()
        """The registry's protected aliases (moved only through an approved request)."""
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self._on_swap = on_swap
        self._on_failure = on_failure
        self._on_refresh = on_refresh
        self._on_tick = on_tick
        self.rollouts: dict[str, Rollout] = {}
        """model → its running rollout (active or paused), read with the table."""
        self.ready = False
        self._listener: GenerationListener | None = None

    # -- reading (the request path) ---------------------------------------------------------
    def served(self, name: str) -> Served:
        found = self._table.get(name)
        if found is None:
            if not self.ready:
                raise UnavailableError("the rating server is still loading its models")
            raise NotFoundError(f"model {name!r} is not served here")
        return found

    def scorer(self, name: str, *, alias: str | None = None) -> tuple[Scorer, str]:
        """The scorer of a slot and what it is served as (``Production`` or the alias)."""
        served = self.served(name)
        if alias is not None:
            scorer = served.slots.get(alias)
            if scorer is None:
                self._raise_if_failed(name, alias)
                raise NotFoundError(f"model {name!r} has no alias {alias!r} here")
            return scorer, alias
        production = served.slots.get(PRODUCTION)
        if production is None:
            self._raise_if_failed(name, PRODUCTION)
            raise NotFoundError(f"model {name!r} has no Production version")
        return production, PRODUCTION

    def slot_scorer(self, name: str, version: int) -> Scorer | None:
        """A scorer already loaded in one of the model's slots for this version, if any."""
        for scorer in self.served(name).slots.values():
            if scorer.version == version:
                return scorer
        return None

    def is_public(self, name: str, version: int) -> bool:
        """Whether anyone may price this version: the registry's Production version, the
        version of a protected alias, or a version in Staging (approved for it by the gates)."""
        return version in self._public.get(name, ())

    def _raise_if_failed(self, name: str, slot: str) -> None:
        failure = self._failures.get((name, slot))
        if failure is not None:
            raise UnavailableError(
                f"{name} version {failure.version} ({slot}) failed to load: {failure.error}"
            )

    def names(self) -> list[str]:
        return sorted(self._table)

    def served_versions(self) -> dict[str, dict[str, int]]:
        """model → slot ("Production" or an alias) → version, as served right now."""
        return _versions(self._table)

    def status(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "generation": self._generation,
            "following": self.following(),
            "models": self.served_versions(),
            "load_failures": [
                {"model": f.name, "version": f.version, "slot": f.slot, "error": f.error}
                for f in list(self._failures.values())  # the watcher thread adds to it
            ],
        }

    def following(self) -> str:
        """How this process learns of registry changes: ``notifications`` or ``polling``."""
        listening = self._listener is not None and self._listener.connected
        return "notifications" if listening else "polling"

    # -- following the registry -------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> bool:
        """Swap in what the registry now says is live; True when the table changed."""
        with self._lock:
            generation = self.registry.generation()
            if generation == self._generation and not force:
                return False
            protected = self.registry.protected_aliases()
            running = {r.name: r for r in self.registry.running_rollouts()}
            wanted, staging = self._wanted()
            table: dict[str, Served] = {}
            for name, slots in wanted.items():
                old = self._table.get(name)
                table[name] = Served(name, self._load_slots(name, slots, old))
            changed = _versions(table) != _versions(self._table)
            for name, served in table.items():
                for slot, scorer in served.slots.items():
                    previous = self._table.get(name)
                    before = previous.slots.get(slot) if previous else None
                    if before is None or before.version != scorer.version:
                        log.info("serving %s %s = version %d", name, slot, scorer.version)
                        if self._on_swap:
                            self._on_swap(name, slot, scorer.version)
            self._table = table  # the swap: one reference assignment
            # A slot the registry no longer wants (an alias deleted) has nothing left to fail.
            self._failures = {
                key: f for key, f in self._failures.items() if key[1] in wanted.get(key[0], {})
            }
            self.protected = protected
            self._public = {
                name: frozenset(
                    v.version
                    for slot, v in slots.items()
                    if slot == Stage.PRODUCTION.value or slot in protected
                )
                | staging.get(name, frozenset())
                for name, slots in wanted.items()
            }
            self.rollouts = running
            self._generation = generation
            self.ready = True
            if self._on_refresh is not None:
                self._on_refresh(self)
            return changed

    def served_table(self) -> dict[str, Served]:
        return self._table

    def _wanted(self) -> tuple[dict[str, dict[str, ModelVersion]], dict[str, frozenset[int]]]:
        """model → slot → version the registry says is live; model → versions in Staging."""
        names = self.explicit_models
        models = {m.name: m for m in self.registry.list_models()}
        if names is None:
            names = [n for n, m in models.items() if m.production_version is not None]
        wanted: dict[str, dict[str, ModelVersion]] = {}
        staging: dict[str, frozenset[int]] = {}
        for name in names:
            if name not in models:
                raise NotFoundError(f"model {name!r} does not exist")
            slots: dict[str, ModelVersion] = {}
            versions = self.registry.list_versions(name)
            for version in versions:
                if version.stage == Stage.PRODUCTION:
                    slots[Stage.PRODUCTION.value] = version
                for alias in version.aliases:
                    slots[alias] = version
            wanted[name] = slots
            staging[name] = frozenset(v.version for v in versions if v.stage == Stage.STAGING)
        return wanted, staging

    def _load_slots(
        self, name: str, slots: dict[str, ModelVersion], old: Served | None
    ) -> dict[str, Scorer]:
        loaded: dict[str, Scorer] = {}
        by_digest = {
            s.model_version.artifact_digest: s for s in (old.slots.values() if old else ())
        }
        for slot, version in slots.items():
            reuse = by_digest.get(version.artifact_digest)
            if reuse is not None and reuse.version == version.version:
                loaded[slot] = reuse
                self._failures.pop((name, slot), None)
                continue
            try:
                scorer = Scorer(version, self.registry.load_package(version))
            except Exception as exc:  # any exception: a crafted package raises anything
                failure = LoadFailure(name, version.version, slot, load_error(exc))
                self._failures[(name, slot)] = failure
                log.error(
                    "refusing to serve %s version %d as %s: %s",
                    name,
                    version.version,
                    slot,
                    failure.error,
                    exc_info=not isinstance(exc, RatekeeperError),
                )
                if self._on_failure:
                    self._on_failure(failure)
                kept = old.slots.get(slot) if old else None
                if kept is not None:
                    loaded[slot] = kept  # keep serving the old version
                continue
            by_digest[version.artifact_digest] = scorer
            loaded[slot] = scorer
            self._failures.pop((name, slot), None)
        return loaded

    def watch(self, interval: float, stop: threading.Event) -> threading.Thread:
        """Follow the registry in a daemon thread: on PostgreSQL, woken by its notifications
        (store/notifications.py) and polling every ``LISTENING_POLL_S`` as a safety net; on
        SQLite, or while the notifications are down, polling every ``interval`` seconds."""
        wake = threading.Event()
        listener: GenerationListener | None = None
        if self.registry.engine.dialect.name == "postgresql":
            listener = GenerationListener(self.registry.engine.url, wake.set, stop)
            listener.start()
        self._listener = listener
        slow = max(interval, LISTENING_POLL_S)

        def loop() -> None:
            while not stop.is_set():
                wake.wait(slow if listener is not None and listener.connected else interval)
                wake.clear()  # before reading the counter: a later bump wakes us again
                if stop.is_set():
                    return
                try:
                    self.refresh(force=not self.ready)  # retry a failed first load too
                    if self._on_tick is not None:
                        self._on_tick()
                except Exception:  # never let the watcher die: log and poll again
                    log.exception("registry refresh failed")

        thread = threading.Thread(target=loop, name="ratekeeper-watcher", daemon=True)
        thread.start()
        return thread


def load_error(exc: BaseException) -> str:
    """One line for a load failure: ours as they are, anything else named by its type."""
    if isinstance(exc, RatekeeperError):
        return exc.message
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _versions(table: dict[str, Served]) -> dict[str, dict[str, int]]:
    return {n: {k: s.version for k, s in served.slots.items()} for n, served in table.items()}
