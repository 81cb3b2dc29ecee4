"""The scorer: the one framework-free core that prices policies.

The quote endpoint, batch scoring and Spark all price through a ``Scorer``: the signature check
first, then the flavor's rate per unit of exposure, multiplied by the exposure when the
signature declares one.

A price is returned only when it is finite, not negative, and its rate per unit of exposure is
at most the version's ceiling (``schema.rate_ceiling``: 1,000 × the top decile edge of the
training predictions). Anything else raises ``ImplausiblePriceError`` (per row in
``price_valid``): a defective or crafted model never quotes NaN, inf or 8e302.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ratekeeper.errors import ImplausiblePriceError, InvalidInputError, Problem
from ratekeeper.packaging.frames import Columns, as_float, take, to_columns
from ratekeeper.packaging.package import Package
from ratekeeper.packaging.schema import rate_ceiling
from ratekeeper.packaging.signature import (
    Signature,
    ValidationPolicy,
    ValidationReport,
    problems_error,
)
from ratekeeper.registry.entities import ModelVersion

_INF = float("inf")


@dataclass(frozen=True)
class PricedRows:
    """What ``Scorer.price_valid`` returns: prices where a row passed, the report of the rest."""

    prices: np.ndarray
    """One price per row; NaN where the row was rejected."""
    report: ValidationReport

    @property
    def rejected(self) -> np.ndarray:
        """Boolean mask, one entry per row: True where the row was not priced."""
        return self.report.bad_rows


class Scorer:
    def __init__(self, model_version: ModelVersion, package: Package) -> None:
        self.model_version = model_version
        self.package = package
        self.signature: Signature = package.signature
        # Frames often carry claims and other columns: predict() ignores columns it does not know.
        self._frame_signature = replace(
            self.signature, policy=replace(self.signature.policy, unknown_field="ignore")
        )
        self._predictor = package.predictor
        exposure = self.signature.exposure
        self._exposure = exposure.name if exposure is not None else None
        self.rate_ceiling = rate_ceiling(package.profile.prediction.edges)
        """The highest rate per unit of exposure this scorer returns."""
        self.label = str(model_version.version)
        """The version as a metrics label (made once, not per quote)."""

    def __repr__(self) -> str:
        return f"<Scorer {self.name} v{self.version} ({self.flavor})>"

    @property
    def name(self) -> str:
        return self.model_version.name

    @property
    def version(self) -> int:
        return self.model_version.version

    @property
    def flavor(self) -> str:
        return self.package.flavor

    @property
    def model_inputs(self) -> frozenset[str]:
        """The fields the model actually reads (what the prohibited-factor gate checks)."""
        return self.package.model_inputs

    def predict_one(self, policy: Mapping[str, Any], clipped: list[str] | None = None) -> float:
        """Price one policy given as a mapping of rating factors; raises on any problem.

        Under ``out_of_range="clip"`` the fields capped at their training range are appended to
        ``clipped`` when it is given.
        """
        if not isinstance(policy, Mapping):
            raise InvalidInputError(f"a policy must be a mapping, not {type(policy).__name__}")
        capped: list[str] = [] if clipped is None else clipped
        problems = self.signature.check_row(policy, clipped=capped)
        if problems:
            raise problems_error(problems)
        if capped:
            policy = self.signature.clip_row(policy, capped)
        rate = self._predictor.predict_row(policy)
        # Two comparisons on the hot path: NaN fails both, so it is refused too.
        if not 0.0 <= rate <= self.rate_ceiling:
            raise self._implausible(rate)
        if self._exposure is None:
            return rate
        price: float = rate * policy[self._exposure]
        if price == _INF:  # a finite rate times an enormous exposure
            raise self._implausible(price)
        return price

    def predict(self, data: Any) -> np.ndarray:
        """Price many policies (pandas, pyarrow or a list of dicts); all or nothing."""
        columns, n_rows = to_columns(data)
        report = self._frame_signature.check_columns(columns, n_rows)
        report.raise_for_problems()
        prices, bad = self._price(self.signature.clip_columns(columns, report.clipped), n_rows)
        if bad.any():
            raise self._implausible(float(prices[np.flatnonzero(bad)[0]]), bad)
        return prices

    def predict_each(self, policies: Sequence[Any]) -> list[float | list[Problem]]:
        """Price each policy on its own: a price, or that policy's problems, in order."""
        results: list[float | list[Problem]] = []
        valid: list[Mapping[str, Any]] = []
        positions: list[int] = []
        for position, policy in enumerate(policies):
            if not isinstance(policy, Mapping):
                problem = Problem("policy", "wrong_type", "must be a JSON object", position)
                results.append([problem])
                continue
            capped: list[str] = []
            problems = self.signature.check_row(policy, position, capped)
            results.append(problems)
            if not problems:
                valid.append(self.signature.clip_row(policy, capped) if capped else policy)
                positions.append(position)
        if valid:
            columns, n_rows = to_columns(valid)
            prices, bad = self._price(columns, n_rows)
            if bad.any():  # the model is defective for these policies: answer none of them
                raise self._implausible(float(prices[np.flatnonzero(bad)[0]]), bad)
            for position, price in zip(positions, prices.tolist(), strict=True):
                results[position] = price
        return results

    def price_valid(self, columns: Columns, n_rows: int) -> PricedRows:
        """Price the rows that pass the signature check; report the others (batch scoring).

        The same check and the same arithmetic as ``predict``: a row priced here gets the price
        ``predict_one`` gives it.
        """
        report = self._frame_signature.check_columns(columns, n_rows)
        columns = self.signature.clip_columns(columns, report.clipped)
        if report.ok:
            prices, bad = self._price(columns, n_rows)
            return self._without_implausible(prices, bad, report)
        prices = np.full(n_rows, np.nan)
        bad = np.zeros(n_rows, dtype=bool)
        valid = np.flatnonzero(~report.bad_rows)
        if len(valid):
            prices[valid], bad[valid] = self._price(take(columns, valid), len(valid))
        return self._without_implausible(prices, bad, report)

    def with_policy(self, policy: ValidationPolicy) -> Scorer:
        """The same version checked under another validation policy (e.g. batch ``clip``)."""
        package = replace(self.package, signature=self.signature.with_policy(policy))
        return Scorer(self.model_version, package)

    def row_problems(self, row: Mapping[str, Any], position: int | None = None) -> list[Problem]:
        """Every problem of one row of a frame (columns the model does not use are ignored)."""
        return self._frame_signature.check_row(row, position)

    def _price(self, columns: Columns, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Prices, and the mask of those that must not be returned."""
        rate = self._predictor.predict_columns(columns, n_rows)
        with np.errstate(invalid="ignore", over="ignore"):
            bad = ~((rate >= 0.0) & (rate <= self.rate_ceiling))
            if self._exposure is None:
                return rate, bad
            priced: np.ndarray = rate * as_float(columns[self._exposure])
            return priced, bad | (priced == _INF)

    def _without_implausible(
        self, prices: np.ndarray, bad: np.ndarray, report: ValidationReport
    ) -> PricedRows:
        """Rows priced beyond plausibility become rejected rows, each with its problem."""
        if not bad.any():
            return PricedRows(prices, report)
        rows = np.flatnonzero(bad)
        problems = [
            Problem("prediction", "implausible_price", self._implausible_message(prices[i]), int(i))
            for i in rows
        ]
        prices[rows] = np.nan
        mask = report.bad_rows | bad
        return PricedRows(
            prices,
            ValidationReport(report.problems + problems, report.n_problems + len(rows), mask),
        )

    def _implausible_message(self, price: float) -> str:
        return (
            f"{self.name} version {self.version} produced {price:.6g} for a policy; a price must "
            f"be finite, not negative and at most {self.rate_ceiling:.6g} per unit of exposure, "
            "so it is not returned"
        )

    def _implausible(self, price: float, bad: np.ndarray | None = None) -> ImplausiblePriceError:
        count = int(bad.sum()) if bad is not None else 1
        more = f" ({count - 1} more policies alike)" if count > 1 else ""
        return ImplausiblePriceError(self._implausible_message(price) + more)

    def check(self, data: Any) -> ValidationReport:
        """Every problem with ``data``, without pricing it."""
        return self._frame_signature.validate(data)
