"""A synthetic motor portfolio, so the demo and the tests need no outside data.

Claim counts are drawn from a Poisson distribution whose frequency is log-linear in the rating
factors (known true relativities), times the policy's exposure in years. ``gender`` is present
on purpose and has no effect on the true frequency: it is the natural test of prohibited-factor
and fairness checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

AREAS = ("A", "B", "C", "D", "E", "F")
AREA_RELATIVITY = (0.80, 0.90, 1.00, 1.10, 1.25, 1.45)
FUELS = ("petrol", "diesel", "electric")
FUEL_RELATIVITY = (1.00, 1.10, 0.85)
COVERS = ("TPL", "TPL+", "Comprehensive")
COVER_RELATIVITY = (1.00, 1.08, 1.20)
BASE_FREQUENCY = 0.09


def motor_portfolio(n_policies: int = 20_000, *, seed: int = 0) -> Any:
    """A pandas DataFrame of ``n_policies`` motor policies with exposure and claim counts."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    area = rng.choice(len(AREAS), n_policies, p=[0.15, 0.2, 0.25, 0.2, 0.12, 0.08])
    fuel = rng.choice(len(FUELS), n_policies, p=[0.55, 0.35, 0.10])
    cover = rng.choice(len(COVERS), n_policies, p=[0.4, 0.35, 0.25])
    driver_age = np.clip(rng.normal(45, 14, n_policies).round(), 18, 90).astype(np.int64)
    vehicle_age = np.clip(rng.gamma(2.0, 3.0, n_policies).round(), 0, 30).astype(np.int64)
    bonus_malus = np.clip(rng.poisson(4, n_policies) - (driver_age - 18) // 12, 0, 22).astype(
        np.int64
    )
    power_kw = np.clip(rng.lognormal(4.3, 0.3, n_policies).round(), 30, 250).astype(np.int64)
    exposure = np.round(
        np.where(rng.random(n_policies) < 0.7, 1.0, rng.uniform(0.05, 1.0, n_policies)), 4
    )
    gender = rng.choice(["female", "male"], n_policies)

    frequency = (
        BASE_FREQUENCY
        * np.asarray(AREA_RELATIVITY)[area]
        * np.asarray(FUEL_RELATIVITY)[fuel]
        * np.asarray(COVER_RELATIVITY)[cover]
        * np.exp(-0.012 * (driver_age - 45) + 0.0004 * (driver_age - 45) ** 2 / 10)
        * np.exp(0.06 * bonus_malus)
        * np.exp(0.003 * (power_kw - 75))
        * np.exp(-0.01 * vehicle_age)
    )
    claims = rng.poisson(frequency * exposure)
    return pd.DataFrame(
        {
            "policy_id": np.arange(1, n_policies + 1),
            "exposure": exposure,
            "claim_count": claims.astype(np.int64),
            "area": pd.Categorical.from_codes(area, AREAS),
            "fuel": pd.Categorical.from_codes(fuel, FUELS),
            "cover": pd.Categorical.from_codes(cover, COVERS),
            "driver_age": driver_age,
            "vehicle_age": vehicle_age,
            "bonus_malus": bonus_malus,
            "power_kw": power_kw,
            "gender": gender,
        }
    )


RATING_FACTORS = ("area", "fuel", "cover", "driver_age", "vehicle_age", "bonus_malus", "power_kw")
CATEGORICAL_FACTORS = ("area", "fuel", "cover")
NUMERIC_FACTORS = ("driver_age", "vehicle_age", "bonus_malus", "power_kw")
