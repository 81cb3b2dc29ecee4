"""The gate report: the immutable evidence a reviewer reads before approving a promotion.

It is stored as a JSON artifact, so it holds only plain values (no NaN, no infinity) and
round-trips exactly through ``to_dict`` / ``from_dict`` (and ``to_json`` / ``from_json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ratekeeper.errors import InvalidInputError
from ratekeeper.validation.arrays import optional_float
from ratekeeper.validation.compatibility import SignatureChanges
from ratekeeper.validation.dislocation import Dislocation
from ratekeeper.validation.fairness import FairnessTable
from ratekeeper.validation.metrics import DoubleLift, LiftTable
from ratekeeper.validation.policy import GatePolicy
from ratekeeper.validation.stability import StabilityResult

FORMAT = "ratekeeper-gate-report/1"
T = TypeVar("T")
PASS, FAIL, WARN, NOT_APPLICABLE = "PASS", "FAIL", "WARN", "N/A"


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    """Whether the check met its threshold (always True for a check without one)."""
    value: float | None
    threshold: float | None
    detail: str
    blocking: bool = True
    """Whether a failure blocks the promotion; False for report-only checks."""
    applicable: bool = True
    """False when the check needs a champion and there is none (it then passes)."""

    @property
    def status(self) -> str:
        """PASS, FAIL (blocks), WARN (failed, report only) or N/A."""
        if not self.applicable:
            return NOT_APPLICABLE
        if self.passed:
            return PASS
        return FAIL if self.blocking else WARN

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
            "blocking": self.blocking,
            "applicable": self.applicable,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> GateResult:
        return cls(
            name=str(body["name"]),
            passed=bool(body["passed"]),
            value=optional_float(body["value"]),
            threshold=optional_float(body["threshold"]),
            detail=str(body["detail"]),
            blocking=bool(body["blocking"]),
            applicable=bool(body["applicable"]),
        )


@dataclass(frozen=True)
class GateReport:
    model: str
    challenger_version: int
    champion_version: int | None
    challenger_digest: str
    """The challenger's artifact digest: exactly which package was validated."""
    champion_digest: str | None
    target: str
    exposure: str | None
    family: str
    power: float | None
    holdout_rows: int
    holdout_exposure: float
    """Rows and exposure the gates priced: the holdout less the excluded rows."""
    excluded_rows: int
    """Holdout rows left out because the challenger or the champion refuses them."""
    excluded_reason: str | None
    holdout_sha256: str
    """Content hash of the holdout frame (``packaging.lineage.data_fingerprint``)."""
    policy: GatePolicy
    results: tuple[GateResult, ...]
    passed: bool
    """True when no blocking gate failed."""
    lift: LiftTable
    champion_lift: LiftTable | None
    double_lift: DoubleLift | None
    dislocation: Dislocation | None
    fairness: FairnessTable | None
    stability: StabilityResult
    signature_changes: SignatureChanges | None
    created_at: str
    """When the gates ran, ISO 8601 in UTC."""

    def result(self, name: str) -> GateResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def failures(self) -> tuple[GateResult, ...]:
        """The gates that block this promotion."""
        return tuple(r for r in self.results if r.status == FAIL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            "challenger_digest": self.challenger_digest,
            "champion_digest": self.champion_digest,
            "target": self.target,
            "exposure": self.exposure,
            "family": self.family,
            "power": self.power,
            "holdout_rows": self.holdout_rows,
            "holdout_exposure": self.holdout_exposure,
            "excluded_rows": self.excluded_rows,
            "excluded_reason": self.excluded_reason,
            "holdout_sha256": self.holdout_sha256,
            "policy": self.policy.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "passed": self.passed,
            "lift": self.lift.to_dict(),
            "champion_lift": _optional(self.champion_lift),
            "double_lift": _optional(self.double_lift),
            "dislocation": _optional(self.dislocation),
            "fairness": _optional(self.fairness),
            "stability": self.stability.to_dict(),
            "signature_changes": _optional(self.signature_changes),
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> GateReport:
        if body.get("format") != FORMAT:
            raise InvalidInputError(f"not a gate report: format {body.get('format')!r}")
        champion_version = body["champion_version"]
        return cls(
            model=str(body["model"]),
            challenger_version=int(body["challenger_version"]),
            champion_version=int(champion_version) if champion_version is not None else None,
            challenger_digest=str(body["challenger_digest"]),
            champion_digest=body["champion_digest"],
            target=str(body["target"]),
            exposure=body["exposure"],
            family=str(body["family"]),
            power=optional_float(body["power"]),
            holdout_rows=int(body["holdout_rows"]),
            holdout_exposure=float(body["holdout_exposure"]),
            excluded_rows=int(body["excluded_rows"]),
            excluded_reason=body["excluded_reason"],
            holdout_sha256=str(body["holdout_sha256"]),
            policy=GatePolicy.from_dict(body["policy"]),
            results=tuple(GateResult.from_dict(r) for r in body["results"]),
            passed=bool(body["passed"]),
            lift=LiftTable.from_dict(body["lift"]),
            champion_lift=_maybe(LiftTable.from_dict, body["champion_lift"]),
            double_lift=_maybe(DoubleLift.from_dict, body["double_lift"]),
            dislocation=_maybe(Dislocation.from_dict, body["dislocation"]),
            fairness=_maybe(FairnessTable.from_dict, body["fairness"]),
            stability=StabilityResult.from_dict(body["stability"]),
            signature_changes=_maybe(SignatureChanges.from_dict, body["signature_changes"]),
            created_at=str(body["created_at"]),
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys); raises ValueError rather than write NaN or infinity."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> GateReport:
        return cls.from_dict(json.loads(text))


def _optional(part: Any) -> Any:
    return part.to_dict() if part is not None else None


def _maybe(read: Callable[[Any], T], body: Any) -> T | None:
    return read(body) if body is not None else None
