"""Checking the numeric inputs of the validation metrics, once, with errors that name them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError


def float_array(name: str, values: Any, length: int | None = None) -> np.ndarray:
    """``values`` as a 1-D float64 array of finite numbers (of ``length`` when given)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be numbers") from None
    if array.ndim != 1:
        raise InvalidInputError(f"{name} must be one-dimensional, got shape {array.shape}")
    if length is not None and len(array) != length:
        raise InvalidInputError(f"{name} has {len(array)} values, expected {length}")
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise InvalidInputError(f"{name} must be finite numbers (row {bad} is {array[bad]})")
    return array


def positive_array(name: str, values: Any, length: int | None = None) -> np.ndarray:
    """Like ``float_array``, and every value strictly positive (exposures, premiums)."""
    array = float_array(name, values, length)
    if len(array) and not (array > 0).all():
        bad = int(np.flatnonzero(array <= 0)[0])
        raise InvalidInputError(f"{name} must be positive (row {bad} is {array[bad]:g})")
    return array


def weights_array(weights: Any, length: int) -> np.ndarray:
    """Exposure weights: ones when ``weights`` is None, else non-negative with a positive sum."""
    if weights is None:
        return np.ones(length)
    array = float_array("weights", weights, length)
    if (array < 0).any():
        raise InvalidInputError("weights must not be negative")
    if length and not array.sum() > 0:
        raise InvalidInputError("weights must not all be zero")
    return array


def non_empty(name: str, length: int) -> None:
    if length == 0:
        raise InvalidInputError(f"{name} is empty")


def exposure_bins(order: np.ndarray, exposure: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index per policy: equal-exposure bins along ``order`` (a policy's midpoint decides)."""
    if n_bins < 2:
        raise InvalidInputError(f"n_bins must be at least 2, got {n_bins}")
    if len(order) < n_bins:
        raise InvalidInputError(f"{len(order)} policies cannot fill {n_bins} bins")
    sorted_exposure = exposure[order]
    midpoints = np.cumsum(sorted_exposure) - sorted_exposure / 2
    position = np.floor(midpoints / sorted_exposure.sum() * n_bins).astype(np.int64)
    bins = np.empty(len(order), dtype=np.int64)
    bins[order] = np.clip(position, 0, n_bins - 1)
    return bins


def floats(values: Any) -> tuple[float, ...]:
    """Plain Python floats (JSON-ready) from any sequence of numbers."""
    return tuple(float(v) for v in values)


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
