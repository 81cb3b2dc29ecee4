"""The holdout as the promotion gates see it: observed totals, exposure and both models' prices.

Policies that either model refuses (a value outside its training range, a level it never saw, …)
cannot be priced by both, so they are left out of every gate and counted in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.lineage import data_fingerprint
from ratekeeper.packaging.profile import NumericBins
from ratekeeper.packaging.signature import CATEGORICAL
from ratekeeper.validation.policy import GatePolicy
from ratekeeper.validation.stability import MISSING, numeric_bin_of, numeric_labels


@dataclass(frozen=True)
class Holdout:
    """The holdout as the gates see it: observed totals, exposure, each model's prices."""

    frame: Any
    observed: np.ndarray
    exposure: np.ndarray
    challenger: np.ndarray
    champion: np.ndarray | None
    excluded_rows: int
    excluded_reason: str | None
    sha256: str
    """Content hash of the holdout as given (before any row is left out)."""


def prepare_holdout(
    challenger: Scorer, champion: Scorer | None, holdout: Any, target: str
) -> Holdout:
    """Check the holdout, leave out the policies a model refuses, and price the rest."""
    import pandas as pd

    frame = holdout.to_pandas() if type(holdout).__module__.startswith("pyarrow") else holdout
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(
            f"the holdout must be a pandas DataFrame or pyarrow Table, not {type(holdout).__name__}"
        )
    if len(frame) == 0:
        raise InvalidInputError("the holdout is empty")
    if target not in frame.columns:
        raise InvalidInputError(f"the holdout has no target column {target!r}")
    if not pd.api.types.is_numeric_dtype(frame[target].dtype):
        raise InvalidInputError(f"target column {target!r} must be numeric")
    observed = frame[target].to_numpy(dtype=np.float64, na_value=np.nan)
    if not (np.isfinite(observed).all() and (observed >= 0).all()):
        raise InvalidInputError(f"target column {target!r} must be finite and not negative")
    sha256 = data_fingerprint(frame)["content_sha256"]
    excluded, reason = _unpriceable(frame, challenger, champion)
    if excluded.any():
        frame, observed = frame[~excluded].reset_index(drop=True), observed[~excluded]
    name = exposure_name(challenger)
    exposure = np.ones(len(frame)) if name is None else frame[name].to_numpy(dtype=np.float64)
    return Holdout(
        frame=frame,
        observed=observed,
        exposure=exposure,
        challenger=challenger.predict(frame),
        champion=champion.predict(frame) if champion is not None else None,
        excluded_rows=int(excluded.sum()),
        excluded_reason=reason,
        sha256=sha256,
    )


def _unpriceable(
    frame: Any, challenger: Scorer, champion: Scorer | None
) -> tuple[np.ndarray, str | None]:
    """Rows either model refuses (outside a training range, an unseen level, …), and why.

    Such rows are left out of every gate and counted in the report. When no row is left, the
    holdout cannot serve as evidence at all.
    """
    excluded = np.zeros(len(frame), dtype=bool)
    reason: str | None = None
    for role, scorer in (("challenger", challenger), ("champion", champion)):
        if scorer is None:
            continue
        check = scorer.check(frame)
        if not check.ok:
            excluded |= check.bad_rows
            first = check.problems[0]
            where = f"row {first.row}, " if first.row is not None else ""
            reason = reason or (
                f"the {role} (version {scorer.version}) refuses {int(check.bad_rows.sum())} "
                f"rows, e.g. {where}{first.field}: {first.message}"
            )
    if excluded.all():
        raise InvalidInputError(f"no policy of the holdout can be priced: {reason}")
    return excluded, reason


def exposure_name(scorer: Scorer) -> str | None:
    field = scorer.signature.exposure
    return field.name if field is not None else None


def segments(frame: Any, challenger: Scorer, champion: Scorer | None) -> dict[str, np.ndarray]:
    """Each rating factor's level per policy; numeric factors banded by the registered bins."""
    import pandas as pd

    segments: dict[str, np.ndarray] = {}
    for scorer in (challenger, champion):
        if scorer is None:
            continue
        for f in scorer.signature.rating_factors:
            if f.name in segments or f.name not in frame.columns:
                continue
            column = frame[f.name]
            bins = scorer.package.profile.factors.get(f.name)
            if f.kind == CATEGORICAL or not isinstance(bins, NumericBins):
                segments[f.name] = column.to_numpy(dtype=object)
                continue
            values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
            labels = np.asarray([*numeric_labels(bins.edges), MISSING], dtype=object)
            segments[f.name] = labels[numeric_bin_of(bins.edges, values)]
    return segments


def protected_column(frame: Any, protected: str | None, policy: GatePolicy) -> str | None:
    if protected is not None:
        if protected not in frame.columns:
            raise InvalidInputError(f"the holdout has no protected column {protected!r}")
        return protected
    return next((str(c) for c in frame.columns if policy.prohibits(str(c))), None)
