"""Actuarial promotion gates: the challenger against the champion on a holdout book.

``run_gates`` prices the holdout with both models, computes every metric once, and returns a
``GateReport``. The gates, in report order:

- ``signature_compatibility`` (report only): what quote clients must change;
- ``prohibited_factors``: the challenger uses no prohibited rating factor;
- ``deviance``: holdout deviance at most ``deviance_margin`` (relative) above the champion's;
- ``gini``: holdout Gini at most ``gini_margin`` (absolute) below the champion's;
- ``lift`` (report only): actual vs predicted by decile of predicted rate;
- ``double_lift`` (report only): which model tracks the actual where the two disagree;
- ``dislocation_10`` / ``dislocation_25``: the share of policies whose premium moves beyond
  ±10 % / ±25 % is at most ``dislocation_cap_10`` / ``dislocation_cap_25``;
- ``stability``: PSI of the predicted rate on the holdout vs the training profile is below
  ``psi_threshold``;
- ``fairness``: highest / lowest average premium per protected group at most
  ``fairness_threshold`` (blocking only when ``fairness_blocks``).

With no champion (a first promotion) the comparative gates are not applicable and pass. Both
models' deviances are measured with the challenger's family, so that they are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ratekeeper.engine.scorer import Scorer
from ratekeeper.validation import metrics
from ratekeeper.validation.compatibility import SignatureChanges, signature_changes
from ratekeeper.validation.dislocation import Dislocation, dislocation
from ratekeeper.validation.fairness import FairnessTable, fairness
from ratekeeper.validation.gate_report import FAIL, GateReport, GateResult
from ratekeeper.validation.holdout import (
    Holdout,
    exposure_name,
    prepare_holdout,
    protected_column,
    segments,
)
from ratekeeper.validation.policy import GatePolicy, prohibited_factors_used
from ratekeeper.validation.stability import (
    StabilityResult,
    psi,
)

GATES = (
    "signature_compatibility",
    "prohibited_factors",
    "deviance",
    "gini",
    "lift",
    "double_lift",
    "dislocation_10",
    "dislocation_25",
    "stability",
    "fairness",
)
NO_CHAMPION = "not applicable: there is no Production version to compare with"


def run_gates(
    challenger: Scorer,
    champion: Scorer | None,
    holdout: Any,
    *,
    target: str,
    policy: GatePolicy | None = None,
    protected: str | None = None,
    n_bins: int = 10,
) -> GateReport:
    """Run every promotion gate of ``challenger`` against ``champion`` on ``holdout``.

    ``holdout`` is a pandas DataFrame (or pyarrow Table) of policies with their rating factors,
    the exposure column of the challenger's signature (all ones when it declares none) and
    ``target``, the observed totals (claim counts or costs). ``protected`` names a column the
    model must not discriminate by (e.g. gender); when None, the first holdout column whose
    name the policy prohibits is used, if any.
    """
    policy = policy or GatePolicy()
    book = prepare_holdout(challenger, champion, holdout, target)
    attribute = protected_column(book.frame, protected, policy)
    family, power = deviance_family(challenger)
    changes = (
        signature_changes(champion.signature, challenger.signature)
        if champion is not None
        else None
    )
    charts = _charts(book, challenger, champion, n_bins)
    stability = psi(
        challenger.package.profile.prediction, book.challenger / book.exposure, book.exposure
    )
    table, champion_table = _fairness_tables(book, attribute)
    results = (
        _compatibility_gate(changes),
        _prohibited_gate(challenger, policy),
        *_performance_gates(book, family, power, policy),
        _lift_gate(charts.lift, charts.champion_lift),
        _double_lift_gate(charts.double_lift),
        *_dislocation_gates(charts.dislocation, policy),
        _stability_gate(stability, policy),
        _fairness_gate(table, champion_table, policy),
    )
    return GateReport(
        model=challenger.name,
        challenger_version=challenger.version,
        champion_version=champion.version if champion is not None else None,
        challenger_digest=challenger.model_version.artifact_digest,
        champion_digest=champion.model_version.artifact_digest if champion is not None else None,
        target=target,
        exposure=exposure_name(challenger),
        family=family,
        power=power,
        holdout_rows=len(book.observed),
        holdout_exposure=float(book.exposure.sum()),
        excluded_rows=book.excluded_rows,
        excluded_reason=book.excluded_reason,
        holdout_sha256=book.sha256,
        policy=policy,
        results=results,
        passed=all(r.status != FAIL for r in results),
        lift=charts.lift,
        champion_lift=charts.champion_lift,
        double_lift=charts.double_lift,
        dislocation=charts.dislocation,
        fairness=table,
        stability=stability,
        signature_changes=changes,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def deviance_family(scorer: Scorer) -> tuple[str, float | None]:
    """The GLM's own family (and Tweedie power) for a GLM; Poisson for anything else."""
    glm = scorer.package.manifest.get("glm")
    if scorer.flavor == "glm" and isinstance(glm, dict):
        power = glm.get("power")
        return str(glm["family"]), float(power) if power is not None else None
    return "poisson", None


@dataclass(frozen=True)
class _Charts:
    lift: metrics.LiftTable
    champion_lift: metrics.LiftTable | None
    double_lift: metrics.DoubleLift | None
    dislocation: Dislocation | None


def _charts(book: Holdout, challenger: Scorer, champion: Scorer | None, n_bins: int) -> _Charts:
    lift = metrics.lift_table(book.observed, book.challenger, book.exposure, n_bins)
    if champion is None or book.champion is None:
        return _Charts(lift, None, None, None)
    return _Charts(
        lift,
        metrics.lift_table(book.observed, book.champion, book.exposure, n_bins),
        metrics.double_lift(book.observed, book.champion, book.challenger, book.exposure, n_bins),
        dislocation(
            book.champion,
            book.challenger,
            segments(book.frame, challenger, champion),
            exposure=book.exposure,
        ),
    )


def _fairness_tables(
    book: Holdout, attribute: str | None
) -> tuple[FairnessTable | None, FairnessTable | None]:
    """The challenger's and the champion's average premium per group of ``attribute``."""
    if attribute is None:
        return None, None
    groups = book.frame[attribute].to_numpy(dtype=object)
    tables = [
        fairness(prices, groups, book.exposure, attribute=attribute) if prices is not None else None
        for prices in (book.challenger, book.champion)
    ]
    return tables[0], tables[1]


# -- the gates -----------------------------------------------------------------------------
def _compatibility_gate(changes: SignatureChanges | None) -> GateResult:
    name = "signature_compatibility"
    if changes is None:
        return GateResult(name, True, None, None, NO_CHAMPION, blocking=False, applicable=False)
    breaking = [c for c in changes.changes if c.breaking]
    if not changes.changes:
        detail = "quote clients need no change: the signatures are the same"
    else:
        listed = "; ".join(f"{c.field} {c.change.replace('_', ' ')}" for c in changes.changes)
        detail = f"{len(changes.changes)} changes, {len(breaking)} breaking: {listed}"
    return GateResult(name, not breaking, float(len(breaking)), 0.0, detail, blocking=False)


def _prohibited_gate(challenger: Scorer, policy: GatePolicy) -> GateResult:
    used = prohibited_factors_used(challenger.signature, policy, challenger.model_inputs)
    detail = (
        f"uses prohibited rating factors: {', '.join(used)}"
        if used
        else f"uses none of: {', '.join(policy.prohibited_factors)}"
    )
    return GateResult("prohibited_factors", not used, float(len(used)), 0.0, detail)


def _performance_gates(
    book: Holdout, family: str, power: float | None, policy: GatePolicy
) -> list[GateResult]:
    rate = book.observed / book.exposure

    def deviance(prices: np.ndarray) -> float:
        return metrics.mean_deviance(
            family, rate, prices / book.exposure, book.exposure, power=power
        )

    label = f"tweedie (power {power:g})" if family == "tweedie" and power is not None else family
    challenger_deviance = deviance(book.challenger)
    challenger_gini = metrics.gini(book.observed, book.challenger, book.exposure)
    if book.champion is None:
        return [
            GateResult(
                "deviance",
                True,
                None,
                policy.deviance_margin,
                f"{NO_CHAMPION}; challenger {label} deviance {challenger_deviance:.6g}",
                applicable=False,
            ),
            GateResult(
                "gini",
                True,
                None,
                -policy.gini_margin,
                f"{NO_CHAMPION}; challenger Gini {challenger_gini:.4f}",
                applicable=False,
            ),
        ]
    champion_deviance = deviance(book.champion)
    relative = challenger_deviance / champion_deviance - 1 if champion_deviance > 0 else 0.0
    champion_gini = metrics.gini(book.observed, book.champion, book.exposure)
    difference = challenger_gini - champion_gini
    return [
        GateResult(
            "deviance",
            challenger_deviance <= champion_deviance * (1 + policy.deviance_margin),
            relative,
            policy.deviance_margin,
            f"mean {label} deviance: challenger {challenger_deviance:.6g}, champion "
            f"{champion_deviance:.6g} ({relative:+.2%}; may be at most "
            f"{policy.deviance_margin:.1%} worse)",
        ),
        GateResult(
            "gini",
            difference >= -policy.gini_margin,
            difference,
            -policy.gini_margin,
            f"Gini: challenger {challenger_gini:.4f}, champion {champion_gini:.4f} "
            f"({difference:+.4f}; may be at most {policy.gini_margin:g} lower)",
        ),
    ]


def _stability_gate(stability: StabilityResult, policy: GatePolicy) -> GateResult:
    return GateResult(
        "stability",
        stability.psi < policy.psi_threshold,
        stability.psi,
        policy.psi_threshold,
        f"PSI of the predicted rate on the holdout vs the training profile: "
        f"{stability.psi:.4f} (chi-square p = {stability.p_value:.3g})",
    )


def _lift_gate(lift: metrics.LiftTable, champion: metrics.LiftTable | None) -> GateResult:
    def text(table: metrics.LiftTable) -> str:
        return (
            f"{table.lift:.2f}×"
            if table.lift is not None
            else "undefined (no claims in the bottom bin)"
        )

    detail = f"actual rate, top vs bottom bin of predicted rate: {text(lift)}"
    if champion is not None:
        detail += f" (champion {text(champion)})"
    return GateResult("lift", True, lift.lift, None, detail, blocking=False)


def _double_lift_gate(double: metrics.DoubleLift | None) -> GateResult:
    if double is None:
        return GateResult(
            "double_lift", True, None, None, NO_CHAMPION, blocking=False, applicable=False
        )
    better = double.challenger_error <= double.champion_error
    detail = (
        f"mean distance to the actual across the bins of challenger/champion: challenger "
        f"{double.challenger_error:.2%}, champion {double.champion_error:.2%} — "
        f"{'the challenger' if better else 'the champion'} tracks the actual better"
    )
    value = double.challenger_error - double.champion_error
    return GateResult("double_lift", better, value, 0.0, detail, blocking=False)


def _dislocation_gates(moves: Dislocation | None, policy: GatePolicy) -> list[GateResult]:
    results: list[GateResult] = []
    for name, cap, limit in (
        ("dislocation_10", 0.10, policy.dislocation_cap_10),
        ("dislocation_25", 0.25, policy.dislocation_cap_25),
    ):
        if moves is None:
            results.append(GateResult(name, True, None, limit, NO_CHAMPION, applicable=False))
            continue
        share = moves.beyond(cap)
        detail = (
            f"{share:.1%} of policies move by more than ±{cap:.0%} "
            f"({moves.up[moves.caps.index(cap)]:.1%} up, {moves.down[moves.caps.index(cap)]:.1%} "
            f"down; at most {limit:.0%} allowed); whole book {moves.total_change:+.2%}"
        )
        results.append(GateResult(name, share <= limit, share, limit, detail))
    return results


def _fairness_gate(
    table: FairnessTable | None, champion: FairnessTable | None, policy: GatePolicy
) -> GateResult:
    threshold = policy.fairness_threshold
    blocks = policy.fairness_blocks
    if table is None:
        detail = "not applicable: the holdout has no protected attribute (pass protected=...)"
        return GateResult("fairness", True, None, threshold, detail, blocks, applicable=False)
    if table.ratio is None:
        detail = f"{table.attribute}: fewer than two groups, nothing to compare"
        return GateResult("fairness", True, None, threshold, detail, blocks)
    averages = ", ".join(
        f"{g} {a:.4g}" for g, a in zip(table.groups, table.average_premium, strict=True)
    )
    detail = (
        f"average premium per unit of exposure by {table.attribute}: {averages}; "
        f"highest / lowest {table.ratio:.3f}"
    )
    if champion is not None and champion.ratio is not None:
        detail += f" (champion {champion.ratio:.3f})"
    if not blocks:
        detail += "; report only"
    return GateResult("fairness", table.ratio <= threshold, table.ratio, threshold, detail, blocks)
