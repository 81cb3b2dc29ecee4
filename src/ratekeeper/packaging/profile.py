"""The reference profile: the training population's distribution, frozen at registration.

Population-stability monitoring compares new data against these bins and never re-bins:

- a numeric factor gets up to ``N_BINS`` exposure-weighted quantile bins. Bins are right-closed,
  ``(edge[i-1], edge[i]]``, with open tails ``(-inf, edge[0]]`` and ``(edge[-1], +inf)``, plus a
  missing bin;
- a categorical factor gets the share of each level (the ``MAX_LEVELS`` most common; the rest
  fall in ``other``), an ``other`` bucket for levels never seen, and a missing share;
- the prediction (the rate per unit of exposure) is profiled like a numeric factor.

Shares are weighted by exposure when the signature declares an exposure column, else by count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.packaging.frames import Columns, Factor, as_float
from ratekeeper.packaging.signature import CATEGORICAL, Signature

N_BINS = 10
MAX_LEVELS = 100


@dataclass(frozen=True)
class NumericBins:
    edges: tuple[float, ...]
    shares: tuple[float, ...]  # len(edges) + 1
    missing_share: float

    @classmethod
    def fit(cls, values: np.ndarray, weights: np.ndarray) -> NumericBins:
        present = np.isfinite(values)
        edges = _weighted_quantile_edges(values[present], weights[present])
        bins = cls(edges, (), 0.0)
        shares, missing = bins.shares_of(values, weights)
        return cls(edges, tuple(shares), missing)

    def shares_of(self, values: np.ndarray, weights: np.ndarray) -> tuple[list[float], float]:
        """Weighted shares of ``values`` in these bins (the same bins, whatever the data)."""
        total = float(weights.sum())
        if total <= 0:
            return [0.0] * (len(self.edges) + 1), 0.0
        present = ~np.isnan(values)
        index = np.searchsorted(np.asarray(self.edges), values[present], side="left")
        sums = np.bincount(index, weights=weights[present], minlength=len(self.edges) + 1)
        missing = float(weights[~present].sum()) / total
        return [float(s) / total for s in sums], missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "numeric",
            "edges": list(self.edges),
            "shares": list(self.shares),
            "missing": self.missing_share,
        }


@dataclass(frozen=True)
class LevelShares:
    levels: tuple[str, ...]
    shares: tuple[float, ...]
    other_share: float
    missing_share: float

    @classmethod
    def fit(cls, values: np.ndarray, weights: np.ndarray) -> LevelShares:
        import pandas as pd

        total = float(weights.sum())
        frame = pd.DataFrame({"level": values, "weight": weights})
        missing = float(frame.loc[frame["level"].isna(), "weight"].sum()) / total
        sums = frame.dropna().groupby("level", observed=True)["weight"].sum()
        sums = sums.sort_values(ascending=False, kind="stable")
        kept = sums.iloc[:MAX_LEVELS]
        other = float(sums.iloc[MAX_LEVELS:].sum()) / total
        return cls(
            tuple(str(level) for level in kept.index),
            tuple(float(s) / total for s in kept.to_numpy()),
            other,
            missing,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "categorical",
            "levels": list(self.levels),
            "shares": list(self.shares),
            "other": self.other_share,
            "missing": self.missing_share,
        }


Distribution = NumericBins | LevelShares


@dataclass(frozen=True)
class ReferenceProfile:
    factors: dict[str, Distribution]
    prediction: NumericBins
    rows: int
    weight: str  # "exposure" or "count"
    total_weight: float

    @classmethod
    def build(
        cls,
        signature: Signature,
        columns: Columns,
        n_rows: int,
        prediction: np.ndarray,
        prediction_rows: np.ndarray | None = None,
    ) -> ReferenceProfile:
        """``prediction`` is for every row, or for ``prediction_rows`` (a sample) when given."""
        exposure = signature.exposure
        weights = as_float(columns[exposure.name]) if exposure is not None else np.ones(n_rows)
        factors: dict[str, Distribution] = {}
        for f in signature.rating_factors:
            column = columns[f.name]
            if f.kind == CATEGORICAL:
                values = column.values() if isinstance(column, Factor) else column
                factors[f.name] = LevelShares.fit(values, weights)
            else:
                factors[f.name] = NumericBins.fit(as_float(column), weights)
        sample = prediction_rows if prediction_rows is not None else slice(None)
        return cls(
            factors=factors,
            prediction=NumericBins.fit(np.asarray(prediction, dtype=np.float64), weights[sample]),
            rows=n_rows,
            weight="exposure" if exposure is not None else "count",
            total_weight=float(weights.sum()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "weight": self.weight,
            "total_weight": self.total_weight,
            "factors": {name: d.to_dict() for name, d in self.factors.items()},
            "prediction": self.prediction.to_dict(),
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ReferenceProfile:
        return cls(
            factors={name: _distribution(d) for name, d in body["factors"].items()},
            prediction=_numeric(body["prediction"]),
            rows=body["rows"],
            weight=body["weight"],
            total_weight=body["total_weight"],
        )


def _distribution(body: Mapping[str, Any]) -> Distribution:
    if body["type"] == "numeric":
        return _numeric(body)
    return LevelShares(tuple(body["levels"]), tuple(body["shares"]), body["other"], body["missing"])


def _numeric(body: Mapping[str, Any]) -> NumericBins:
    return NumericBins(tuple(body["edges"]), tuple(body["shares"]), body["missing"])


def _weighted_quantile_edges(values: np.ndarray, weights: np.ndarray) -> tuple[float, ...]:
    """Interior edges at the weighted deciles, deduplicated (few distinct values → fewer bins)."""
    if not len(values):
        return ()
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    cumulative = np.cumsum(weights[order])
    targets = cumulative[-1] * np.arange(1, N_BINS) / N_BINS
    positions = np.searchsorted(cumulative, targets, side="left")
    edges = np.unique(sorted_values[np.minimum(positions, len(values) - 1)])
    # The largest value as an edge would leave the upper tail empty by construction.
    edges = edges[edges < sorted_values[-1]]
    return tuple(float(e) for e in edges)
