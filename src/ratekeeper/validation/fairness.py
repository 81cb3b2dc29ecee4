"""Fairness: the average premium per group of a protected attribute the model does not use.

A model that does not use gender can still price women and men differently through correlated
rating factors (indirect discrimination). The table shows, per group, the policies, the
exposure and the average premium per unit of exposure (Σ premium / Σ exposure), and the ratio
of the highest to the lowest group average: 1.00 is the same price for every group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError
from ratekeeper.validation.arrays import (
    float_array,
    floats,
    non_empty,
    optional_float,
    positive_array,
)

MISSING = "missing"


@dataclass(frozen=True)
class FairnessTable:
    attribute: str
    groups: tuple[str, ...]
    policies: tuple[int, ...]
    exposure: tuple[float, ...]
    average_premium: tuple[float, ...]
    """Σ premium / Σ exposure per group."""
    ratio: float | None
    """Highest / lowest group average; None with fewer than two groups or a zero average."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "groups": list(self.groups),
            "policies": list(self.policies),
            "exposure": list(self.exposure),
            "average_premium": list(self.average_premium),
            "ratio": self.ratio,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> FairnessTable:
        return cls(
            attribute=str(body["attribute"]),
            groups=tuple(str(g) for g in body["groups"]),
            policies=tuple(int(p) for p in body["policies"]),
            exposure=floats(body["exposure"]),
            average_premium=floats(body["average_premium"]),
            ratio=optional_float(body["ratio"]),
        )


def fairness(
    premium: Any, protected: Any, exposure: Any = None, *, attribute: str = "protected"
) -> FairnessTable:
    """Average premium per group of ``protected`` (one label per policy; nulls → ``missing``)."""
    import pandas as pd

    premium_ = float_array("premium", premium)
    non_empty("premium", len(premium_))
    exposure_ = (
        np.ones(len(premium_))
        if exposure is None
        else positive_array("exposure", exposure, len(premium_))
    )
    labels = pd.Series(np.asarray(protected, dtype=object)).fillna(MISSING).astype(str)
    if len(labels) != len(premium_):
        raise InvalidInputError(f"protected has {len(labels)} values, expected {len(premium_)}")
    codes, groups = pd.factorize(labels, sort=True)
    group_exposure = np.bincount(codes, weights=exposure_, minlength=len(groups))
    group_premium = np.bincount(codes, weights=premium_, minlength=len(groups))
    average = group_premium / group_exposure
    lowest = float(average.min())
    ratio = float(average.max() / lowest) if len(groups) > 1 and lowest > 0 else None
    return FairnessTable(
        attribute=attribute,
        groups=tuple(str(g) for g in groups),
        policies=tuple(int(c) for c in np.bincount(codes, minlength=len(groups))),
        exposure=floats(group_exposure),
        average_premium=floats(average),
        ratio=ratio,
    )
