"""The promotion-gate policy: which checks block a promotion, and at what thresholds.

The defaults are deliberately safe; a firm loosens them explicitly, and the policy in force is
recorded in every gate report.

- ``prohibited_factors`` (gender, sex, drv_sex1, drv_sex2, race, ethnicity, ethnic_origin,
  religion): fails when a rating factor has one of these names (case-insensitive). EU law
  (the Test-Achats ruling on Directive 2004/113/EC) forbids gender as a rating factor; race,
  ethnic origin and religion are protected grounds.
- ``deviance_margin`` (0.01): fails when the challenger's holdout deviance exceeds the
  champion's × (1 + margin).
- ``gini_margin`` (0.01): fails when the challenger's Gini is below the champion's − margin
  (absolute).
- ``dislocation_cap_10`` (0.5) / ``dislocation_cap_25`` (0.2): fails when more than this share
  of policies sees its premium move by more than ±10 % / ±25 %.
- ``psi_threshold`` (0.25): fails when the PSI of the challenger's predicted rate on the holdout
  against its own training profile reaches the threshold.
- ``fairness_threshold`` (1.10): the highest / lowest average premium across the groups of a
  protected attribute; above it the gate warns, and fails only when ``fairness_blocks`` is True.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.signature import Signature

DEFAULT_PROHIBITED_FACTORS = (
    "gender",
    "sex",
    "drv_sex1",
    "drv_sex2",
    "race",
    "ethnicity",
    "ethnic_origin",
    "religion",
)


@dataclass(frozen=True)
class GatePolicy:
    prohibited_factors: tuple[str, ...] = DEFAULT_PROHIBITED_FACTORS
    deviance_margin: float = 0.01
    gini_margin: float = 0.01
    dislocation_cap_10: float = 0.5
    dislocation_cap_25: float = 0.2
    psi_threshold: float = 0.25
    fairness_threshold: float = 1.10
    fairness_blocks: bool = False

    def __post_init__(self) -> None:
        factors = self.prohibited_factors
        if isinstance(factors, str) or not all(isinstance(f, str) for f in factors):
            raise InvalidInputError("prohibited_factors must be a list of factor names")
        object.__setattr__(self, "prohibited_factors", tuple(factors))
        for name in ("deviance_margin", "gini_margin", "psi_threshold"):
            _check_number(name, getattr(self, name), 0.0, None)
        for name in ("dislocation_cap_10", "dislocation_cap_25"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        _check_number("fairness_threshold", self.fairness_threshold, 1.0, None)
        if not isinstance(self.fairness_blocks, bool):
            raise InvalidInputError("fairness_blocks must be true or false")

    def prohibits(self, name: str) -> bool:
        return name.casefold() in {f.casefold() for f in self.prohibited_factors}

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["prohibited_factors"] = list(self.prohibited_factors)
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> GatePolicy:
        """A policy from JSON; missing settings take their defaults, unknown ones are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown gate policy setting {unknown[0]!r}: use {', '.join(sorted(known))}"
            )
        values = dict(body)
        if "prohibited_factors" in values and isinstance(values["prohibited_factors"], list):
            values["prohibited_factors"] = tuple(values["prohibited_factors"])
        return cls(**values)


def prohibited_factors_used(
    signature: Signature, policy: GatePolicy, model_inputs: Iterable[str] = ()
) -> list[str]:
    """The factors ``policy`` prohibits among the signature's rating factors and the fields the
    model actually reads (``Package.model_inputs``: a GLM's terms, an ONNX graph's inputs).

    Signature order first, then any input the signature does not list as a rating factor, sorted
    (a validated package has none; the check does not rely on that).
    """
    declared = [f.name for f in signature.rating_factors]
    undeclared = sorted(set(model_inputs) - set(declared))
    return [name for name in [*declared, *undeclared] if policy.prohibits(name)]


def _check_number(name: str, value: Any, low: float, high: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    if not low <= value <= (high if high is not None else float("inf")):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise InvalidInputError(f"{name} must be {bound}, got {value:g}")
