"""What a rollout is asked to do: its mode, its traffic, its steps and bake time, its guards.

A plan is checked once, here, wherever it comes from (Python, the CLI, JSON over HTTP), and has
one canonical JSON form: a promotion request carries it, and a canary or staged rollout starts
only with the plan its approved request carried (``RolloutPlan.canonical``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ratekeeper.errors import InvalidInputError

MODES = ("shadow", "canary", "staged")
DEFAULT_STEPS = (1.0, 10.0, 50.0, 100.0)
DEFAULT_BAKE_SECONDS = 600.0
DEFAULT_CANARY_PERCENT = 10.0
MAX_BAKE_SECONDS = 30 * 86_400.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, None: 1.0}


@dataclass(frozen=True)
class Guards:
    """The limits a challenger must hold; breaking one rolls the rollout back to 0 %.

    Judged per serving process over the quotes it saw, once ``min_quotes`` quotes were compared
    (or, for the error rate, priced by the challenger):

    - ``max_error_rate``: the share of the challenger's pricings that failed;
    - ``max_p99_ms``: the 99th percentile of the challenger's pricing time, in milliseconds;
    - ``median_ratio``: the lowest and highest median challenger/champion premium ratio;
    - ``move`` and ``max_moved_share``: at most this share of quotes may move by more than
      ±``move`` (0.2: ±20 %).

    ``sample`` is the share of the champion's quotes the challenger also prices off the request
    path during a canary or staged rollout (a shadow prices its whole share). ``webhook`` is an
    ``http(s)://`` address that hears of an automatic rollback (a JSON POST).
    """

    max_error_rate: float = 0.01
    max_p99_ms: float = 50.0
    median_ratio: tuple[float, float] = (0.9, 1.1)
    move: float = 0.2
    max_moved_share: float = 0.25
    min_quotes: int = 100
    sample: float = 0.1
    webhook: str | None = None

    def __post_init__(self) -> None:
        _share("max_error_rate", self.max_error_rate)
        _positive("max_p99_ms", self.max_p99_ms)
        low, high = _pair(self.median_ratio)
        if not 0 < low <= 1 <= high:
            raise InvalidInputError("guards: median_ratio must be (low, high) with low ≤ 1 ≤ high")
        object.__setattr__(self, "median_ratio", (low, high))
        _positive("move", self.move)
        _share("max_moved_share", self.max_moved_share)
        if isinstance(self.min_quotes, bool) or not isinstance(self.min_quotes, int):
            raise InvalidInputError("guards: min_quotes must be a whole number")
        if not 1 <= self.min_quotes <= 1_000_000:
            raise InvalidInputError("guards: min_quotes must be between 1 and 1,000,000")
        _share("sample", self.sample)
        if self.webhook is not None and (
            not isinstance(self.webhook, str)
            or not self.webhook.startswith(("http://", "https://"))
            or len(self.webhook) > 500
        ):
            raise InvalidInputError("guards: webhook must be an http(s):// address")

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["median_ratio"] = list(self.median_ratio)
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any] | None) -> Guards:
        if body is None:
            return cls()
        if not isinstance(body, Mapping):
            raise InvalidInputError("guards must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidInputError(f"guards: unknown field(s) {', '.join(map(str, unknown))}")
        values = dict(body)
        if "median_ratio" in values:
            values["median_ratio"] = _pair(values["median_ratio"])
        return cls(**values)


@dataclass(frozen=True)
class RolloutPlan:
    mode: str
    percent: float
    """canary: the challenger's share of policies; shadow: the share priced in the shadow;
    staged: the first step."""
    steps: tuple[float, ...] = ()
    bake_seconds: float | None = None
    key: str | None = None
    guards: Guards = field(default_factory=Guards)

    @classmethod
    def build(
        cls,
        mode: str,
        *,
        percent: float | None = None,
        steps: Sequence[float] | str | None = None,
        bake: float | str | None = None,
        key: str | None = None,
        guards: Guards | Mapping[str, Any] | None = None,
    ) -> RolloutPlan:
        """A checked plan from ``start_rollout``'s arguments (defaults filled in)."""
        if mode not in MODES:
            raise InvalidInputError(f"unknown rollout mode {mode!r}: use shadow, canary or staged")
        chosen = guards if isinstance(guards, Guards) else Guards.from_dict(guards)
        if key is not None and (not isinstance(key, str) or not key.strip() or len(key) > 200):
            raise InvalidInputError("key must name a policy field (at most 200 characters)")
        if mode == "staged":
            if percent is not None:
                raise InvalidInputError("a staged rollout takes steps, not percent")
            ladder = parse_steps(steps) if steps is not None else DEFAULT_STEPS
            baked = parse_duration(bake) if bake is not None else DEFAULT_BAKE_SECONDS
            return cls(mode, ladder[0], ladder, baked, key, chosen)
        if steps is not None or bake is not None:
            raise InvalidInputError(f"a {mode} rollout has no steps or bake time (use staged)")
        share = _percent(percent if percent is not None else _default_percent(mode))
        return cls(mode, share, (), None, key, chosen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "percent": self.percent,
            "steps": list(self.steps),
            "bake_seconds": self.bake_seconds,
            "key": self.key,
            "guards": self.guards.to_dict(),
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> RolloutPlan:
        if not isinstance(body, Mapping):
            raise InvalidInputError("a rollout plan must be a JSON object")
        mode = body.get("mode")
        staged = mode == "staged"
        return cls.build(
            str(mode),
            percent=None if staged else body.get("percent"),
            steps=(body.get("steps") or None) if staged else None,
            bake=body.get("bake_seconds") if staged else None,
            key=body.get("key"),
            guards=body.get("guards"),
        )

    def canonical(self) -> str:
        """The one JSON text of this plan (what a request stores and a start must match)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RolloutPlan:
        return cls.from_dict(json.loads(text))

    @staticmethod
    def canonical_guards(guards: Guards) -> str:
        return json.dumps(guards.to_dict(), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        if self.mode == "staged":
            ladder = " → ".join(f"{s:g} %" for s in self.steps)
            return f"staged {ladder}, each held {format_duration(self.bake_seconds or 0)}"
        return f"{self.mode} {self.percent:g} %"


def _default_percent(mode: str) -> float:
    return 100.0 if mode == "shadow" else DEFAULT_CANARY_PERCENT


def parse_steps(steps: Sequence[float] | str) -> tuple[float, ...]:
    """``"1,10,50,100"`` or a list: rising shares of traffic that end at 100."""
    if isinstance(steps, str):
        try:
            values = [float(s) for s in steps.split(",") if s.strip()]
        except ValueError:
            raise InvalidInputError(
                f"steps {steps[:80]!r}: give percentages like 1,10,50,100"
            ) from None
    elif isinstance(steps, Sequence):
        values = [_percent(s) for s in steps]
    else:
        raise InvalidInputError("steps must be a list of percentages")
    ladder = tuple(_percent(v) for v in values)
    if not ladder or len(ladder) > 20:
        raise InvalidInputError("steps: give between 1 and 20 percentages")
    if any(b <= a for a, b in itertools.pairwise(ladder)) or ladder[-1] != 100:
        raise InvalidInputError("steps must rise and end at 100 (e.g. 1,10,50,100)")
    return ladder


def parse_duration(value: float | str) -> float:
    """Seconds from a number of seconds or ``"90s"``, ``"10m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise InvalidInputError("bake must be a duration such as 30s, 10m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise InvalidInputError(f"bake {str(value)[:40]!r}: give a duration such as 30s, 10m or 2h")
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_BAKE_SECONDS:
        raise InvalidInputError("bake must be more than 0 and at most 30 days")
    return seconds


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _percent(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"percent must be a number, got {str(value)[:40]!r}")
    if not 0 < value <= 100:
        raise InvalidInputError(f"percent must be more than 0 and at most 100, got {value:g}")
    return float(value)


def _share(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidInputError(f"guards: {name} must be a share between 0 and 1")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidInputError(f"guards: {name} must be a positive number")


def _pair(value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise InvalidInputError("guards: median_ratio must be two numbers (low, high)")
    return float(value[0]), float(value[1])
