"""Quote outcomes (was the quote taken up, at what written premium) and conversion per arm.

An outcome is accepted for any well-formed quote id and reconciled later: the comparison joins
outcomes with the quote ledger (which knows each quote's model, version and arm); an outcome
whose quote the ledger does not hold is counted as unmatched. One outcome per quote: a second
is refused (409), so a policy system retrying a post learns it was recorded.

The conversion test is the two-sided two-proportion z-test with a pooled proportion; the traffic
still needed is the usual sample size per arm to detect the observed difference at 5 %
significance with 80 % power (normal approximation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

import sqlalchemy as sa

from ratekeeper.errors import ConflictError, InvalidInputError
from ratekeeper.store.tables import quote_outcomes

_ALPHABET = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
MAX_PREMIUM = 1e12
ALPHA, POWER = 0.05, 0.80


def check_quote_id(quote_id: str) -> str:
    if not isinstance(quote_id, str) or len(quote_id) != 26 or not set(quote_id) <= _ALPHABET:
        raise InvalidInputError("a quote id is 26 characters of Crockford base32")
    return quote_id


def record(
    conn: sa.Connection,
    quote_id: str,
    taken_up: Any,
    written_premium: Any,
    actor: str,
) -> dict[str, Any]:
    check_quote_id(quote_id)
    if not isinstance(taken_up, bool):
        raise InvalidInputError("taken_up must be true or false")
    if written_premium is not None:
        if (
            isinstance(written_premium, bool)
            or not isinstance(written_premium, int | float)
            or not math.isfinite(written_premium)
            or not 0 <= written_premium <= MAX_PREMIUM
        ):
            raise InvalidInputError("written_premium must be a number between 0 and 10^12")
        if not taken_up:
            raise InvalidInputError("a quote not taken up has no written premium")
    row = {
        "quote_id": quote_id,
        "taken_up": taken_up,
        "written_premium": float(written_premium) if written_premium is not None else None,
        "recorded_by": actor,
        "recorded_at": datetime.now(UTC),
    }
    exists = conn.execute(
        sa.select(quote_outcomes.c.quote_id).where(quote_outcomes.c.quote_id == quote_id)
    ).first()
    if exists is not None:
        raise ConflictError(f"the outcome of quote {quote_id} is already recorded")
    conn.execute(sa.insert(quote_outcomes).values(**row))
    return {**row, "recorded_at": row["recorded_at"].isoformat()}


def read(conn: sa.Connection, quote_ids: list[str]) -> dict[str, tuple[bool, float | None]]:
    """quote id → (taken up, written premium), for the ids that have an outcome."""
    found: dict[str, tuple[bool, float | None]] = {}
    for start in range(0, len(quote_ids), 500):
        chunk = quote_ids[start : start + 500]
        rows = conn.execute(sa.select(quote_outcomes).where(quote_outcomes.c.quote_id.in_(chunk)))
        for r in rows:
            found[r.quote_id] = (bool(r.taken_up), r.written_premium)
    return found


@dataclass(frozen=True)
class TwoProportions:
    """Conversion of the champion's (1) and the challenger's (2) quotes compared."""

    n1: int
    x1: int
    n2: int
    x2: int
    p1: float | None
    p2: float | None
    z: float | None
    p_value: float | None
    needed_per_arm: int | None
    """Quotes with an outcome each arm needs to show the observed difference at 5 %
    significance with 80 % power (None: no difference observed yet)."""
    still_needed: int | None
    """Beyond those already observed, in the smaller arm."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> TwoProportions:
    p1 = x1 / n1 if n1 else None
    p2 = x2 / n2 if n2 else None
    z = p_value = needed = still = None
    if p1 is not None and p2 is not None:
        pooled = (x1 + x2) / (n1 + n2)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if spread > 0:
            z = (p2 - p1) / spread
            p_value = 2 * (1 - NormalDist().cdf(abs(z)))
        needed = sample_size(p1, p2)
        if needed is not None:
            still = max(0, needed - min(n1, n2))
    return TwoProportions(n1, x1, n2, x2, p1, p2, z, p_value, needed, still)


def sample_size(p1: float, p2: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Per arm, to tell ``p1`` from ``p2`` (two-sided test at ``alpha`` with ``power``)."""
    if p1 == p2:
        return None
    normal = NormalDist()
    z_alpha, z_beta = normal.inv_cdf(1 - alpha / 2), normal.inv_cdf(power)
    mean = (p1 + p2) / 2
    top = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_beta * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil(top**2 / (p1 - p2) ** 2)
