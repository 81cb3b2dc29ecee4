"""Actual vs expected: observed claims against what the model version predicted.

Expected = the model's prediction for each policy (the rate times the exposure when the
signature declares an exposure column), on the rows the model can price. A/E = Σ actual / Σ
expected, overall and per rating-factor level (a numeric factor by its reference-profile bins).

Intervals, at ``level`` (95 % by default):

- **claim counts** (every actual value a whole number): the exact Poisson interval of Garwood
  (1936) for the observed count O, divided by the expected E —
  lower = G⁻¹(α/2; O) / E, upper = G⁻¹(1 − α/2; O + 1) / E, with G⁻¹(p; k) the p-quantile of a
  gamma(k, 1) distribution (= χ²(p; 2k) / 2), and lower = 0 when O = 0. It treats E as known.
- **claim costs** (any other values): a Poisson interval would be wrong (costs are not counts),
  so the interval is a normal approximation, (O ± z·s) / E, where s² = Σ (aᵢ − r·eᵢ)² is the
  spread of the policies' costs around the expectation scaled to the observed level r = O / E.
  It needs a few dozen claims in a group to mean anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

import numpy as np

from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import InvalidInputError
from ratekeeper.monitoring.columns import as_table, float_column, require_columns
from ratekeeper.packaging.frames import Factor, as_float, take, to_columns
from ratekeeper.packaging.profile import NumericBins
from ratekeeper.validation.stability import (
    MISSING,
    numeric_bin_of,
    numeric_labels,
    regularized_upper_gamma,
)

COUNT, COST = "count", "cost"
INTERVALS = {COUNT: "exact Poisson (Garwood)", COST: "normal approximation"}


@dataclass(frozen=True)
class AEGroup:
    level: str
    rows: int
    exposure: float
    actual: float
    expected: float
    ratio: float
    lower: float
    upper: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "rows": self.rows,
            "exposure": self.exposure,
            "actual": self.actual,
            "expected": self.expected,
            "ratio": _json_number(self.ratio),
            "lower": _json_number(self.lower),
            "upper": _json_number(self.upper),
        }


@dataclass(frozen=True)
class AEReport:
    model: str
    version: int
    actual_column: str
    exposure: str | None
    kind: str
    """``count`` (Garwood intervals) or ``cost`` (normal approximation)."""
    level: float
    rows: int
    excluded_rows: int
    overall: AEGroup
    by: dict[str, tuple[AEGroup, ...]]
    notes: tuple[str, ...]
    created_at: str

    @property
    def interval(self) -> str:
        return INTERVALS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "actual": self.actual_column,
            "exposure": self.exposure,
            "kind": self.kind,
            "interval": self.interval,
            "level": self.level,
            "rows": self.rows,
            "excluded_rows": self.excluded_rows,
            "overall": self.overall.to_dict(),
            "by": {name: [g.to_dict() for g in groups] for name, groups in self.by.items()},
            "notes": list(self.notes),
            "created_at": self.created_at,
        }


def actual_vs_expected(
    scorer: Scorer,
    data: Any,
    *,
    actual: str,
    exposure: str | None = None,
    by: Sequence[str] | None = None,
    level: float = 0.95,
) -> AEReport:
    """A/E of ``actual`` against the model's prediction, overall and by rating-factor level."""
    if not 0 < level < 1:
        raise InvalidInputError(f"the confidence level must be between 0 and 1, got {level:g}")
    signature = scorer.signature
    factors = [f.name for f in signature.rating_factors]
    by = list(by) if by is not None else factors
    unknown = [name for name in by if name not in factors]
    if unknown:
        raise InvalidInputError(
            f"--by takes rating factors of {scorer.name}: {', '.join(unknown)} is not one"
        )
    model_exposure = signature.exposure.name if signature.exposure is not None else None
    exposure = exposure or model_exposure
    table = as_table(data, [*signature.names, actual, *([exposure] if exposure else [])])
    require_columns(table, [actual, *([exposure] if exposure else [])])
    if table.num_rows == 0:
        raise InvalidInputError("the data has no rows")
    observed = float_column(table, actual)
    columns, n_rows = to_columns(table)
    if model_exposure is not None and exposure is not None:
        columns[model_exposure] = float_column(table, exposure)
    lenient = replace(signature, policy=replace(signature.policy, unknown_field="ignore"))
    bad = lenient.check_columns(columns, n_rows).bad_rows
    bad_actual = ~(np.isfinite(observed) & (observed >= 0))
    good = np.flatnonzero(~(bad | bad_actual))
    notes = []
    if n_rows - len(good):
        notes.append(
            f"{n_rows - len(good):,} of {n_rows:,} rows left out: {int(bad.sum()):,} fail the "
            f"signature, {int(bad_actual.sum()):,} have no valid {actual}"
        )
    if not len(good):
        raise InvalidInputError("no row can be priced with a valid actual value")
    columns = take(columns, good)
    observed = observed[good]
    rate = scorer.package.predictor.predict_columns(columns, len(good))
    weights = as_float(columns[model_exposure]) if model_exposure else np.ones(len(good))
    expected = np.asarray(rate, dtype=np.float64) * weights
    kind = COUNT if bool(np.all(observed == np.floor(observed))) else COST
    groups = _Groups(observed, expected, weights, kind, level)
    overall = groups.of(np.zeros(len(good), dtype=np.intp), ["all"])[0]
    result_by = {}
    for name in by:
        codes, labels = _levels(columns[name], scorer.package.profile.factors[name])
        result_by[name] = tuple(g for g in groups.of(codes, labels) if g.rows)
    return AEReport(
        model=scorer.name,
        version=scorer.version,
        actual_column=actual,
        exposure=exposure,
        kind=kind,
        level=level,
        rows=len(good),
        excluded_rows=n_rows - len(good),
        overall=overall,
        by=result_by,
        notes=tuple(notes),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


class _Groups:
    def __init__(
        self,
        observed: np.ndarray,
        expected: np.ndarray,
        exposure: np.ndarray,
        kind: str,
        level: float,
    ) -> None:
        self.observed, self.expected, self.exposure = observed, expected, exposure
        self.kind, self.level = kind, level

    def of(self, codes: np.ndarray, labels: Sequence[str]) -> list[AEGroup]:
        n = len(labels)
        rows = np.bincount(codes, minlength=n)
        exposure = np.bincount(codes, weights=self.exposure, minlength=n)
        observed = np.bincount(codes, weights=self.observed, minlength=n)
        expected = np.bincount(codes, weights=self.expected, minlength=n)
        spread = self._spread(codes, observed, expected, n) if self.kind == COST else None
        groups = []
        for i, label in enumerate(labels):
            o, e = float(observed[i]), float(expected[i])
            if self.kind == COUNT:
                lower, upper = garwood_interval(o, self.level)
            else:
                assert spread is not None
                lower, upper = normal_interval(o, float(spread[i]), self.level)
            scale = 1 / e if e > 0 else math.nan
            low, high, ratio = lower * scale, upper * scale, o * scale
            groups.append(AEGroup(label, int(rows[i]), float(exposure[i]), o, e, ratio, low, high))
        return groups

    def _spread(
        self, codes: np.ndarray, observed: np.ndarray, expected: np.ndarray, n: int
    ) -> np.ndarray:
        """s² = Σ (aᵢ − r·eᵢ)² per group, r = O / E of the group."""
        scale = np.divide(observed, expected, out=np.zeros(n), where=expected > 0)
        residual = self.observed - scale[codes] * self.expected
        variance = np.bincount(codes, weights=residual**2, minlength=n)
        spread: np.ndarray = np.sqrt(variance)
        return spread


def _levels(column: Any, reference: Any) -> tuple[np.ndarray, list[str]]:
    """Group codes per row: a numeric factor's reference bins, a categorical factor's levels."""
    if isinstance(reference, NumericBins):
        values = np.asarray(column, dtype=np.float64)
        labels = [*numeric_labels(reference.edges), MISSING]
        return np.asarray(numeric_bin_of(reference.edges, values), dtype=np.intp), labels
    factor = column if isinstance(column, Factor) else Factor.of(np.asarray(column, dtype=object))
    names = [str(u) for u in factor.uniques]
    order = sorted(range(len(names)), key=lambda i: names[i])
    position = np.empty(len(names) + 1, dtype=np.intp)
    position[order] = np.arange(len(names))
    position[-1] = len(names)  # null codes (-1): the missing group
    return position[factor.codes], [*(names[i] for i in order), MISSING]


# -- intervals ---------------------------------------------------------------------------------
def garwood_interval(observed: float, level: float = 0.95) -> tuple[float, float]:
    """The exact (Garwood) interval for the mean of a Poisson count ``observed``."""
    alpha = 1 - level
    lower = gamma_quantile(alpha / 2, observed) if observed > 0 else 0.0
    return lower, gamma_quantile(1 - alpha / 2, observed + 1)


def normal_interval(observed: float, spread: float, level: float = 0.95) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return max(observed - z * spread, 0.0), observed + z * spread


def gamma_quantile(p: float, shape: float) -> float:
    """x with P(shape, x) = p, P the regularized lower gamma function (gamma(shape, 1) p-quantile).

    Bisection on the pure-Python ``regularized_upper_gamma`` (no scipy at run time), to a
    relative 1e-12.
    """
    if not 0 < p < 1:
        raise InvalidInputError(f"a quantile needs 0 < p < 1, got {p:g}")
    low, high = 0.0, max(1.0, shape + 10 * math.sqrt(shape) + 10)
    while 1 - regularized_upper_gamma(shape, high) < p:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if 1 - regularized_upper_gamma(shape, middle) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None
