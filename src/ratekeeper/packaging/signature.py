"""The input signature of a model version: what a policy must look like to be priced.

Inferred at registration from the training frame. ``Signature.validate`` reports every problem
at once, per field and row. The same checks run for one quote (``check_row``, pure Python, a few
microseconds) and for a whole portfolio (``check_columns``, vectorised numpy).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ratekeeper.errors import InvalidInputError, Problem
from ratekeeper.packaging.frames import Columns, Factor, as_float, to_columns

NUMERIC, INTEGER, CATEGORICAL, ANY = "numeric", "integer", "categorical", "any"
RATING_FACTOR, EXPOSURE, ID = "rating_factor", "exposure", "id"
MAX_REPORTED_PROBLEMS = 1000
CLIPPED = "clipped"
"""The code of a value capped at its training range: recorded, never a reason to reject."""
_MISSING = object()


@dataclass(frozen=True)
class ValidationPolicy:
    """What to do with values the training data never showed.

    Stored with the version at registration (what quotes get); batch scoring may choose another
    ``out_of_range`` for one run. ``out_of_range``: ``reject`` the policy, ``allow`` the value
    as it is (the model extrapolates), or ``clip`` it to the training range's nearer bound (the
    price at the bound; each clipped field is recorded). Exposure is never clipped.
    """

    out_of_range: Literal["reject", "allow", "clip"] = "reject"
    unseen_level: Literal["reject", "allow"] = "reject"
    unknown_field: Literal["reject", "ignore"] = "reject"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("out_of_range", ("reject", "allow", "clip")),
            ("unseen_level", ("reject", "allow")),
            ("unknown_field", ("reject", "ignore")),
        ):
            if getattr(self, name) not in allowed:
                raise InvalidInputError(f"validation policy {name} must be one of {allowed}")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # numeric | integer | categorical | any (id only)
    role: str = RATING_FACTOR
    nullable: bool = False
    levels: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "type": self.kind, "role": self.role}
        body["nullable"] = self.nullable
        if self.levels is not None:
            body["levels"] = list(self.levels)
        if self.minimum is not None:
            body["min"] = self.minimum
            body["max"] = self.maximum
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Field:
        levels = body.get("levels")
        return cls(
            name=body["name"],
            kind=body["type"],
            role=body.get("role", RATING_FACTOR),
            nullable=bool(body.get("nullable", False)),
            levels=tuple(levels) if levels is not None else None,
            minimum=body.get("min"),
            maximum=body.get("max"),
        )


@dataclass(frozen=True)
class ValidationReport:
    problems: list[Problem]
    n_problems: int
    bad_rows: np.ndarray = field(repr=False)
    """Boolean mask, one entry per row: True where the row cannot be priced."""
    clipped: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Per field with a value capped at its training range (policy ``clip``), the boolean mask
    of those rows; only fields with at least one such row."""

    @property
    def ok(self) -> bool:
        return self.n_problems == 0

    def raise_for_problems(self) -> None:
        if not self.ok:
            raise problems_error(self.problems, self.n_problems)


def problems_error(problems: list[Problem], total: int | None = None) -> InvalidInputError:
    """One error for a list of problems: the first in the message, all of them attached."""
    first = problems[0]
    where = f"row {first.row}, " if first.row is not None else ""
    extra = (total if total is not None else len(problems)) - 1
    more = f" (and {extra} more)" if extra > 0 else ""
    return InvalidInputError(f"{where}{first.field}: {first.message}{more}", problems)


@dataclass(frozen=True)
class Signature:
    fields: tuple[Field, ...]
    target: str | None = None
    policy: ValidationPolicy = ValidationPolicy()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})
        object.__setattr__(
            self,
            "_level_sets",
            {f.name: frozenset(f.levels) for f in self.fields if f.levels is not None},
        )
        object.__setattr__(self, "_accept", tuple(_accepting(f, self.policy) for f in self.fields))

    # -- views ------------------------------------------------------------------------------
    def field(self, name: str) -> Field:
        return self._by_name[name]  # type: ignore[attr-defined, no-any-return]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def rating_factors(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.role == RATING_FACTOR)

    @property
    def exposure(self) -> Field | None:
        return next((f for f in self.fields if f.role == EXPOSURE), None)

    @property
    def id_field(self) -> Field | None:
        return next((f for f in self.fields if f.role == ID), None)

    def with_policy(self, policy: ValidationPolicy) -> Signature:
        return replace(self, policy=policy)

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": [f.to_dict() for f in self.fields],
            "target": self.target,
            "policy": {
                "out_of_range": self.policy.out_of_range,
                "unseen_level": self.policy.unseen_level,
                "unknown_field": self.policy.unknown_field,
            },
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Signature:
        return cls(
            fields=tuple(Field.from_dict(f) for f in body["fields"]),
            target=body.get("target"),
            policy=ValidationPolicy(**body.get("policy", {})),
        )

    # -- inference --------------------------------------------------------------------------
    @classmethod
    def infer(
        cls,
        frame: Any,
        factors: Iterable[str],
        *,
        target: str | None = None,
        exposure: str | None = None,
        id_column: str | None = None,
        policy: ValidationPolicy | None = None,
    ) -> Signature:
        """Describe ``factors``, the exposure and the id column as the training frame shows them."""
        import pandas as pd

        fields: list[Field] = []
        for name in factors:
            if name not in frame.columns:
                raise InvalidInputError(f"the model uses {name!r}, which the training data lacks")
            fields.append(_infer_field(name, frame[name]))
        if exposure is not None:
            if exposure not in frame.columns:
                raise InvalidInputError(f"exposure column {exposure!r} is not in the training data")
            if not pd.api.types.is_numeric_dtype(frame[exposure].dtype):
                raise InvalidInputError(f"exposure column {exposure!r} must be numeric")
            fields.append(Field(exposure, NUMERIC, role=EXPOSURE))
        if id_column is not None:
            if id_column not in frame.columns:
                raise InvalidInputError(f"id column {id_column!r} is not in the training data")
            fields.append(Field(id_column, ANY, role=ID, nullable=True))
        return cls(tuple(fields), target=target, policy=policy or ValidationPolicy())

    # -- checks -----------------------------------------------------------------------------
    def validate(self, rows: Any) -> ValidationReport:
        """Check a mapping (one policy) or many policies; report every problem at once."""
        if isinstance(rows, Mapping):
            clipped: list[str] = []
            problems = self.check_row(rows, clipped=clipped)
            masks = {name: np.array([True]) for name in clipped}
            return ValidationReport(problems, len(problems), np.array([bool(problems)]), masks)
        columns, n_rows = to_columns(rows)
        return self.check_columns(columns, n_rows)

    def check_row(
        self,
        row: Mapping[str, Any],
        position: int | None = None,
        clipped: list[str] | None = None,
    ) -> list[Problem]:
        """All problems of one policy; an empty list means it can be priced.

        Under ``out_of_range="clip"`` the fields whose value must be capped (``clip_row``) are
        appended to ``clipped``: they are not problems.
        """
        problems: list[Problem] = []
        get = row.get
        # Each field's test, compiled once (``_accepting``): a value it accepts is valid, one
        # it does not is checked again by ``_check_value``, which says what is wrong with it.
        for f, test, first, second in self._accept:  # type: ignore[attr-defined]
            value = get(f.name, _MISSING)
            kind = value.__class__
            if test is _IN_LEVELS:
                if kind is str and value in first:
                    continue
            elif test is _IN_RANGE:
                if (kind is float or kind is int) and first <= value <= second:
                    continue
            elif test is _INT_IN_RANGE:
                if kind is int and first <= value <= second:
                    continue
            elif test is _STRING:
                if kind is str:
                    continue
            elif value is not _MISSING and value is not None:  # _ANY
                continue
            problem = self._check_value(f, value, position)
            if problem is not None:
                if problem.code != CLIPPED:
                    problems.append(problem)
                elif clipped is not None:
                    clipped.append(f.name)
        if self.policy.unknown_field == "reject" and not row.keys() <= self._by_name.keys():  # type: ignore[attr-defined]
            by_name = self._by_name  # type: ignore[attr-defined]
            for name in row:
                if name not in by_name:
                    problems.append(
                        Problem(
                            str(name), "unknown_field", "is not a field of this model", position
                        )
                    )
        return problems

    def _check_value(self, f: Field, value: Any, row: int | None) -> Problem | None:
        if value is _MISSING:
            if f.nullable:
                return None
            return Problem(f.name, "missing", "is required", row)
        if value is None:
            return None if f.nullable else Problem(f.name, "missing", "must not be null", row)
        kind = f.kind
        if kind == CATEGORICAL:
            if type(value) is not str:
                return Problem(
                    f.name, "wrong_type", f"expected a string, got {_type_name(value)}", row
                )
            if value not in self._level_sets[f.name]:  # type: ignore[attr-defined]
                if self.policy.unseen_level == "allow":
                    return None
                return Problem(f.name, "unseen_level", _unseen_message(f, value), row)
            return None
        if kind == ANY:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return Problem(f.name, "wrong_type", f"expected a number, got {_type_name(value)}", row)
        try:
            number = float(value)
        except OverflowError:  # a Python int beyond the floats (JSON cannot carry one)
            return Problem(f.name, "not_finite", "must be a finite number, got a huge integer", row)
        if not math.isfinite(number):
            if f.nullable and math.isnan(number):
                return None
            return Problem(f.name, "not_finite", f"must be a finite number, got {number}", row)
        if kind == INTEGER and not number.is_integer():
            return Problem(f.name, "wrong_type", f"expected an integer, got {number}", row)
        if f.role == EXPOSURE:
            if number <= 0:
                return Problem(
                    f.name, "out_of_range", f"exposure must be positive, got {number}", row
                )
            return None
        outside = f.minimum is not None and not f.minimum <= number <= f.maximum  # type: ignore[operator]
        if outside and self.policy.out_of_range != "allow":
            if self.policy.out_of_range == "clip":  # only here: in range costs nothing more
                return Problem(f.name, CLIPPED, _range_message(f, number), row)
            return Problem(f.name, "out_of_range", _range_message(f, number), row)
        return None

    def clip_row(self, row: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
        """A copy of ``row`` with the ``names`` (from ``check_row``) capped at their range."""
        capped = dict(row)
        for name in names:
            f = self.field(name)
            capped[name] = min(max(float(row[name]), f.minimum), f.maximum)  # type: ignore[type-var]
        return capped

    def clip_columns(self, columns: Columns, clipped: Mapping[str, np.ndarray]) -> Columns:
        """A copy of ``columns`` with the ``clipped`` fields (a report's) capped at their range.

        Every row of such a column is capped: a value within the range is unchanged, and a
        row the check rejected (not finite, ...) is never priced."""
        if not clipped:
            return columns
        capped = dict(columns)
        for name in clipped:
            f = self.field(name)
            capped[name] = np.clip(as_float(columns[name]), f.minimum, f.maximum)
        return capped

    def check_columns(self, columns: Columns, n_rows: int) -> ValidationReport:
        """Vectorised checks over named columns (from ``frames.to_columns``)."""
        collector = _Collector(n_rows)
        for f in self.fields:
            column = columns.get(f.name)
            if column is None:
                if not f.nullable:
                    collector.whole_column(f.name, "missing", "column is missing")
                continue
            if isinstance(column, Factor):
                self._check_factor_column(f, column, collector)
            else:
                self._check_float_column(f, column, collector)
        if self.policy.unknown_field == "reject":
            for name in columns:
                if name not in self._by_name:  # type: ignore[attr-defined]
                    collector.whole_column(name, "unknown_field", "is not a field of this model")
        return collector.report()

    def _check_float_column(self, f: Field, column: np.ndarray, out: _Collector) -> None:
        if f.kind == CATEGORICAL:
            out.whole_column(f.name, "wrong_type", "expected strings, got a numeric column")
            return
        if f.kind == ANY:
            return
        nan = np.isnan(column)
        if not f.nullable:
            out.rows(
                f.name, "not_finite", nan, lambda i: f"must be a finite number, got {column[i]}"
            )
        inf = np.isinf(column)
        out.rows(f.name, "not_finite", inf, lambda i: f"must be a finite number, got {column[i]}")
        finite = ~(nan | inf)
        if f.kind == INTEGER:
            fractional = finite & (np.floor(column) != column)
            out.rows(
                f.name, "wrong_type", fractional, lambda i: f"expected an integer, got {column[i]}"
            )
        if f.role == EXPOSURE:
            out.rows(
                f.name,
                "out_of_range",
                finite & (column <= 0),
                lambda i: f"exposure must be positive, got {column[i]}",
            )
        elif self.policy.out_of_range != "allow" and f.minimum is not None:
            with np.errstate(invalid="ignore"):
                outside = finite & ((column < f.minimum) | (column > f.maximum))
            if self.policy.out_of_range == "clip":
                out.clip(f.name, outside)
            else:
                message = lambda i: _range_message(f, float(column[i]))  # noqa: E731
                out.rows(f.name, "out_of_range", outside, message)

    def _check_factor_column(self, f: Field, column: Factor, out: _Collector) -> None:
        """Check each distinct value once, then mark the rows that hold a bad one."""
        if f.kind == ANY:
            return
        verdicts = [self._check_value(f, value, None) for value in column.uniques]
        verdicts.append(self._check_value(f, None, None))  # code -1: null
        if all(v is None for v in verdicts):
            return
        if any(v is not None and v.code == CLIPPED for v in verdicts):
            out.clip(
                f.name, _codes_in(column, [v is not None and v.code == CLIPPED for v in verdicts])
            )
            verdicts = [None if v is not None and v.code == CLIPPED else v for v in verdicts]
        bad = _codes_in(column, [v is not None for v in verdicts])

        def problem(row: int) -> Problem:
            template = verdicts[column.codes[row]]
            assert template is not None
            return Problem(template.field, template.code, template.message, row)

        out.problem_rows(bad, problem)


_IN_LEVELS, _STRING, _IN_RANGE, _INT_IN_RANGE, _ANY = "levels", "string", "range", "int", "any"
_LARGEST = sys.float_info.max


def _accepting(f: Field, policy: ValidationPolicy) -> tuple[Field, str, Any, Any]:
    """What ``check_row`` accepts of ``f`` without calling ``_check_value``: a subset of what
    that accepts (``bool``, numpy scalars, NaN, None, integral floats of integer fields and
    everything outside go through it).

    A number within [first, second] is finite (both are finite), and for the exposure, above
    zero (first is the smallest float above zero, or 1 for an integer). Out of range under
    ``allow`` means within the finite floats: a larger integer still fails ``float()`` there.
    """
    if f.kind == CATEGORICAL:
        if policy.unseen_level == "allow":
            return f, _STRING, None, None
        return f, _IN_LEVELS, frozenset(f.levels or ()), None
    if f.kind == ANY:
        return f, _ANY, None, None
    low, high = -_LARGEST, _LARGEST
    if f.role == EXPOSURE:
        low = math.ulp(0.0)
    elif f.minimum is not None and policy.out_of_range != "allow":
        low, high = f.minimum, f.maximum  # type: ignore[assignment]
    return f, _INT_IN_RANGE if f.kind == INTEGER else _IN_RANGE, low, high


def _codes_in(column: Factor, chosen: list[bool]) -> np.ndarray:
    """Rows whose code is chosen; ``chosen`` has one entry per distinct value, then null's."""
    mask: np.ndarray = np.array(chosen, dtype=bool)[column.codes]
    return mask


class _Collector:
    """Gathers problems (reporting at most MAX_REPORTED_PROBLEMS) and the mask of bad rows."""

    def __init__(self, n_rows: int) -> None:
        self.bad = np.zeros(n_rows, dtype=bool)
        self.problems: list[Problem] = []
        self.count = 0
        self.clipped: dict[str, np.ndarray] = {}

    def clip(self, name: str, mask: np.ndarray) -> None:
        if mask.any():
            self.clipped[name] = mask

    def add(self, problem: Problem) -> None:
        self.count += 1
        if problem.row is not None:
            self.bad[problem.row] = True
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(problem)

    def whole_column(self, name: str, code: str, message: str) -> None:
        self.count += 1
        self.bad[:] = True
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(Problem(name, code, message))

    def rows(self, name: str, code: str, mask: np.ndarray, message: Any) -> None:
        self.problem_rows(mask, lambda i: Problem(name, code, message(i), i))

    def problem_rows(self, mask: np.ndarray, problem: Any) -> None:
        hits = np.flatnonzero(mask)
        if not len(hits):
            return
        self.count += len(hits)
        self.bad[hits] = True
        room = MAX_REPORTED_PROBLEMS - len(self.problems)
        for i in hits[: max(room, 0)]:
            self.problems.append(problem(int(i)))

    def report(self) -> ValidationReport:
        return ValidationReport(self.problems, self.count, self.bad, self.clipped)


def _infer_field(name: str, series: Any) -> Field:
    import pandas as pd

    dtype = series.dtype
    nullable = bool(series.isna().any())
    if isinstance(dtype, pd.CategoricalDtype):
        levels = tuple(str(c) for c in dtype.categories)
        return Field(name, CATEGORICAL, nullable=nullable, levels=levels)
    if pd.api.types.is_bool_dtype(dtype):
        raise InvalidInputError(f"rating factor {name!r} is boolean: encode it as a string or 0/1")
    if pd.api.types.is_numeric_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        if not len(finite):
            raise InvalidInputError(f"rating factor {name!r} has no finite values")
        return Field(
            name,
            INTEGER if pd.api.types.is_integer_dtype(dtype) else NUMERIC,
            nullable=nullable,
            minimum=float(finite.min()),
            maximum=float(finite.max()),
        )
    levels = tuple(sorted(str(v) for v in series.dropna().unique()))
    return Field(name, CATEGORICAL, nullable=nullable, levels=levels)


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _unseen_message(f: Field, value: str) -> str:
    levels = f.levels or ()
    shown = ", ".join(repr(v) for v in levels[:10]) + (", ..." if len(levels) > 10 else "")
    return f"level {value[:50]!r} was not in the training data (known: {shown})"


def _range_message(f: Field, number: float) -> str:
    return f"{number:g} is outside the training range [{f.minimum:g}, {f.maximum:g}]"
