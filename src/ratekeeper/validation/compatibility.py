"""What quote clients must change when a challenger replaces the champion: the signature diff.

A change is *breaking* when a request the champion accepts would be refused by the challenger
(or a request must now carry something new): a new required field, a removed field when the
challenger refuses unknown fields, a stricter type, a level or a part of the range that is no
longer accepted, a field that may no longer be null. New levels and wider ranges are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ratekeeper.packaging.signature import CATEGORICAL, INTEGER, NUMERIC, Field, Signature

ADDED, REMOVED, TYPE, ROLE, NULLABLE = "added", "removed", "type", "role", "nullable"
LEVELS_ADDED, LEVELS_REMOVED = "levels_added", "levels_removed"
RANGE_WIDENED, RANGE_NARROWED = "range_widened", "range_narrowed"
MAX_SHOWN_LEVELS = 20


@dataclass(frozen=True)
class FieldChange:
    field: str
    change: str
    """added | removed | type | role | nullable | levels_added | levels_removed |
    range_widened | range_narrowed"""
    before: str | None
    after: str | None
    breaking: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "change": self.change,
            "before": self.before,
            "after": self.after,
            "breaking": self.breaking,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> FieldChange:
        return cls(
            str(body["field"]),
            str(body["change"]),
            body["before"],
            body["after"],
            bool(body["breaking"]),
        )


@dataclass(frozen=True)
class SignatureChanges:
    changes: tuple[FieldChange, ...]

    @property
    def breaking(self) -> bool:
        return any(c.breaking for c in self.changes)

    @property
    def added(self) -> tuple[str, ...]:
        return self._fields(ADDED)

    @property
    def removed(self) -> tuple[str, ...]:
        return self._fields(REMOVED)

    def _fields(self, kind: str) -> tuple[str, ...]:
        return tuple(c.field for c in self.changes if c.change == kind)

    def of(self, field: str) -> tuple[FieldChange, ...]:
        return tuple(c for c in self.changes if c.field == field)

    def to_dict(self) -> dict[str, Any]:
        return {"breaking": self.breaking, "changes": [c.to_dict() for c in self.changes]}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> SignatureChanges:
        return cls(tuple(FieldChange.from_dict(c) for c in body["changes"]))


def signature_changes(champion: Signature, challenger: Signature) -> SignatureChanges:
    """Every difference a quote client sees between two signatures, in field order."""
    found: list[FieldChange] = []
    before_names = set(champion.names)
    for new in challenger.fields:
        if new.name not in before_names:
            found.append(FieldChange(new.name, ADDED, None, _describe(new), not new.nullable))
        else:
            found.extend(_field_changes(champion.field(new.name), new, challenger))
    after_names = set(challenger.names)
    refuses_unknown = challenger.policy.unknown_field == "reject"
    for old in champion.fields:
        if old.name not in after_names:
            found.append(FieldChange(old.name, REMOVED, _describe(old), None, refuses_unknown))
    return SignatureChanges(tuple(found))


def _field_changes(old: Field, new: Field, challenger: Signature) -> list[FieldChange]:
    found: list[FieldChange] = []
    name = new.name
    if old.role != new.role:
        found.append(FieldChange(name, ROLE, old.role, new.role, False))
    if old.kind != new.kind:
        widening = old.kind == INTEGER and new.kind == NUMERIC
        found.append(FieldChange(name, TYPE, old.kind, new.kind, not widening))
        return found
    if old.nullable and not new.nullable:
        found.append(FieldChange(name, NULLABLE, "nullable", "required", True))
    elif new.nullable and not old.nullable:
        found.append(FieldChange(name, NULLABLE, "required", "nullable", False))
    if new.kind == CATEGORICAL:
        before, after = set(old.levels or ()), set(new.levels or ())
        added = [lv for lv in new.levels or () if lv not in before]
        removed = [lv for lv in old.levels or () if lv not in after]
        if added:
            found.append(FieldChange(name, LEVELS_ADDED, None, _levels(added), False))
        if removed:
            strict = challenger.policy.unseen_level == "reject"
            found.append(FieldChange(name, LEVELS_REMOVED, _levels(removed), None, strict))
    elif old.minimum is not None and new.minimum is not None:
        assert old.maximum is not None and new.maximum is not None
        narrower = new.minimum > old.minimum or new.maximum < old.maximum
        wider = new.minimum < old.minimum or new.maximum > old.maximum
        if narrower or wider:
            strict = challenger.policy.out_of_range == "reject"
            found.append(
                FieldChange(
                    name,
                    RANGE_NARROWED if narrower else RANGE_WIDENED,
                    _range(old),
                    _range(new),
                    narrower and strict,
                )
            )
    return found


def _describe(f: Field) -> str:
    text = f.kind if f.role == "rating_factor" else f"{f.kind} {f.role}"
    if f.levels is not None:
        text += f": {_levels(f.levels)}"
    elif f.minimum is not None:
        text += f" in {_range(f)}"
    return text + (", nullable" if f.nullable else "")


def _levels(levels: Any) -> str:
    shown = list(levels)[:MAX_SHOWN_LEVELS]
    more = len(list(levels)) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def _range(f: Field) -> str:
    return f"[{f.minimum:g}, {f.maximum:g}]"
