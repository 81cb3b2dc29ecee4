"""The GLM flavor: a fitted GLM stored as explicit coefficients, never as code.

A scikit-learn ``PoissonRegressor`` / ``GammaRegressor`` / ``TweedieRegressor`` (alone, or after
a ``ColumnTransformer`` of ``OneHotEncoder``, ``StandardScaler`` and passthrough columns) becomes
a base rate and one relativity per rating-factor level: the rating-factor tables pricing teams
and IT read. Scaling of numeric factors is folded into their coefficients and the intercept, so
the package needs nothing of scikit-learn to price a policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.errors import UnsupportedModelError
from ratekeeper.packaging import schema
from ratekeeper.packaging.frames import Column, Columns, Factor, as_float, level_codes
from ratekeeper.packaging.schema import (
    MAX_COEFFICIENTS,
    MAX_FIELDS,
    MAX_LEVELS,
    MAX_LOG_COEFFICIENT,
    MAX_RATE,
    refuse,
    short,
)
from ratekeeper.packaging.signature import CATEGORICAL, INTEGER, NUMERIC, RATING_FACTOR, Signature

_LINKS = ("log", "identity")
FAMILIES = ("poisson", "gamma", "tweedie", "normal")


@dataclass(frozen=True)
class GLMTerms:
    family: str
    link: str
    power: float | None
    intercept: float
    categorical: dict[str, dict[str, float]]
    """factor → level → coefficient; the base level (dropped in encoding) has no entry (= 0)."""
    numeric: dict[str, float]
    """factor → coefficient per unit."""

    @property
    def factors(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    @property
    def base_rate(self) -> float:
        return _inverse_link(self.link, self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "link": self.link,
            "power": self.power,
            "intercept": self.intercept,
            "categorical": self.categorical,
            "numeric": self.numeric,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> GLMTerms:
        if body["link"] not in _LINKS:
            raise UnsupportedModelError(f"unknown GLM link {body['link']!r}")
        return cls(
            family=body["family"],
            link=body["link"],
            power=body.get("power"),
            intercept=float(body["intercept"]),
            categorical={
                k: {lv: float(c) for lv, c in v.items()} for k, v in body["categorical"].items()
            },
            numeric={k: float(v) for k, v in body["numeric"].items()},
        )


def checked_terms(value: Any, signature: Signature) -> GLMTerms:
    """The coefficients of a manifest, each finite and bounded, each term a factor of ``signature``.

    On the log scale every term's largest contribution stays within ``MAX_LOG_COEFFICIENT``:
    a level's coefficient, or a numeric coefficient times the largest |value| of its training
    range. On the identity scale the same holds against ``MAX_RATE``.
    """
    body = schema.obj(
        value, "glm", {"family", "link", "power", "intercept", "categorical", "numeric"}
    )
    schema.choice(body["family"], "glm.family", FAMILIES)
    link = schema.choice(body["link"], "glm.link", _LINKS)
    if body["power"] is not None:
        schema.number(body["power"], "glm.power", -10.0, 10.0)
    bound = MAX_LOG_COEFFICIENT if link == "log" else MAX_RATE
    schema.number(body["intercept"], "glm.intercept", -bound, bound)
    categorical = schema.mapping(body["categorical"], "glm.categorical", MAX_FIELDS)
    numeric = schema.mapping(body["numeric"], "glm.numeric", MAX_FIELDS)
    count = 0
    for name, table in categorical.items():
        where = f"glm.categorical.{short(name)}"
        _check_term(signature, name, (CATEGORICAL,), where)
        for level, coefficient in schema.mapping(table, where, MAX_LEVELS).items():
            schema.string(level, where, schema.MAX_LEVEL_CHARS)
            schema.number(coefficient, f"{where}[{short(level)}]", -bound, bound)
        count += len(table)
        if count > MAX_COEFFICIENTS:
            raise refuse("glm", f"has more than {MAX_COEFFICIENTS:,} coefficients")
    for name, coefficient in numeric.items():
        where = f"glm.numeric.{short(name)}"
        if name in categorical:
            raise refuse(where, "is also a categorical term")
        field = _check_term(signature, name, (NUMERIC, INTEGER), where)
        per_unit = schema.number(coefficient, where)
        reach = max(abs(field.minimum or 0.0), abs(field.maximum or 0.0))
        if abs(per_unit) * reach > bound:
            raise refuse(
                where,
                f"moves the linear predictor by {abs(per_unit) * reach:.3g} over the training "
                f"range, more than the {bound:g} allowed",
            )
    return GLMTerms.from_dict(body)


def _check_term(signature: Signature, name: str, kinds: tuple[str, ...], where: str) -> Any:
    if name not in signature.names:
        raise refuse(where, "is a term of a field the signature does not declare")
    field = signature.field(name)
    if field.role != RATING_FACTOR or field.kind not in kinds:
        raise refuse(
            where,
            f"is a term of {field.kind} {field.role} field, not of a {kinds[0]} rating factor",
        )
    return field


class GLMPredictor:
    """Prices from coefficients: a dict lookup per categorical factor, a multiply per numeric."""

    flavor = "glm"

    def __init__(self, terms: GLMTerms) -> None:
        self.terms = terms
        self._categorical = list(terms.categorical.items())
        self._numeric = list(terms.numeric.items())
        self._log = terms.link == "log"

    # Online and batch prices must be bit-identical: both paths add the same terms in the same
    # order (intercept, categorical factors, numeric factors) and both use numpy's exp, whose
    # SIMD kernels can differ from math.exp in the last bit on some CPUs.
    def predict_row(self, row: Mapping[str, Any]) -> float:
        eta = self.terms.intercept
        for name, table in self._categorical:
            eta += table.get(row[name], 0.0)
        for name, coefficient in self._numeric:
            eta += coefficient * row[name]
        return float(_exp(eta)) if self._log else eta

    def predict_columns(self, columns: Columns, n_rows: int) -> np.ndarray:
        eta = np.full(n_rows, self.terms.intercept)
        for name, table in self._categorical:
            eta += self._relativity_terms(columns[name], table)
        for name, coefficient in self._numeric:
            eta += coefficient * as_float(columns[name])
        if self._log:
            np.exp(eta, out=eta)
        return eta

    @staticmethod
    def _relativity_terms(column: Column, table: dict[str, float]) -> np.ndarray:
        """Each row's coefficient: looked up once per distinct value, then one gather."""
        if not isinstance(column, Factor):
            column = Factor.of(np.asarray(column, dtype=object))
        # level_codes gives -1 for a level without a coefficient (the base level, or one the
        # validation policy let through): the appended 0.0 sits at index -1, and so does the
        # null code of the column.
        coefficients = np.append(np.fromiter(table.values(), dtype=np.float64), 0.0)
        per_value = np.append(coefficients[level_codes(column.uniques, list(table))], 0.0)
        terms: np.ndarray = per_value[column.codes]
        return terms


_exp = np.exp


def terms_from_sklearn(model: Any) -> GLMTerms:
    """Read the coefficients out of a fitted scikit-learn GLM (or pipeline ending in one)."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        if len(model.steps) != 2:
            raise UnsupportedModelError(
                "a GLM pipeline must be exactly (preprocessing, GLM) to be stored as coefficients"
            )
        preprocess, glm = model.steps[0][1], model.steps[1][1]
    else:
        preprocess, glm = None, model
    family, link, power = _family_and_link(glm)
    coef = np.asarray(glm.coef_, dtype=np.float64)
    intercept = float(glm.intercept_)
    categorical: dict[str, dict[str, float]] = {}
    numeric: dict[str, float] = {}
    if preprocess is None:
        names = _feature_names(glm)
        numeric = {name: float(c) for name, c in zip(names, coef, strict=True)}
    else:
        intercept = _read_column_transformer(preprocess, coef, intercept, categorical, numeric)
    return GLMTerms(family, link, power, intercept, categorical, numeric)


def is_glum_glm(model: Any) -> bool:
    return type(model).__module__.startswith("glum") and hasattr(model, "coef_")


def terms_from_glum(model: Any) -> GLMTerms:
    """Read a fitted glum ``GeneralizedLinearRegressor`` (fitted on a DataFrame, no formula)."""
    if getattr(model, "formula", None):
        raise UnsupportedModelError("glum models fitted with a formula are not supported yet")
    family_name = type(model._family_instance).__name__
    family = {
        "PoissonDistribution": "poisson",
        "GammaDistribution": "gamma",
        "TweedieDistribution": "tweedie",
        "NormalDistribution": "normal",
    }.get(family_name)
    link = {"LogLink": "log", "IdentityLink": "identity"}.get(type(model._link_instance).__name__)
    if family is None or link is None:
        raise UnsupportedModelError(f"glum {family_name} with this link is not supported")
    power = getattr(model._family_instance, "power", None) if family == "tweedie" else None
    coefficients = dict(
        zip(model.feature_names_, np.asarray(model.coef_, dtype=float), strict=True)
    )
    categorical: dict[str, dict[str, float]] = {}
    for name, levels in (model.categorical_levels_ or {}).items():
        table = {}
        for level in levels:
            column = model.categorical_format.format(name=name, category=level)
            if column in coefficients:  # the dropped (base) level has no coefficient
                table[str(level)] = float(coefficients.pop(column))
        categorical[name] = table
    numeric = {name: float(c) for name, c in coefficients.items()}
    return GLMTerms(
        family,
        link,
        float(power) if power is not None else None,
        float(model.intercept_),
        categorical,
        numeric,
    )


def is_sklearn_glm(model: Any) -> bool:
    from sklearn.linear_model import GammaRegressor, PoissonRegressor, TweedieRegressor
    from sklearn.pipeline import Pipeline

    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    return isinstance(final, (PoissonRegressor, GammaRegressor, TweedieRegressor))


def _family_and_link(glm: Any) -> tuple[str, str, float | None]:
    from sklearn.linear_model import GammaRegressor, PoissonRegressor, TweedieRegressor

    if isinstance(glm, PoissonRegressor):
        return "poisson", "log", None
    if isinstance(glm, GammaRegressor):
        return "gamma", "log", None
    if isinstance(glm, TweedieRegressor):
        link = glm.link if glm.link != "auto" else ("identity" if glm.power <= 0 else "log")
        return "tweedie", link, float(glm.power)
    raise UnsupportedModelError(f"{type(glm).__name__} is not a scikit-learn GLM")


def _feature_names(estimator: Any) -> list[str]:
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise UnsupportedModelError(
            "fit the model on a pandas DataFrame so that its rating factors have names"
        )
    return [str(n) for n in names]


def _read_column_transformer(
    transformer: Any,
    coef: np.ndarray,
    intercept: float,
    categorical: dict[str, dict[str, float]],
    numeric: dict[str, float],
) -> float:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    if not isinstance(transformer, ColumnTransformer):
        raise UnsupportedModelError(
            f"GLM preprocessing must be a ColumnTransformer, not {type(transformer).__name__}"
        )
    inputs = _feature_names(transformer)
    position = 0
    for _name, step, columns in transformer.transformers_:
        if step == "drop":
            continue
        names = _resolve_columns(columns, inputs)
        identity = isinstance(step, FunctionTransformer) and step.func is None
        if step == "passthrough" or identity:  # newer scikit-learn stores an identity transformer
            for name in names:
                numeric[name] = float(coef[position])
                position += 1
        elif isinstance(step, OneHotEncoder):
            if getattr(step, "infrequent_categories_", None) is not None and any(
                c is not None for c in step.infrequent_categories_
            ):
                raise UnsupportedModelError(
                    "OneHotEncoder with infrequent categories is not supported"
                )
            drop = step.drop_idx_ if step.drop_idx_ is not None else [None] * len(names)
            for name, levels, dropped in zip(names, step.categories_, drop, strict=True):
                table: dict[str, float] = {}
                for index, level in enumerate(levels):
                    if dropped is not None and index == dropped:
                        continue
                    table[str(level)] = float(coef[position])
                    position += 1
                categorical[name] = table
        elif isinstance(step, StandardScaler):
            means = step.mean_ if step.with_mean else np.zeros(len(names))
            scales = step.scale_ if step.with_std else np.ones(len(names))
            for name, mean, scale in zip(names, means, scales, strict=True):
                per_unit = float(coef[position]) / float(scale)
                numeric[name] = per_unit
                intercept -= per_unit * float(mean)
                position += 1
        else:
            raise UnsupportedModelError(
                f"{type(step).__name__} cannot be stored as GLM coefficients; "
                "use OneHotEncoder, StandardScaler or passthrough columns"
            )
    if position != len(coef):
        raise UnsupportedModelError("the GLM's coefficients do not match its preprocessing")
    return intercept


def _resolve_columns(columns: Any, inputs: list[str]) -> list[str]:
    if isinstance(columns, str):
        return [columns]
    if isinstance(columns, slice):
        return inputs[columns]
    values = list(columns)
    if values and isinstance(values[0], (bool, np.bool_)):
        return [name for name, keep in zip(inputs, values, strict=True) if keep]
    return [inputs[v] if isinstance(v, (int, np.integer)) else str(v) for v in values]


def _inverse_link(link: str, eta: float) -> float:
    return math.exp(eta) if link == "log" else eta
