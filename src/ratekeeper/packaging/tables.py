"""Rating-factor tables: a GLM version as the CSV files pricing teams and IT read.

premium = base rate × Π relativity(rating factor) × exposure (log link). For a categorical
factor the relativity of each level is exp(coefficient), the base level being 1. For a numeric
factor the relativity at value x is exp(coefficient × x); its table lists it at every integer in
the training range (up to 200 values) or at the reference profile's bin edges.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.glm import GLMTerms
from ratekeeper.packaging.package import Package
from ratekeeper.packaging.profile import NumericBins
from ratekeeper.packaging.signature import INTEGER

_MAX_GRID = 200


def rating_tables(package: Package) -> dict[str, list[dict[str, Any]]]:
    """One table per file name: ``base``, one per categorical and one per numeric factor."""
    if package.flavor != "glm":
        raise InvalidInputError(
            f"rating-factor tables exist for GLM versions only; this version is {package.flavor}"
        )
    terms = GLMTerms.from_dict(package.manifest["glm"])
    log = terms.link == "log"
    tables: dict[str, list[dict[str, Any]]] = {
        "base": [
            {
                "family": terms.family,
                "link": terms.link,
                "intercept": terms.intercept,
                "base_rate": terms.base_rate,
                "exposure": package.signature.exposure.name if package.signature.exposure else "",
            }
        ]
    }
    for name, coefficients in terms.categorical.items():
        levels = package.signature.field(name).levels or tuple(coefficients)
        tables[name] = [
            {
                "level": level,
                "coefficient": coefficients.get(level, 0.0),
                "relativity": _relativity(coefficients.get(level, 0.0), log),
            }
            for level in levels
        ]
    for name, coefficient in terms.numeric.items():
        tables[name] = [
            {
                "value": value,
                "coefficient_per_unit": coefficient,
                "relativity": _relativity(coefficient * value, log),
            }
            for value in _grid(package, name)
        ]
    return tables


def write_rating_tables(package: Package, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in rating_tables(package).items():
        path = folder / f"{name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
    return written


def _relativity(eta: float, log: bool) -> float:
    return math.exp(eta) if log else eta


def _grid(package: Package, name: str) -> list[float]:
    field = package.signature.field(name)
    low, high = field.minimum, field.maximum
    if field.kind == INTEGER and low is not None and high is not None and high - low < _MAX_GRID:
        return [float(v) for v in np.arange(low, high + 1)]
    bins = package.profile.factors.get(name)
    edges = list(bins.edges) if isinstance(bins, NumericBins) else []
    return sorted({*(e for e in (low, high) if e is not None), *edges})
