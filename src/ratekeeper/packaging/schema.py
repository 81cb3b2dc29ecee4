"""The caps and bounds every model package is held to, and the strict readers that apply them.

A package is data from whoever registered it: every manifest is read through these readers at
registration and again at every load. Each reader returns the value with its exact type or
raises ``InvalidInputError`` naming where in the manifest the problem is, never echoing more
than a short prefix of the offending value. docs/packages.md lists every cap and bound.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ratekeeper.errors import InvalidInputError

MAX_MANIFEST_BYTES = 16 << 20
"""16 MiB: the largest manifest we build (a GLM on 2,000 postcodes with its profile) is ~0.3 MiB."""
MAX_MODEL_BYTES = 512 << 20
"""512 MiB per ONNX graph; the largest GBM we have packaged is 60 MB."""
MAX_FILES = 4
"""A GLM package has no files and an ONNX package one."""
MAX_FIELDS = 1_000
"""Fields of a signature, terms of a GLM, inputs of an ONNX graph, factors of a profile."""
MAX_LEVELS = 100_000
"""Levels of one categorical factor (a signature's, a GLM table's, an ONNX input's)."""
MAX_COEFFICIENTS = 1_000_000
"""All the coefficients of a GLM together."""
MAX_BINS = 1_000
"""Edges of one numeric profile (ratekeeper writes at most 9)."""
MAX_NAME_CHARS = 200
"""A field, file or term name."""
MAX_LEVEL_CHARS = 500
"""A categorical level."""
MAX_LOG_COEFFICIENT = 50.0
"""On the log scale, |intercept| and each term's largest contribution (a level's coefficient, a
numeric coefficient times the largest |value| of the training range) stay within 50: a relativity
of e^50 ≈ 5e21. Real tariffs stay within e^±10; e^700 (the crafted 8.1e302 quote) is refused."""
MAX_RATE = 1e12
"""The highest rate per unit of exposure any package may claim in its profile, and the highest
price the scorer returns per unit of exposure whatever the profile says (in any currency)."""
PLAUSIBLE_MULTIPLE = 1_000.0
"""A rate above 1,000 × the highest decile edge of the version's training predictions (its ~90th
percentile) is implausible and never returned; see ``rate_ceiling``."""


def rate_ceiling(prediction_edges: Sequence[float]) -> float:
    """The highest rate per unit of exposure the scorer returns for a version.

    ``PLAUSIBLE_MULTIPLE`` × the top decile edge of the training predictions (the reference
    profile's), never above ``MAX_RATE``; ``MAX_RATE`` itself when the profile has no positive
    edge (a constant model, or one that predicts 0 for most of its book).
    """
    top = max(prediction_edges, default=0.0)
    return min(MAX_RATE, PLAUSIBLE_MULTIPLE * top) if top > 0 else MAX_RATE


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def short(value: Any) -> str:
    """A value for an error message: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def refuse(where: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"package manifest: {where} {message}")


def obj(
    value: Any, where: str, required: set[str], optional: frozenset[str] = frozenset()
) -> Mapping[str, Any]:
    """A JSON object with every ``required`` key, and no key outside ``required | optional``."""
    if not isinstance(value, dict):
        raise refuse(where, f"must be an object, not {_json_type(value)}")
    missing = sorted(required - value.keys())
    if missing:
        raise refuse(where, f"lacks the key {short(missing[0])}")
    unknown = sorted(str(k) for k in value.keys() - required - optional)
    if unknown:
        raise refuse(where, f"has the unknown key {short(unknown[0])}")
    return value


def items(value: Any, where: str, cap: int) -> list[Any]:
    """A JSON array of at most ``cap`` elements."""
    if not isinstance(value, list):
        raise refuse(where, f"must be an array, not {_json_type(value)}")
    if len(value) > cap:
        raise refuse(where, f"has {len(value):,} entries, more than the {cap:,} allowed")
    return value


def mapping(value: Any, where: str, cap: int) -> dict[str, Any]:
    """A JSON object used as a dictionary (names are data) of at most ``cap`` entries."""
    if not isinstance(value, dict):
        raise refuse(where, f"must be an object, not {_json_type(value)}")
    if len(value) > cap:
        raise refuse(where, f"has {len(value):,} entries, more than the {cap:,} allowed")
    return value


def string(value: Any, where: str, cap: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str):
        raise refuse(where, f"must be a string, not {_json_type(value)}")
    if len(value) > cap:
        raise refuse(where, f"is longer than {cap} characters")
    return value


def name(value: Any, where: str) -> str:
    """A field or term name: a non-empty string without control characters."""
    text = string(value, where)
    if not text or any(ord(c) < 32 for c in text):
        raise refuse(where, f"must be a non-empty name without control characters: {short(text)}")
    return text


def strings(value: Any, where: str, cap: int, length: int = MAX_LEVEL_CHARS) -> tuple[str, ...]:
    """An array of distinct strings."""
    values = tuple(
        string(v, f"{where}[{i}]", length) for i, v in enumerate(items(value, where, cap))
    )
    if len(set(values)) != len(values):
        raise refuse(where, "repeats a value")
    return values


def choice(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed or not isinstance(value, str):
        raise refuse(where, f"must be one of {', '.join(allowed)}, not {short(value)}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise refuse(where, f"must be true or false, not {_json_type(value)}")
    return value


def number(value: Any, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite JSON number (not a boolean) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise refuse(where, f"must be a number, not {_json_type(value)}")
    try:
        result = float(value)
    except OverflowError:  # an integer beyond float range
        raise refuse(where, "must be a finite number") from None
    if not math.isfinite(result):
        raise refuse(where, f"must be a finite number, not {result}")
    if not low <= result <= high:
        raise refuse(where, f"must lie within [{low:g}, {high:g}], not {result:g}")
    return result


def integer(value: Any, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise refuse(where, f"must be an integer, not {_json_type(value)}")
    if value < low:
        raise refuse(where, f"must be at least {low}")
    return value


def file_name(value: Any, where: str) -> str:
    """A name inside a package: letters, digits, ``_.-``; never a path, never ``..``."""
    text = string(value, where)
    if not _FILE_NAME.fullmatch(text) or ".." in text:
        raise refuse(where, f"must be a plain file name (no path), not {short(text)}")
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
