"""Population drift: one data set against a model version's frozen reference profile.

Each rating factor, and the predicted rate, is counted into the bins registered with the
version (never re-binned from the new data), weighted by exposure when the profile is, and
compared with the registered shares: the PSI (empty bins floored at 1e-4, see
``validation.stability``), the sample size and a chi-square p-value. Each PSI falls in a band,
``stable`` below ``Bands.warn`` (0.10), ``warn`` below ``Bands.alert`` (0.25), else ``alert``;
the report's status is the worst band.

- Factor PSIs use **every row**: a missing value counts in the missing bin, a level the
  training data never showed counts in ``other``, a number outside the training range in a tail.
- The prediction PSI uses the rows that **pass the signature** (the rows the model can price),
  scored as the rate per unit of exposure; the report says how many rows were left out and why.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import InvalidInputError
from ratekeeper.monitoring.columns import as_table, bin_sums, float_column, require_columns
from ratekeeper.packaging.frames import take, to_columns
from ratekeeper.packaging.profile import NumericBins
from ratekeeper.registry.entities import ModelVersion
from ratekeeper.validation.stability import (
    StabilityResult,
    effective_size,
    numeric_bin_sums,
    stability,
)

STABLE, WARN, ALERT = "stable", "warn", "alert"
BAND_ORDER = (STABLE, WARN, ALERT)
INSUFFICIENT = "insufficient"
"""Too few policies to judge: ``ratekeeper drift`` says so and exits 3 (no PSI is computed)."""
EXIT_CODES = {STABLE: 0, WARN: 1, ALERT: 2, INSUFFICIENT: 3}
MIN_SAMPLE = 500
"""The fewest policies (rows or quotes) that ``ratekeeper drift`` and the rating server's drift
watcher judge. PSI over a handful is noise: one quote puts all its weight in one bin per factor,
which floors every other bin at 1e-4: PSIs of 4 to 9 on the synthetic motor book, an alert."""
PREDICTION = "prediction"


@dataclass(frozen=True)
class Bands:
    """PSI thresholds: below ``warn`` stable, below ``alert`` warn, from ``alert`` on alert."""

    warn: float = 0.10
    alert: float = 0.25

    def __post_init__(self) -> None:
        for name in ("warn", "alert"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInputError(f"the {name} threshold must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InvalidInputError(f"the {name} threshold must be ≥ 0, got {value!r}")
        if self.warn > self.alert:
            raise InvalidInputError(
                f"the warn threshold ({self.warn:g}) must not exceed the alert one ({self.alert:g})"
            )

    def band(self, value: float) -> str:
        if value >= self.alert:
            return ALERT
        return WARN if value >= self.warn else STABLE


@dataclass(frozen=True)
class FactorDrift:
    """One rating factor (or the prediction) against its reference bins."""

    name: str
    kind: str  # numeric | categorical | prediction
    band: str
    rows: int
    sample_size: float
    """Effective number of policies, (Σw)² / Σw²: the chi-square test's n."""
    total_weight: float
    stability: StabilityResult

    @property
    def psi(self) -> float:
        return self.stability.psi

    @property
    def p_value(self) -> float:
        return self.stability.p_value

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "psi": self.psi,
            "band": self.band,
            "rows": self.rows,
            "sample_size": self.sample_size,
            "total_weight": self.total_weight,
            "p_value": self.p_value,
            "stability": self.stability.to_dict(),
        }


@dataclass(frozen=True)
class DriftReport:
    model: str
    version: int
    rows: int
    weight: str
    """``exposure`` or ``count``: what the shares are shares of (as in the reference profile)."""
    exposure: str | None
    bands: Bands
    factors: tuple[FactorDrift, ...]
    prediction: FactorDrift | None
    excluded_rows: int
    """Rows left out of the prediction PSI (they fail the signature)."""
    exclusions: dict[str, int]
    """Why, as ``field: problem code`` → rows (counted over the first reported problems)."""
    notes: tuple[str, ...]
    created_at: str

    @property
    def all(self) -> tuple[FactorDrift, ...]:
        """The factors, then the prediction when it was scored."""
        return (*self.factors, *((self.prediction,) if self.prediction is not None else ()))

    @property
    def status(self) -> str:
        """The worst band of any factor or of the prediction."""
        return max((d.band for d in self.all), key=BAND_ORDER.index, default=STABLE)

    @property
    def exit_code(self) -> int:
        """0 stable, 1 warn, 2 alert: what ``ratekeeper drift`` exits with."""
        return EXIT_CODES[self.status]

    def factor(self, name: str) -> FactorDrift:
        for d in self.all:
            if d.name == name:
                return d
        raise InvalidInputError(f"{name!r} is not a rating factor of {self.model}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "rows": self.rows,
            "weight": self.weight,
            "exposure": self.exposure,
            "bands": {"warn": self.bands.warn, "alert": self.bands.alert},
            "share_floor": 1e-4,
            "factors": [d.to_dict() for d in self.factors],
            "prediction": self.prediction.to_dict() if self.prediction is not None else None,
            "excluded_rows": self.excluded_rows,
            "exclusions": self.exclusions,
            "notes": list(self.notes),
            "created_at": self.created_at,
        }


def drift(
    scorer_or_version: Scorer | ModelVersion,
    data: Any,
    *,
    exposure: str | None = None,
    bands: Bands | None = None,
    prices: Any = None,
) -> DriftReport:
    """PSI per rating factor and for the prediction of ``data`` against the version's profile.

    ``data`` is a pandas DataFrame or a pyarrow Table holding the rating factors under their
    signature names. ``exposure`` names the exposure column when it differs from the
    signature's. Given a ``ModelVersion`` rather than a ``Scorer``, only the factors are
    compared (nothing can score the prediction) — unless ``prices`` gives the prices these rows
    were already given (exposure included, e.g. the quote ledger's ``prediction``): then the
    prediction's PSI uses them, every row counting, and nothing is scored again.
    """
    bands = bands or Bands()
    version = (
        scorer_or_version.model_version
        if isinstance(scorer_or_version, Scorer)
        else scorer_or_version
    )
    signature, profile = version.signature, version.profile
    factors = [f.name for f in signature.rating_factors]
    model_exposure = signature.exposure.name if signature.exposure is not None else None
    if exposure is not None and model_exposure is None:
        raise InvalidInputError(
            f"{version.name} v{version.version} has no exposure column: its reference shares "
            "are shares of policies, so drop the exposure"
        )
    exposure = exposure or model_exposure
    table = as_table(data, [*factors, *([exposure] if exposure else [])])
    if table.num_rows == 0:
        raise InvalidInputError("the data has no rows")
    require_columns(table, [*factors, *([exposure] if exposure else [])])
    notes: list[str] = []
    weights = _weights(table, exposure, notes)
    n_weighted = int(np.count_nonzero(weights)) if weights is not None else table.num_rows
    size = effective_size(weights) if weights is not None else float(table.num_rows)
    total = float(weights.sum()) if weights is not None else float(table.num_rows)
    if not total > 0:
        raise InvalidInputError(f"the data's exposure ({exposure}) sums to zero")
    results = []
    for name in factors:
        reference = profile.factors[name]
        sums = bin_sums(table, name, reference, weights)
        kind = "numeric" if isinstance(reference, NumericBins) else "categorical"
        result = stability(reference, sums, size)
        band = bands.band(result.psi)
        results.append(FactorDrift(name, kind, band, n_weighted, size, total, result))
    if prices is not None:
        prediction, excluded, reasons = _recorded_prediction_drift(
            version, table, prices, exposure, weights, bands
        )
    elif isinstance(scorer_or_version, Scorer):
        prediction, excluded, reasons = _prediction_drift(
            scorer_or_version, table, exposure, weights, bands, notes
        )
    else:
        prediction, excluded, reasons = None, 0, {}
        notes.append("prediction not compared: a model version without its scorer")
    return DriftReport(
        model=version.name,
        version=version.version,
        rows=table.num_rows,
        weight=profile.weight,
        exposure=exposure,
        bands=bands,
        factors=tuple(results),
        prediction=prediction,
        excluded_rows=excluded,
        exclusions=reasons,
        notes=tuple(notes),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _weights(table: pa.Table, exposure: str | None, notes: list[str]) -> np.ndarray | None:
    """The exposure per row, 0 where it is missing, negative or infinite (noted); None = count."""
    if exposure is None:
        return None
    values = float_column(table, exposure)
    bad = ~(np.isfinite(values) & (values >= 0))
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        notes.append(
            f"{n_bad:,} rows weigh nothing: their exposure is missing, negative or not finite"
        )
        values = np.where(bad, 0.0, values)
    return values


def _recorded_prediction_drift(
    version: ModelVersion,
    table: pa.Table,
    prices: Any,
    exposure: str | None,
    weights: np.ndarray | None,
    bands: Bands,
) -> tuple[FactorDrift | None, int, dict[str, int]]:
    """The PSI of the rate (price per unit of exposure) of rows that were priced already."""
    priced = np.asarray(prices, dtype=np.float64)
    if len(priced) != table.num_rows:
        raise InvalidInputError(f"{len(priced):,} prices for {table.num_rows:,} rows")
    rate = priced / float_column(table, exposure) if exposure is not None else priced
    size = effective_size(weights) if weights is not None else float(len(rate))
    total = float(weights.sum()) if weights is not None else float(len(rate))
    reference = version.profile.prediction
    result = stability(reference, numeric_bin_sums(reference.edges, rate, weights), size)
    drift = FactorDrift(
        PREDICTION, PREDICTION, bands.band(result.psi), len(rate), size, total, result
    )
    return drift, 0, {}


def _prediction_drift(
    scorer: Scorer,
    table: pa.Table,
    exposure: str | None,
    weights: np.ndarray | None,
    bands: Bands,
    notes: list[str],
) -> tuple[FactorDrift | None, int, dict[str, int]]:
    """The predicted rate's PSI over the rows that pass the signature."""
    signature = scorer.signature
    columns, n_rows = to_columns(table)
    model_exposure = signature.exposure
    if model_exposure is not None and exposure is not None and weights is not None:
        columns[model_exposure.name] = float_column(table, exposure)
    lenient = replace(signature, policy=replace(signature.policy, unknown_field="ignore"))
    report = lenient.check_columns(columns, n_rows)
    good = np.flatnonzero(~report.bad_rows)
    excluded = n_rows - len(good)
    reasons = dict(Counter(f"{p.field}: {p.code}" for p in report.problems).most_common())
    if excluded:
        partial = len(report.problems) < report.n_problems
        counted = f" (reasons from the first {len(report.problems):,} problems)" if partial else ""
        notes.append(
            f"prediction scored on {len(good):,} of {n_rows:,} rows; {excluded:,} fail the "
            f"signature{counted}"
        )
    if not len(good):
        notes.append("prediction not compared: no row passes the signature")
        return None, excluded, reasons
    rate = scorer.package.predictor.predict_columns(take(columns, good), len(good))
    w = weights[good] if weights is not None else None
    reference = scorer.package.profile.prediction
    sums = numeric_bin_sums(reference.edges, np.asarray(rate, dtype=np.float64), w)
    size = effective_size(w) if w is not None else float(len(good))
    total = float(w.sum()) if w is not None else float(len(good))
    if not total > 0:
        notes.append("prediction not compared: the priced rows carry no exposure")
        return None, excluded, reasons
    result = stability(reference, sums, size)
    band = bands.band(result.psi)
    return (
        FactorDrift(PREDICTION, PREDICTION, band, len(good), size, total, result),
        excluded,
        reasons,
    )
