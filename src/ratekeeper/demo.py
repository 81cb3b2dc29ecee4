"""The demo: the whole registry flow on a synthetic motor portfolio, in about half a minute.

Generate a portfolio → train a Poisson frequency GLM and a LightGBM GBM → register both →
promote the GLM to Production (the GBM becomes the challenger) → load
``models:/motor_frequency/Production`` → price a handful of policies.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ratekeeper.cli.output import console, table
from ratekeeper.registry.registry import Registry
from ratekeeper.synthetic import (
    CATEGORICAL_FACTORS,
    NUMERIC_FACTORS,
    RATING_FACTORS,
    motor_portfolio,
)

MODEL = "motor_frequency"
AVERAGE_CLAIM_COST = 1_800.0  # EUR, an assumption of the demo: frequency × severity = risk premium


def train_glm(train: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import PoissonRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    pipeline = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(drop="first"), list(CATEGORICAL_FACTORS)),
                        ("numeric", "passthrough", list(NUMERIC_FACTORS)),
                    ]
                ),
            ),
            ("glm", PoissonRegressor(alpha=1e-6, solver="newton-cholesky", max_iter=300)),
        ]
    )
    frequency = train["claim_count"] / train["exposure"]
    return pipeline.fit(
        train[list(RATING_FACTORS)], frequency, glm__sample_weight=train["exposure"]
    )


def train_gbm(train: Any, n_trees: int = 200) -> Any:
    import lightgbm as lgb

    model = lgb.LGBMRegressor(
        objective="poisson",
        n_estimators=n_trees,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=100,
        verbose=-1,
    )
    frequency = train["claim_count"] / train["exposure"]
    return model.fit(train[list(RATING_FACTORS)], frequency, sample_weight=train["exposure"])


def holdout_metrics(model: Any, holdout: Any) -> dict[str, float]:
    """Exposure-weighted Poisson deviance and Gini of the frequency on the holdout."""
    from sklearn.metrics import mean_poisson_deviance

    exposure = holdout["exposure"].to_numpy()
    frequency = holdout["claim_count"].to_numpy() / exposure
    predicted = np.asarray(model.predict(holdout[list(RATING_FACTORS)]))
    return {
        "holdout_poisson_deviance": float(
            mean_poisson_deviance(frequency, predicted, sample_weight=exposure)
        ),
        "holdout_gini": gini(holdout["claim_count"].to_numpy(), predicted * exposure, exposure),
    }


def gini(claims: np.ndarray, expected: np.ndarray, exposure: np.ndarray) -> float:
    """Gini of the ordered Lorenz curve: policies sorted by predicted frequency, riskiest last."""
    order = np.argsort(expected / exposure, kind="stable")
    cum_exposure = np.concatenate([[0.0], np.cumsum(exposure[order]) / exposure.sum()])
    cum_claims = np.concatenate([[0.0], np.cumsum(claims[order]) / claims.sum()])
    area = np.sum((cum_exposure[1:] - cum_exposure[:-1]) * (cum_claims[1:] + cum_claims[:-1]) / 2)
    return float(1 - 2 * area)


def run_demo(registry: Registry, *, n_policies: int = 50_000, out: Path | None = None) -> None:
    started = time.perf_counter()
    console.print(
        f"[bold]ratekeeper demo[/] — registry {registry!r}, artifacts in {registry.blobs.root}"
    )
    book = motor_portfolio(n_policies, seed=7)
    train, holdout = book.iloc[: int(0.8 * n_policies)], book.iloc[int(0.8 * n_policies) :]
    console.print(
        f"1. synthetic motor portfolio: {len(book):,} policies "
        f"({len(train):,} to train, {len(holdout):,} holdout)"
    )

    glm, gbm = train_glm(train), train_gbm(train)
    console.print("2. trained a Poisson frequency GLM and a LightGBM GBM")

    register = dict(
        training_data=train, target="claim_count", exposure="exposure", id_column="policy_id"
    )
    glm_version = registry.register_model(
        glm,
        MODEL,
        metrics=holdout_metrics(glm, holdout),
        tags={"family": "glm", "line": "motor"},
        description="Poisson frequency GLM on area, fuel, cover, age, bonus-malus, power",
        **register,
    )
    gbm_version = registry.register_model(
        gbm,
        MODEL,
        metrics=holdout_metrics(gbm, holdout),
        tags={"family": "gbm", "line": "motor"},
        description="LightGBM Poisson frequency challenger",
        **register,
    )
    console.print(
        f"3. registered {MODEL} version {glm_version.version} (GLM, {glm_version.flavor}) "
        f"and version {gbm_version.version} (GBM, {gbm_version.flavor})"
    )

    registry.transition_stage(
        MODEL, glm_version.version, "Production", comment="demo: GLM signed off as the tariff"
    )
    registry.set_alias(MODEL, "champion", glm_version.version)
    registry.transition_stage(MODEL, gbm_version.version, "Staging", comment="demo: challenger")
    registry.set_alias(MODEL, "challenger", gbm_version.version)
    console.print(
        f"4. version {glm_version.version} → Production (@champion); "
        f"version {gbm_version.version} → Staging (@challenger)"
    )

    champion = registry.load_model(f"models:/{MODEL}/Production")
    challenger = registry.load_model(f"models:/{MODEL}@challenger")
    policies = holdout.head(8)
    rows = policies[[*RATING_FACTORS, "exposure", "policy_id"]].to_dict("records")
    expected = [champion.predict_one(r) for r in rows]
    expected_gbm = challenger.predict(policies)
    console.print(
        f"5. priced {len(rows)} policies with models:/{MODEL}/Production "
        f"(version {champion.version})"
    )
    table(
        f"Quotes — expected claims × €{AVERAGE_CLAIM_COST:,.0f} average cost = risk premium",
        [
            "policy",
            "area",
            "fuel",
            "cover",
            "driver age",
            "bonus-malus",
            "kW",
            "exposure",
            "expected claims",
            "risk premium €",
            "challenger €",
        ],
        [
            (
                r["policy_id"],
                r["area"],
                r["fuel"],
                r["cover"],
                r["driver_age"],
                r["bonus_malus"],
                r["power_kw"],
                r["exposure"],
                f"{e:.4f}",
                f"{e * AVERAGE_CLAIM_COST:,.2f}",
                f"{g * AVERAGE_CLAIM_COST:,.2f}",
            )
            for r, e, g in zip(rows, expected, expected_gbm, strict=True)
        ],
    )
    from ratekeeper.packaging.tables import write_rating_tables

    folder = out or registry.blobs.root.parent / "tables" / f"{MODEL}-v{glm_version.version}"
    written = write_rating_tables(registry.load_package(glm_version), folder)
    console.print(f"6. rating-factor tables of the GLM: {len(written)} CSV files in {folder}")
    console.print(
        f"done in {time.perf_counter() - started:.1f} s. Next: "
        f"`ratekeeper models show {MODEL}`, `ratekeeper versions show {MODEL} "
        f"{glm_version.version}`, `ratekeeper history {MODEL}`"
    )
