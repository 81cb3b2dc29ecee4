"""Dislocation: how far a new tariff moves each policy's premium from the current one.

The change of a policy is challenger premium / champion premium − 1 (+0.12 is 12 % dearer).
A policy moves "beyond ±10 %" when |change| > 0.10 (with a 1e-12 allowance for rounding, so a
premium exactly 10 % dearer does not count). Shares of policies are by count: each policyholder
feels their own change, whatever their exposure. Segment means are weighted by exposure.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError
from ratekeeper.validation.arrays import floats, non_empty, positive_array

CAPS = (0.10, 0.25)
HISTOGRAM_EDGES = tuple(round(-0.5 + 0.05 * i, 2) for i in range(21))
"""Fixed change histogram: < −50 %, then 5-point bins [a, b) up to ≥ +50 %."""
ROUNDING = 1e-12


@dataclass(frozen=True)
class Segment:
    """The policies of one level of one rating factor."""

    factor: str
    level: str
    policies: int
    exposure: float
    mean_change: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "level": self.level,
            "policies": self.policies,
            "exposure": self.exposure,
            "mean_change": self.mean_change,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Segment:
        return cls(
            str(body["factor"]),
            str(body["level"]),
            int(body["policies"]),
            float(body["exposure"]),
            float(body["mean_change"]),
        )


@dataclass(frozen=True)
class Dislocation:
    policies: int
    mean_change: float
    """Exposure-weighted mean of the per-policy changes."""
    total_change: float
    """Change of the whole book's premium: Σ challenger / Σ champion − 1."""
    caps: tuple[float, ...]
    up: tuple[float, ...]
    """Per cap: share of policies whose premium rises by more than the cap."""
    down: tuple[float, ...]
    """Per cap: share of policies whose premium falls by more than the cap."""
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    """Policies per histogram bin: len(edges) + 1 bins, [edge[i-1], edge[i]) with open tails."""
    worst: tuple[Segment, ...]
    """Segments with the largest absolute mean change, largest first."""

    def beyond(self, cap: float) -> float:
        """Share of policies whose premium moves by more than ``cap`` either way."""
        for known, up, down in zip(self.caps, self.up, self.down, strict=True):
            if abs(known - cap) < ROUNDING:
                return up + down
        raise InvalidInputError(f"no share for cap {cap:g}: computed for {self.caps}")

    @property
    def labels(self) -> tuple[str, ...]:
        return histogram_labels(self.edges)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policies": self.policies,
            "mean_change": self.mean_change,
            "total_change": self.total_change,
            "caps": list(self.caps),
            "up": list(self.up),
            "down": list(self.down),
            "edges": list(self.edges),
            "counts": list(self.counts),
            "worst": [s.to_dict() for s in self.worst],
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Dislocation:
        return cls(
            policies=int(body["policies"]),
            mean_change=float(body["mean_change"]),
            total_change=float(body["total_change"]),
            caps=floats(body["caps"]),
            up=floats(body["up"]),
            down=floats(body["down"]),
            edges=floats(body["edges"]),
            counts=tuple(int(c) for c in body["counts"]),
            worst=tuple(Segment.from_dict(s) for s in body["worst"]),
        )


def dislocation(
    champion_premium: Any,
    challenger_premium: Any,
    segments: Mapping[str, Any] | None = None,
    caps: tuple[float, ...] = CAPS,
    *,
    exposure: Any = None,
    edges: tuple[float, ...] = HISTOGRAM_EDGES,
    n_worst: int = 10,
    min_share: float = 0.01,
) -> Dislocation:
    """The distribution of premium changes, and the rating-factor levels that move most.

    ``segments`` maps a rating factor to each policy's level (numeric factors already banded);
    a level enters the worst-segment list only when it holds at least ``min_share`` of the
    exposure (of the policies when ``exposure`` is None), so that tiny cells do not crowd out
    the ones that matter.
    """
    champion = positive_array("champion_premium", champion_premium)
    non_empty("champion_premium", len(champion))
    challenger = positive_array("challenger_premium", challenger_premium, len(champion))
    weights = (
        np.ones(len(champion))
        if exposure is None
        else positive_array("exposure", exposure, len(champion))
    )
    if any(cap < 0 for cap in caps):
        raise InvalidInputError(f"dislocation caps must not be negative, got {caps}")
    if list(edges) != sorted(edges):
        raise InvalidInputError("histogram edges must be increasing")
    change = challenger / champion - 1
    n = len(change)
    up = floats(np.count_nonzero(change > cap + ROUNDING) / n for cap in caps)
    down = floats(np.count_nonzero(change < -cap - ROUNDING) / n for cap in caps)
    counts = np.bincount(
        np.searchsorted(np.asarray(edges, dtype=np.float64), change, side="right"),
        minlength=len(edges) + 1,
    )
    return Dislocation(
        policies=n,
        mean_change=float(np.sum(weights * change) / weights.sum()),
        total_change=float(challenger.sum() / champion.sum() - 1),
        caps=floats(caps),
        up=up,
        down=down,
        edges=floats(edges),
        counts=tuple(int(c) for c in counts),
        worst=_worst_segments(change, weights, segments or {}, n_worst, min_share),
    )


def _worst_segments(
    change: np.ndarray,
    weights: np.ndarray,
    segments: Mapping[str, Any],
    n_worst: int,
    min_share: float,
) -> tuple[Segment, ...]:
    import pandas as pd

    found: list[Segment] = []
    total = float(weights.sum())
    for factor, levels in segments.items():
        labels = pd.Series(np.asarray(levels, dtype=object)).fillna("missing").astype(str)
        if len(labels) != len(change):
            raise InvalidInputError(
                f"segment {factor!r} has {len(labels)} values, expected {len(change)}"
            )
        codes, uniques = pd.factorize(labels, sort=True)
        weight = np.bincount(codes, weights=weights, minlength=len(uniques))
        weighted_change = np.bincount(codes, weights=weights * change, minlength=len(uniques))
        policies = np.bincount(codes, minlength=len(uniques))
        for i, level in enumerate(uniques):
            if weight[i] / total >= min_share:
                found.append(
                    Segment(
                        str(factor),
                        str(level),
                        int(policies[i]),
                        float(weight[i]),
                        float(weighted_change[i] / weight[i]),
                    )
                )
    found.sort(key=lambda s: (-abs(s.mean_change), s.factor, s.level))
    return tuple(found[:n_worst])


def histogram_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """Labels of the change histogram: < a, [a, b), …, ≥ z, as signed percentages."""
    if not edges:
        return ("all",)
    inner = [f"[{_percent(lo)}, {_percent(hi)})" for lo, hi in itertools.pairwise(edges)]
    return (f"< {_percent(edges[0])}", *inner, f"≥ {_percent(edges[-1])}")


def _percent(value: float) -> str:
    return f"{value * 100:+.0f} %" if value else "0 %"
