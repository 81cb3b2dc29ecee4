"""Actuarial validation of a model version before promotion: metrics, gates and the report.

``run_gates(challenger, champion, holdout, target=..., policy=GatePolicy())`` returns a
``GateReport`` (stored as JSON with ``to_json``); ``render_html(report)`` turns it into one
self-contained HTML page for the reviewer.
"""

from ratekeeper.validation.compatibility import FieldChange, SignatureChanges, signature_changes
from ratekeeper.validation.dislocation import Dislocation, Segment, dislocation
from ratekeeper.validation.fairness import FairnessTable, fairness
from ratekeeper.validation.gate_report import GateReport, GateResult
from ratekeeper.validation.gates import GATES, deviance_family, run_gates
from ratekeeper.validation.metrics import (
    DoubleLift,
    LiftTable,
    double_lift,
    gamma_deviance,
    gini,
    lift_table,
    mean_deviance,
    poisson_deviance,
    tweedie_deviance,
)
from ratekeeper.validation.policy import GatePolicy, prohibited_factors_used
from ratekeeper.validation.report import render_html
from ratekeeper.validation.stability import SHARE_FLOOR, StabilityResult, chi2_sf, psi

__all__ = [
    "GATES",
    "SHARE_FLOOR",
    "Dislocation",
    "DoubleLift",
    "FairnessTable",
    "FieldChange",
    "GatePolicy",
    "GateReport",
    "GateResult",
    "LiftTable",
    "Segment",
    "SignatureChanges",
    "StabilityResult",
    "chi2_sf",
    "deviance_family",
    "dislocation",
    "double_lift",
    "fairness",
    "gamma_deviance",
    "gini",
    "lift_table",
    "mean_deviance",
    "poisson_deviance",
    "prohibited_factors_used",
    "psi",
    "render_html",
    "run_gates",
    "signature_changes",
    "tweedie_deviance",
]
