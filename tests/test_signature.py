"""The signature: inferred from the training frame, every problem reported at once."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ratekeeper import InvalidInputError, Signature, ValidationPolicy
from ratekeeper.packaging.signature import Field
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio


@pytest.fixture(scope="module")
def book() -> pd.DataFrame:
    return motor_portfolio(2000, seed=3)


@pytest.fixture(scope="module")
def signature(book) -> Signature:
    return Signature.infer(
        book, RATING_FACTORS, target="claim_count", exposure="exposure", id_column="policy_id"
    )


def good_policy() -> dict[str, object]:
    return {
        "area": "C",
        "fuel": "diesel",
        "cover": "TPL",
        "driver_age": 40,
        "vehicle_age": 3,
        "bonus_malus": 2,
        "power_kw": 90,
        "exposure": 1.0,
        "policy_id": "P-1",
    }


def test_inference_records_types_levels_ranges_and_roles(signature, book) -> None:
    area = signature.field("area")
    assert (area.kind, area.role, area.levels, area.nullable) == (
        "categorical",
        "rating_factor",
        ("A", "B", "C", "D", "E", "F"),
        False,
    )
    age = signature.field("driver_age")
    assert (age.kind, age.minimum, age.maximum) == (
        "integer",
        float(book["driver_age"].min()),
        float(book["driver_age"].max()),
    )
    assert signature.exposure == Field("exposure", "numeric", role="exposure")
    assert signature.id_field is not None and signature.id_field.name == "policy_id"
    assert [f.name for f in signature.rating_factors] == list(RATING_FACTORS)
    assert signature.target == "claim_count"
    assert Signature.from_dict(signature.to_dict()) == signature


def test_a_good_policy_has_no_problems(signature) -> None:
    report = signature.validate(good_policy())
    assert report.ok and report.problems == []


def test_every_problem_of_one_policy_is_reported_at_once(signature) -> None:
    policy = good_policy()
    del policy["fuel"]
    policy.update(
        area="Z",
        cover=3,
        driver_age=150,
        vehicle_age=2.5,
        bonus_malus=math.nan,
        power_kw="big",
        exposure=0.0,
        colour="red",
    )
    report = signature.validate(policy)
    found = {(p.field, p.code) for p in report.problems}
    assert found == {
        ("fuel", "missing"),
        ("area", "unseen_level"),
        ("cover", "wrong_type"),
        ("driver_age", "out_of_range"),
        ("vehicle_age", "wrong_type"),
        ("bonus_malus", "not_finite"),
        ("power_kw", "wrong_type"),
        ("exposure", "out_of_range"),
        ("colour", "unknown_field"),
    }
    messages = {p.field: p.message for p in report.problems}
    assert messages["driver_age"] == "150 is outside the training range [18, 90]"
    assert messages["area"].startswith("level 'Z' was not in the training data (known: 'A'")
    assert messages["power_kw"] == "expected a number, got a string"
    with pytest.raises(
        InvalidInputError, match=r"^area: level 'Z' was not in the training data .* \(and 8 more\)$"
    ):
        report.raise_for_problems()


def test_booleans_infinities_and_nulls_are_refused(signature) -> None:
    policy = good_policy() | {"driver_age": True, "power_kw": math.inf, "area": None}
    codes = {p.field: p.code for p in signature.validate(policy).problems}
    assert codes == {"driver_age": "wrong_type", "power_kw": "not_finite", "area": "missing"}


def test_an_integer_beyond_the_floats_is_a_problem_not_an_overflow(signature) -> None:
    report = signature.validate(good_policy() | {"driver_age": 10**400})
    assert [(p.field, p.code, p.message) for p in report.problems] == [
        ("driver_age", "not_finite", "must be a finite number, got a huge integer")
    ]
    for policy in (ValidationPolicy(out_of_range="allow"), ValidationPolicy(out_of_range="clip")):
        problems = signature.with_policy(policy).validate(good_policy() | {"power_kw": 10**400})
        assert [p.code for p in problems.problems] == ["not_finite"]


def test_frames_are_checked_per_row_with_row_numbers(signature, book) -> None:
    frame = book.head(6).copy()
    frame["area"] = frame["area"].astype(str)
    frame.loc[1, "area"] = "Q"
    frame.loc[3, "driver_age"] = 12
    frame["power_kw"] = frame["power_kw"].astype(float)
    frame.loc[4, "power_kw"] = np.inf
    report = (
        Signature.from_dict(signature.to_dict())
        .with_policy(ValidationPolicy(unknown_field="ignore"))
        .validate(frame)
    )
    assert [(p.row, p.field, p.code) for p in report.problems] == [
        (1, "area", "unseen_level"),
        (3, "driver_age", "out_of_range"),
        (4, "power_kw", "not_finite"),
    ]
    assert report.bad_rows.tolist() == [False, True, False, True, True, False]


def test_a_missing_column_and_unknown_columns_are_reported_once(signature, book) -> None:
    frame = book.head(3).drop(columns=["fuel"])
    report = signature.validate(frame)
    found = [(p.row, p.field, p.code) for p in report.problems]
    assert (None, "fuel", "missing") in found
    assert (None, "claim_count", "unknown_field") in found and (
        None,
        "gender",
        "unknown_field",
    ) in found
    assert report.bad_rows.all()


def test_pandas_arrow_and_records_give_the_same_report(signature, book) -> None:
    frame = book.head(20)[[*RATING_FACTORS, "exposure", "policy_id"]].copy()
    frame["area"] = frame["area"].astype(str)
    frame.loc[5, "area"] = "X"
    frame.loc[7, "driver_age"] = 99
    expected = [(p.row, p.field, p.code) for p in signature.validate(frame).problems]
    assert expected == [(5, "area", "unseen_level"), (7, "driver_age", "out_of_range")]
    for other in (pa.Table.from_pandas(frame, preserve_index=False), frame.to_dict("records")):
        assert [(p.row, p.field, p.code) for p in signature.validate(other).problems] == expected


def test_the_validation_policy_can_allow_what_training_never_showed(signature) -> None:
    lenient = signature.with_policy(
        ValidationPolicy(out_of_range="allow", unseen_level="allow", unknown_field="ignore")
    )
    policy = good_policy() | {"driver_age": 95, "area": "Z", "colour": "red"}
    assert lenient.validate(policy).ok
    assert {p.code for p in signature.validate(policy).problems} == {
        "out_of_range",
        "unseen_level",
        "unknown_field",
    }
    with pytest.raises(InvalidInputError, match="out_of_range must be one of"):
        ValidationPolicy(out_of_range="cap")  # type: ignore[arg-type]


def test_problem_reports_are_capped_but_every_bad_row_is_marked(signature, book) -> None:
    frame = pd.concat([book] * 2, ignore_index=True)[[*RATING_FACTORS, "exposure"]]
    frame["driver_age"] = 200
    report = signature.validate(frame)
    assert report.n_problems == len(frame) == 4000
    assert len(report.problems) == 1000
    assert report.bad_rows.all()


@pytest.mark.parametrize(
    "policy",
    [
        ValidationPolicy(),
        ValidationPolicy(out_of_range="clip", unseen_level="allow", unknown_field="ignore"),
        ValidationPolicy(out_of_range="allow"),
    ],
)
def test_the_compiled_row_check_finds_what_the_field_by_field_check_finds(
    signature, policy
) -> None:
    """check_row accepts most values with one precompiled test per field and sends the rest to
    _check_value: its answer must be _check_value's, for every kind of value."""
    checked = signature.with_policy(policy)
    values = [
        "C", "Z", "", 40, 40.0, 40.5, 17, 1000, -1, 0, 0.0, -0.0, 5e-324, 2**53 + 1, 2**64,
        1e308, True, False, None, math.nan, math.inf, -math.inf, np.int64(40), np.float32(1.5),
        [1], {"a": 1},
    ]  # fmt: skip
    for field in checked.fields:
        for value in values:
            row: dict[str, object] = good_policy() | {field.name: value}
            clipped: list[str] = []
            expected = []
            expected_clipped = []
            for f in checked.fields:
                problem = checked._check_value(f, row.get(f.name, _missing()), None)
                if problem is not None and problem.code == "clipped":
                    expected_clipped.append(f.name)
                elif problem is not None:
                    expected.append(problem)
            assert checked.check_row(row, clipped=clipped) == expected, (field.name, value)
            assert clipped == expected_clipped, (field.name, value)
        missing = good_policy()
        missing.pop(field.name, None)
        assert [p.code for p in checked.check_row(missing)] == (
            [] if field.nullable else ["missing"]
        )
    unknown = checked.check_row(good_policy() | {"colour": "red"})
    assert [p.code for p in unknown] == (
        [] if policy.unknown_field == "ignore" else ["unknown_field"]
    )


def _missing() -> object:
    from ratekeeper.packaging.signature import _MISSING

    return _MISSING
