"""The sticky split: which arm a policy gets, recomputable by anyone from two strings.

    bucket = int(first 8 bytes of SHA-256(model name + "\\x1f" + key), big-endian) mod 10,000
    the policy gets the challenger when bucket < percent × 100

``key`` is the value of the rollout's key field in the request, as text (``str()`` of the JSON
value: ``"P-00042"``, ``"42"``); with no key field, or none in the request, it is the policy's
rating factors' values, as text, joined by ``"\\x1f"`` in the signature's order. The same policy
gets the same arm in every worker, every replica and after restarts, with no shared state, and a
policy that got the challenger at 10 % keeps it at 50 % (the buckets below the line only grow).

Measured here: about 1 µs per policy (the SHA-256 of a short string dominates). A split by hash
is a binomial draw per key: over 10,000 keys its share is within ±0.5 percentage points of the
target at 1 and 10 % nearly always (σ = 0.1 and 0.3 pp) and within one σ (0.5 pp) at 50 %.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

BUCKETS = 10_000
SEPARATOR = "\x1f"


def bucket(model: str, key: str) -> int:
    """The policy's bucket, 0 ≤ bucket < 10,000."""
    digest = hashlib.sha256(f"{model}{SEPARATOR}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def threshold(percent: float) -> int:
    """Buckets below this get the challenger."""
    return round(percent * BUCKETS / 100)


def policy_key(policy: Mapping[str, Any], field: str | None, factors: Sequence[str]) -> str:
    """The text the bucket is computed from (see the module's docstring)."""
    if field is not None:
        value = policy.get(field)
        if value is not None:
            return str(value)
    return SEPARATOR.join([str(policy.get(name)) for name in factors])


def arm_of(
    model: str, policy: Mapping[str, Any], percent: float, field: str | None, factors: Sequence[str]
) -> str:
    """``challenger`` or ``champion``: what a rollout at ``percent`` gives this policy."""
    chosen = bucket(model, policy_key(policy, field, factors)) < threshold(percent)
    return "challenger" if chosen else "champion"
