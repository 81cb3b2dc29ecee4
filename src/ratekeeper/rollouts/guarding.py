"""The guards' statistics in one serving process, and their verdict.

Each worker keeps its own (no shared state on the request path): the challenger's pricings and
failures and its pricing times, and for the quotes priced by both models (a shadow, or the
sample a canary prices in the background) the challenger/champion premium ratios. A breach seen
by any worker rolls the rollout back everywhere (through the registry: ``routing.py``).
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from ratekeeper.rollouts.plan import Guards

RATIO_EDGES = (0.5, 0.67, 0.8, 0.9, 0.95, 0.99, 1.01, 1.05, 1.1, 1.25, 1.5, 2.0)
"""Bin edges of the premium-ratio histogram (below the first and above the last: open bins)."""
KEPT = 2_000  # ratios and times kept for the snapshots' median and p99 (the latest ones)
MAX_SEGMENT_FIELDS, MAX_SEGMENT_LEVELS = 8, 30


class GuardStats:
    """Counts for one rollout in one process; ``snapshot()`` is what the report shows."""

    def __init__(self, rollout_id: int, guards: Guards, segment_fields: Sequence[str] = ()) -> None:
        self.rollout_id = rollout_id
        self.guards = guards
        self.champion_quotes = 0
        self.challenger_quotes = 0  # priced for a customer (canary arm)
        self.challenger_errors = 0  # of those, or of the background pricings, that failed
        self.shadow_priced = 0
        self.shadow_dropped = 0  # the background queue was full
        # The verdict is counts against the guards' limits, kept as each value arrives: judging
        # by sorting the kept values (a median, a p99) held the GIL ~2 ms per check, every 50 ms,
        # and showed in the quotes' p99. The kept values serve the snapshots only.
        self.slow = 0  # pricing times above max_p99_ms
        self.below = self.above = 0  # ratios below / above the median_ratio range
        self.times_ms: deque[float] = deque(maxlen=KEPT)
        self.ratios: deque[float] = deque(maxlen=KEPT)
        self.compared = 0
        self.moved = 0
        self.histogram = [0] * (len(RATIO_EDGES) + 1)
        self.segment_fields = tuple(segment_fields)[:MAX_SEGMENT_FIELDS]
        self.segments: dict[tuple[str, str], list[float]] = {}  # → [n, sum of ratios, moved]

    def timed(self, milliseconds: float) -> None:
        self.times_ms.append(milliseconds)
        self.slow += milliseconds > self.guards.max_p99_ms

    def compare(
        self, champion: float, challenger: float, move: float, policy: Mapping[str, Any]
    ) -> None:
        if not champion > 0 or not math.isfinite(challenger):
            return
        ratio = challenger / champion
        self.ratios.append(ratio)
        self.compared += 1
        low, high = self.guards.median_ratio
        self.below += ratio < low
        self.above += ratio > high
        moved = abs(ratio - 1) > move
        self.moved += moved
        self.histogram[bisect_right(RATIO_EDGES, ratio)] += 1
        for field in self.segment_fields:
            level = str(policy.get(field))
            cell = self.segments.get((field, level))
            if cell is None:
                if sum(1 for f, _ in self.segments if f == field) >= MAX_SEGMENT_LEVELS:
                    continue
                cell = self.segments[(field, level)] = [0.0, 0.0, 0.0]
            cell[0] += 1
            cell[1] += ratio
            cell[2] += moved

    def p99_ms(self) -> float | None:
        if not self.times_ms:
            return None
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    def breach(self, guards: Guards) -> str | None:
        """Why the challenger must be rolled back, or None while every guard holds (counts
        only: constant time, whatever the traffic)."""
        priced = self.challenger_quotes + self.shadow_priced
        if priced >= guards.min_quotes:
            rate = self.challenger_errors / priced
            if rate > guards.max_error_rate:
                return f"challenger error rate {rate:.2%} > {guards.max_error_rate:.2%}"
            timed = self.challenger_quotes + self.shadow_priced - self.challenger_errors
            if timed and self.slow > 0.01 * timed:
                return (
                    f"challenger p99 above {guards.max_p99_ms:g} ms "
                    f"({self.slow:,} of {timed:,} pricings slower)"
                )
        if self.compared >= guards.min_quotes:
            low, high = guards.median_ratio
            half = self.compared / 2
            if self.below > half or self.above > half:
                median = statistics.median(self.ratios)  # once, on the way out
                return f"median premium ratio {median:.3f} outside [{low:g}, {high:g}]"
            share = self.moved / self.compared
            if share > guards.max_moved_share:
                return (
                    f"{share:.1%} of quotes moved by more than ±{guards.move:.0%} "
                    f"(at most {guards.max_moved_share:.1%})"
                )
        return None

    def snapshot(self) -> dict[str, Any]:
        return {
            "champion_quotes": self.champion_quotes,
            "challenger_quotes": self.challenger_quotes,
            "challenger_errors": self.challenger_errors,
            "shadow_priced": self.shadow_priced,
            "shadow_dropped": self.shadow_dropped,
            "p99_ms": self.p99_ms(),
            "compared": self.compared,
            "moved": self.moved,
            "median_ratio": statistics.median(self.ratios) if self.ratios else None,
            "histogram": list(self.histogram),
            "segments": [
                {
                    "field": f,
                    "level": level,
                    "n": int(c[0]),
                    "mean_ratio": c[1] / c[0],
                    "moved": int(c[2]),
                }
                for (f, level), c in sorted(self.segments.items())
            ],
        }
