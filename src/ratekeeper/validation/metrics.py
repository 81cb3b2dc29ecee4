"""How well a pricing model predicts and ranks: deviance, Gini, lift and double lift.

Two conventions hold throughout:

- the deviances take **rates**, like scikit-learn's ``mean_*_deviance``: the observed value per
  unit of exposure (claims / exposure, cost / exposure), the predicted rate, and the exposure as
  weights;
- the Gini, the lift table and the double lift take per-policy **totals**, as ``Scorer.predict``
  returns them (expected claim counts or costs for the policy's exposure), the observed totals,
  and the exposure; a rate is always a total divided by its exposure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError
from ratekeeper.validation.arrays import (
    exposure_bins,
    float_array,
    floats,
    non_empty,
    optional_float,
    positive_array,
    weights_array,
)

FAMILIES = ("normal", "poisson", "gamma", "tweedie")


# -- deviance ----------------------------------------------------------------------------------
def poisson_deviance(y: Any, mu: Any, weights: Any = None) -> float:
    """Weighted mean Poisson deviance: 2 (y log(y/mu) − y + mu), with 0 log 0 = 0."""
    return tweedie_deviance(y, mu, weights, power=1.0)


def gamma_deviance(y: Any, mu: Any, weights: Any = None) -> float:
    """Weighted mean Gamma deviance: 2 (log(mu/y) + y/mu − 1); y must be positive."""
    return tweedie_deviance(y, mu, weights, power=2.0)


def tweedie_deviance(y: Any, mu: Any, weights: Any = None, *, power: float) -> float:
    """Weighted mean Tweedie deviance of variance power ``power`` (0 normal, 1 Poisson, 2 Gamma).

    The same definition as scikit-learn's ``mean_tweedie_deviance``; ``weights`` are usually the
    exposure. Powers in (0, 1) define no distribution and are refused.
    """
    observed = float_array("y", y)
    non_empty("y", len(observed))
    predicted = float_array("mu", mu, len(observed))
    w = weights_array(weights, len(observed))
    p = float(power)
    if 0 < p < 1:
        raise InvalidInputError(f"Tweedie power must be ≤ 0 or ≥ 1, got {p:g}")
    if p != 0 and not (predicted > 0).all():
        raise InvalidInputError(f"predicted values must be positive for Tweedie power {p:g}")
    if 1 <= p < 2 and (observed < 0).any():
        raise InvalidInputError(f"observed values must not be negative for Tweedie power {p:g}")
    if p >= 2 and not (observed > 0).all():
        raise InvalidInputError(f"observed values must be positive for Tweedie power {p:g}")
    unit = _unit_deviance(observed, predicted, p)
    return float(np.sum(w * unit) / np.sum(w))


def mean_deviance(
    family: str, y: Any, mu: Any, weights: Any = None, *, power: float | None = None
) -> float:
    """The deviance of a GLM family by name (``normal``, ``poisson``, ``gamma``, ``tweedie``)."""
    powers = {"normal": 0.0, "poisson": 1.0, "gamma": 2.0}
    if family == "tweedie":
        if power is None:
            raise InvalidInputError("the tweedie family needs a power")
        return tweedie_deviance(y, mu, weights, power=power)
    if family not in powers:
        raise InvalidInputError(f"unknown family {family!r}: use one of {', '.join(FAMILIES)}")
    return tweedie_deviance(y, mu, weights, power=powers[family])


def _unit_deviance(y: np.ndarray, mu: np.ndarray, p: float) -> np.ndarray:
    if p == 0:
        return np.asarray((y - mu) ** 2)
    if p == 1:
        positive = y > 0
        ratio = np.where(positive, y, 1.0) / mu
        return np.asarray(2 * (np.where(positive, y * np.log(ratio), 0.0) - y + mu))
    if p == 2:
        return np.asarray(2 * (np.log(mu / y) + y / mu - 1))
    first = np.power(np.maximum(y, 0), 2 - p) / ((1 - p) * (2 - p))
    return np.asarray(
        2 * (first - y * np.power(mu, 1 - p) / (1 - p) + np.power(mu, 2 - p) / (2 - p))
    )


# -- Gini --------------------------------------------------------------------------------------
def gini(actual: Any, predicted: Any, exposure: Any) -> float:
    """Exposure-weighted Gini of the ordered Lorenz curve.

    Policies are sorted by predicted rate (``predicted / exposure``), lowest first; the curve
    plots the cumulative share of ``actual`` against the cumulative share of exposure, and
    Gini = 1 − 2 × the area under it (trapezoids). Policies with the same predicted rate form one
    straight segment, so the result does not depend on the order of the rows. 0 means no
    ranking power; higher is better.
    """
    exposure_ = positive_array("exposure", exposure)
    non_empty("exposure", len(exposure_))
    actual_ = float_array("actual", actual, len(exposure_))
    predicted_ = float_array("predicted", predicted, len(exposure_))
    total = actual_.sum()
    if not total > 0:
        raise InvalidInputError("the Gini needs a positive total of actual values (no claims?)")
    rates, group = np.unique(predicted_ / exposure_, return_inverse=True)
    group_exposure = np.bincount(group, weights=exposure_, minlength=len(rates))
    group_actual = np.bincount(group, weights=actual_, minlength=len(rates))
    x = np.concatenate([[0.0], np.cumsum(group_exposure) / exposure_.sum()])
    y = np.concatenate([[0.0], np.cumsum(group_actual) / total])
    area = np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)
    return float(1 - 2 * area)


# -- lift --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiftTable:
    """Policies in equal-exposure bins of predicted rate, lowest first."""

    exposure: tuple[float, ...]
    actual: tuple[float, ...]
    """Actual rate per bin: sum of actual / sum of exposure."""
    predicted: tuple[float, ...]
    """Predicted rate per bin: sum of predicted / sum of exposure."""
    lift: float | None
    """Actual rate of the top bin / actual rate of the bottom bin; None when the bottom is 0."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "exposure": list(self.exposure),
            "actual": list(self.actual),
            "predicted": list(self.predicted),
            "lift": self.lift,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> LiftTable:
        return cls(
            floats(body["exposure"]),
            floats(body["actual"]),
            floats(body["predicted"]),
            optional_float(body["lift"]),
        )


def lift_table(actual: Any, predicted: Any, exposure: Any, n_bins: int = 10) -> LiftTable:
    """Actual vs predicted rate by exposure-weighted quantile (decile) of predicted rate."""
    exposure_ = positive_array("exposure", exposure)
    actual_ = float_array("actual", actual, len(exposure_))
    predicted_ = float_array("predicted", predicted, len(exposure_))
    order = np.argsort(predicted_ / exposure_, kind="stable")
    bins = exposure_bins(order, exposure_, n_bins)
    bin_exposure, (bin_actual, bin_predicted) = _bin_sums(
        bins, n_bins, exposure_, actual_, predicted_
    )
    actual_rate = _rate(bin_actual, bin_exposure)
    filled = np.flatnonzero(bin_exposure > 0)
    bottom, top = actual_rate[filled[0]], actual_rate[filled[-1]]
    return LiftTable(
        exposure=floats(bin_exposure),
        actual=floats(actual_rate),
        predicted=floats(_rate(bin_predicted, bin_exposure)),
        lift=float(top / bottom) if bottom > 0 else None,
    )


# -- double lift -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DoubleLift:
    """Champion vs challenger in equal-exposure bins of the challenger / champion ratio.

    Both models' rates are rescaled so that each predicts the overall actual total: the chart
    compares how they split the book, not their overall level. In the bins where the challenger
    charges relatively most, the better model is the one whose rate is closer to the actual.
    """

    exposure: tuple[float, ...]
    ratio: tuple[float, ...]
    """Challenger total / champion total per bin (before rescaling)."""
    actual: tuple[float, ...]
    champion: tuple[float, ...]
    challenger: tuple[float, ...]
    champion_error: float
    """Exposure-weighted mean |model − actual| over the bins / the overall actual rate."""
    challenger_error: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "exposure": list(self.exposure),
            "ratio": list(self.ratio),
            "actual": list(self.actual),
            "champion": list(self.champion),
            "challenger": list(self.challenger),
            "champion_error": self.champion_error,
            "challenger_error": self.challenger_error,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> DoubleLift:
        return cls(
            floats(body["exposure"]),
            floats(body["ratio"]),
            floats(body["actual"]),
            floats(body["champion"]),
            floats(body["challenger"]),
            float(body["champion_error"]),
            float(body["challenger_error"]),
        )


def double_lift(
    actual: Any, champion: Any, challenger: Any, exposure: Any, n_bins: int = 10
) -> DoubleLift:
    """The double-lift table of two models' predicted totals on the same policies."""
    exposure_ = positive_array("exposure", exposure)
    actual_ = float_array("actual", actual, len(exposure_))
    champion_ = positive_array("champion", champion, len(exposure_))
    challenger_ = positive_array("challenger", challenger, len(exposure_))
    total = actual_.sum()
    if not total > 0:
        raise InvalidInputError("the double lift needs a positive total of actual values")
    order = np.argsort(challenger_ / champion_, kind="stable")
    bins = exposure_bins(order, exposure_, n_bins)
    bin_exposure, (bin_actual, bin_champion, bin_challenger) = _bin_sums(
        bins, n_bins, exposure_, actual_, champion_, challenger_
    )
    actual_rate = _rate(bin_actual, bin_exposure)
    champion_rate = _rate(bin_champion * (total / champion_.sum()), bin_exposure)
    challenger_rate = _rate(bin_challenger * (total / challenger_.sum()), bin_exposure)
    overall = total / exposure_.sum()

    def error(rate: np.ndarray) -> float:
        return float(np.sum(bin_exposure * np.abs(rate - actual_rate)) / exposure_.sum() / overall)

    ratio = np.divide(bin_challenger, bin_champion, out=np.zeros(n_bins), where=bin_champion > 0)
    return DoubleLift(
        exposure=floats(bin_exposure),
        ratio=floats(ratio),
        actual=floats(actual_rate),
        champion=floats(champion_rate),
        challenger=floats(challenger_rate),
        champion_error=error(champion_rate),
        challenger_error=error(challenger_rate),
    )


# -- helpers -----------------------------------------------------------------------------------
def _bin_sums(
    bins: np.ndarray, n_bins: int, exposure: np.ndarray, *values: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    sums = [np.bincount(bins, weights=v, minlength=n_bins) for v in values]
    return np.bincount(bins, weights=exposure, minlength=n_bins), sums


def _rate(total: np.ndarray, exposure: np.ndarray) -> np.ndarray:
    """total / exposure per bin; 0 for an empty bin (possible only with very uneven exposure)."""
    rate: np.ndarray = np.divide(total, exposure, out=np.zeros(len(total)), where=exposure > 0)
    return rate
