"""Population stability: new data against the bins frozen in a version's reference profile.

The bins are never re-fitted: a numeric distribution keeps its registered edges, a categorical
one its registered levels (any other level counts as ``other``), and both keep a missing bin.
Shares are weighted (by exposure, as the profile is).

PSI = Σ (actual − expected) × ln(actual / expected) over the bins. A bin with a share of 0 on
either side would make the logarithm infinite, so **both shares are floored at 1e-4
(``SHARE_FLOOR``)** before the sum; a bin empty on both sides then adds nothing. Rule of thumb:
below 0.1 stable, 0.1–0.25 a shift worth a look, above 0.25 a different population.

The chi-square test asks whether the new shares could be a sample of the reference ones:
statistic = n × Σ (actual − expected)² / expected over the bins that hold weight on either
side (expected floored as above), with n the effective sample size of the weights,
(Σw)² / Σw² (the number of policies when all weights are equal), and degrees of freedom = those
bins − 1. On large books it flags even immaterial shifts: read it beside the PSI, not instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.profile import LevelShares, NumericBins
from ratekeeper.validation.arrays import floats, non_empty, weights_array

SHARE_FLOOR = 1e-4
MISSING = "missing"
OTHER = "other"


@dataclass(frozen=True)
class StabilityResult:
    psi: float
    labels: tuple[str, ...]
    expected: tuple[float, ...]
    """Reference shares per bin, as registered (not floored)."""
    actual: tuple[float, ...]
    """Shares of the new data in the same bins (not floored)."""
    statistic: float
    degrees_of_freedom: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "psi": self.psi,
            "labels": list(self.labels),
            "expected": list(self.expected),
            "actual": list(self.actual),
            "statistic": self.statistic,
            "degrees_of_freedom": self.degrees_of_freedom,
            "p_value": self.p_value,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> StabilityResult:
        return cls(
            psi=float(body["psi"]),
            labels=tuple(str(label) for label in body["labels"]),
            expected=floats(body["expected"]),
            actual=floats(body["actual"]),
            statistic=float(body["statistic"]),
            degrees_of_freedom=int(body["degrees_of_freedom"]),
            p_value=float(body["p_value"]),
        )


def psi(reference: NumericBins | LevelShares, values: Any, weights: Any = None) -> StabilityResult:
    """PSI and chi-square test of ``values`` (weighted by ``weights``) against ``reference``."""
    if isinstance(reference, NumericBins):
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("values must be numbers for a numeric reference") from None
        non_empty("values", len(array))
        w = weights_array(weights, len(array))
        sums = numeric_bin_sums(reference.edges, array, w)
    else:
        import pandas as pd

        codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)))
        non_empty("values", len(codes))
        w = weights_array(weights, len(codes))
        lookup = level_bin_lookup(reference, list(uniques))
        sums = np.bincount(lookup[codes], weights=w, minlength=len(reference.levels) + 2)
    return stability(reference, sums, effective_size(w))


def stability(
    reference: NumericBins | LevelShares, sums: np.ndarray, sample_size: float
) -> StabilityResult:
    """PSI and chi-square test from the new data's weight per reference bin.

    ``sums`` holds one weight per bin in the order of ``bin_labels(reference)`` (the missing
    bin last); ``sample_size`` is the effective number of policies behind them.
    """
    expected = reference_shares(reference)
    total = float(sums.sum())
    if not total > 0:
        raise InvalidInputError("the new data carries no weight in any bin")
    actual = np.asarray(sums, dtype=np.float64) / total
    floored_expected = np.maximum(expected, SHARE_FLOOR)
    floored_actual = np.maximum(actual, SHARE_FLOOR)
    index = float(
        np.sum((floored_actual - floored_expected) * np.log(floored_actual / floored_expected))
    )
    used = (expected > 0) | (actual > 0)
    statistic = sample_size * float(
        np.sum((actual[used] - floored_expected[used]) ** 2 / floored_expected[used])
    )
    dof = max(int(used.sum()) - 1, 0)
    return StabilityResult(
        psi=index,
        labels=bin_labels(reference),
        expected=floats(expected),
        actual=floats(actual),
        statistic=statistic,
        degrees_of_freedom=dof,
        p_value=chi2_sf(statistic, dof),
    )


def effective_size(weights: np.ndarray) -> float:
    """(Σw)² / Σw²: the number of policies when all weights are equal."""
    squares = float(np.dot(weights, weights))
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


def bin_labels(reference: NumericBins | LevelShares) -> tuple[str, ...]:
    if isinstance(reference, NumericBins):
        return (*numeric_labels(reference.edges), MISSING)
    return (*reference.levels, OTHER, MISSING)


def reference_shares(reference: NumericBins | LevelShares) -> np.ndarray:
    """The registered shares per bin, in the order of ``bin_labels``."""
    if isinstance(reference, NumericBins):
        return np.asarray([*reference.shares, reference.missing_share], dtype=np.float64)
    return np.asarray(
        [*reference.shares, reference.other_share, reference.missing_share], dtype=np.float64
    )


def numeric_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """Readable labels of right-closed bins with open tails: ≤ a, (a, b], …, > z."""
    if not edges:
        return ("all",)
    inner = [f"({_number(lo)}, {_number(hi)}]" for lo, hi in itertools.pairwise(edges)]
    return (f"≤ {_number(edges[0])}", *inner, f"> {_number(edges[-1])}")


def numeric_bin_of(edges: tuple[float, ...], values: np.ndarray) -> np.ndarray:
    """Each value's bin in the registered bins; NaN → len(edges) + 1, the missing bin.

    The edges get a last one at +inf: ``searchsorted`` puts +inf in the upper tail and sorts
    NaN after it, into the missing bin, without a separate ``isnan`` pass.
    """
    bounds = np.append(np.asarray(edges, dtype=np.float64), np.inf)
    return np.searchsorted(bounds, values, side="left")


_CHUNK = 1 << 16


def numeric_bin_sums(edges: tuple[float, ...], values: np.ndarray, weights: Any) -> np.ndarray:
    """Weight per registered bin (open tails, then missing last), ``len(edges) + 2`` sums.

    ``weights`` is an array or None (a count). Done in chunks that stay in the CPU cache: the
    bin index of a chunk is summed while still hot, and never written out for the whole column.
    """
    bounds = np.append(np.asarray(edges, dtype=np.float64), np.inf)
    size = len(edges) + 2
    sums = np.zeros(size)
    for start in range(0, len(values), _CHUNK):
        index = np.searchsorted(bounds, values[start : start + _CHUNK], side="left")
        chunk_weights = None if weights is None else weights[start : start + _CHUNK]
        sums += np.bincount(index, weights=chunk_weights, minlength=size)
    return sums


def level_bin_lookup(reference: LevelShares, values: list[Any]) -> np.ndarray:
    """Each distinct value's bin: its registered level, ``other``, or ``missing`` (None, NaN).

    One entry more than ``values``, the missing bin, so that a null code of -1 finds it.
    """
    n_levels = len(reference.levels)
    position = {level: i for i, level in enumerate(reference.levels)}
    lookup = np.empty(len(values) + 1, dtype=np.intp)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            lookup[i] = n_levels + 1
        else:
            lookup[i] = position.get(value if isinstance(value, str) else str(value), n_levels)
    lookup[-1] = n_levels + 1
    return lookup


def _number(value: float) -> str:
    return f"{value:.4g}"


# -- the chi-square survival function ----------------------------------------------------------
def chi2_sf(statistic: float, degrees_of_freedom: int) -> float:
    """P(X ≥ statistic) for X chi-square with ``degrees_of_freedom``: Q(k/2, x/2)."""
    if degrees_of_freedom <= 0:
        return 1.0
    return regularized_upper_gamma(degrees_of_freedom / 2, statistic / 2)


def regularized_upper_gamma(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a): a series below x = a + 1, a continued fraction above.

    The classic pair (Numerical Recipes §6.2); the test-suite holds it to 1e-10 relative of
    ``scipy.special.gammaincc`` (scipy is not a run-time dependency).
    """
    if a <= 0:
        raise InvalidInputError(f"the gamma shape must be positive, got {a:g}")
    if x <= 0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        return max(0.0, 1.0 - math.exp(log_prefactor) * _lower_series(a, x))
    return math.exp(log_prefactor) * _upper_fraction(a, x)


_EPSILON = 1e-16
_TINY = 1e-300
_MAX_TERMS = 10_000


def _lower_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    denominator = a
    for _ in range(_MAX_TERMS):
        denominator += 1
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            break
    return total


def _upper_fraction(a: float, x: float) -> float:
    """Modified Lentz evaluation of the continued fraction for Γ(a, x) e^x x^-a."""
    b = x + 1 - a
    c = 1 / _TINY
    d = 1 / b
    fraction = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        step = d * c
        fraction *= step
        if abs(step - 1) < _EPSILON:
            break
    return fraction
