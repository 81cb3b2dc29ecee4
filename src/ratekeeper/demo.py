"""The demo: the whole registry flow on a synthetic motor portfolio, in about half a minute.

Generate a portfolio → train a Poisson frequency GLM and a LightGBM GBM → register both →
promote the GLM to Production (the GBM becomes the challenger) → load
``models:/motor_frequency/Production`` → price a handful of policies.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ratekeeper.artifacts import LocalBlobStore
from ratekeeper.cli.output import console, table
from ratekeeper.errors import NotFoundError, PermissionDeniedError
from ratekeeper.registry.registry import Registry
from ratekeeper.settings import Settings
from ratekeeper.synthetic import (
    CATEGORICAL_FACTORS,
    NUMERIC_FACTORS,
    RATING_FACTORS,
    motor_portfolio,
)
from ratekeeper.validation.metrics import gini

MODEL = "motor_frequency"
ADMIN, MODELLER, CHIEF_ACTUARY = "admin", "alice", "carol"
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


def run_demo(
    uri: str | Path | None, settings: Settings, *, n_policies: int = 50_000, out: Path | None = None
) -> None:
    started = time.perf_counter()
    admin, modeller, actuary = open_demo_team(uri, settings)
    registry = admin
    console.print(
        f"[bold]ratekeeper demo[/] — {registry!r} ({registry.policy}), "
        f"artifacts in {registry.blobs.location}"
    )
    book = motor_portfolio(n_policies, seed=7)
    train, holdout = book.iloc[: int(0.8 * n_policies)], book.iloc[int(0.8 * n_policies) :]
    console.print(
        f"1. synthetic motor portfolio: {len(book):,} policies "
        f"({len(train):,} to train, {len(holdout):,} holdout)"
    )

    glm, gbm = train_glm(train), train_gbm(train)
    console.print("2. trained a Poisson frequency GLM and a LightGBM GBM")
    console.print(
        f"3. users: {MODELLER} (modeller) and {CHIEF_ACTUARY} (approver, Chief Actuary), each "
        f"enrolled with the one-time code the admin got and holding their own token "
        f"({tokens_folder(registry)})"
    )

    register = dict(
        training_data=train, target="claim_count", exposure="exposure", id_column="policy_id"
    )
    glm_version = modeller.register_model(
        glm,
        MODEL,
        metrics=holdout_metrics(glm, holdout),
        tags={"family": "glm", "line": "motor"},
        description="Poisson frequency GLM on area, fuel, cover, age, bonus-malus, power",
        **register,
    )
    gbm_version = modeller.register_model(
        gbm,
        MODEL,
        metrics=holdout_metrics(gbm, holdout),
        tags={"family": "gbm", "line": "motor"},
        description="LightGBM Poisson frequency challenger",
        **register,
    )
    console.print(
        f"4. {MODELLER} registered {MODEL} version {glm_version.version} (GLM, "
        f"{glm_version.flavor}) and version {gbm_version.version} (GBM, {gbm_version.flavor})"
    )

    request = modeller.request_promotion(
        MODEL,
        glm_version.version,
        "Production",
        holdout=holdout,
        protected="gender",
        comment="new motor tariff",
    )
    verdict = "passed" if request.gates_passed else "FAILED"
    console.print(
        f"5. {MODELLER} requested Production for version {glm_version.version}: "
        f"request {request.id}, gates {verdict}"
    )
    decided = actuary.approve(request.id, override=False, comment="signed off by the Chief Actuary")
    champion_request = modeller.request_promotion(
        MODEL, glm_version.version, "@champion", holdout=holdout, comment="the tariff's champion"
    )
    actuary.approve(champion_request.id, comment="champion = the signed-off tariff")
    console.print(
        f"6. {CHIEF_ACTUARY} approved requests {decided.id} and {champion_request.id}: version "
        f"{glm_version.version} → Production and @champion (a protected alias)"
    )
    challenger_request = modeller.request_promotion(
        MODEL, gbm_version.version, "Staging", holdout=holdout, comment="challenger"
    )
    actuary.set_alias(MODEL, "challenger", gbm_version.version)
    console.print(
        f"7. version {gbm_version.version} requested for Staging (request "
        f"{challenger_request.id}: {challenger_request.status}), @challenger"
    )

    champion = registry.load_model(f"models:/{MODEL}/Production")
    challenger = registry.load_model(f"models:/{MODEL}@challenger")
    policies = holdout.head(8)
    rows = policies[[*RATING_FACTORS, "exposure", "policy_id"]].to_dict("records")
    expected = [champion.predict_one(r) for r in rows]
    expected_gbm = challenger.predict(policies)
    console.print(
        f"8. priced {len(rows)} policies with models:/{MODEL}/Production "
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
    from ratekeeper.validation.report import render_html

    folder = out or _beside_artifacts(registry) / "demo" / f"{MODEL}-v{glm_version.version}"
    folder.mkdir(parents=True, exist_ok=True)
    holdout.to_parquet(folder / "holdout.parquet", index=False)
    written = write_rating_tables(registry.load_package(glm_version), folder / "tables")
    report = folder / f"validation-report-{request.id}.html"
    report.write_text(render_html(registry.request_report(request.id)), encoding="utf-8")
    console.print(
        f"9. the GLM's {len(written)} rating-factor tables (CSV), the validation report the "
        f"Chief Actuary read, and the holdout (holdout.parquet, for `ratekeeper request "
        f"... --holdout`): {folder}"
    )
    reprice_and_monitor(registry, book, folder)
    check = registry.verify_audit()
    console.print(
        f"12. audit trail: {check.checked} events, chain and seal "
        f"{'intact' if check.ok else 'BROKEN: ' + str(check.reason)}"
    )
    console.print(
        f"done in {time.perf_counter() - started:.1f} s. Next: "
        f"`ratekeeper models show {MODEL}`, `ratekeeper requests list`, "
        f"`ratekeeper audit log --model {MODEL}`, `ratekeeper serve`; to act as "
        f"{MODELLER}: `export RATEKEEPER_TOKEN=$(cat {tokens_folder(registry)}/{MODELLER}.token)`"
    )


def tokens_folder(registry: Registry) -> Path:
    return _beside_artifacts(registry) / "demo-tokens"


def _beside_artifacts(registry: Registry) -> Path:
    """The folder above a local artifact store (the registry's home); with S3, the home."""
    blobs = registry.blobs
    return blobs.root.parent if isinstance(blobs, LocalBlobStore) else registry.settings.home


def open_demo_team(
    uri: str | Path | None, settings: Settings
) -> tuple[Registry, Registry, Registry]:
    """The demo's admin, modeller and Chief Actuary, each with their own token.

    A new registry is created with ``admin`` as its first admin; the modeller and the Chief
    Actuary are added and redeem their enrollment codes. The demo keeps the three tokens in
    ``demo-tokens/`` (0600, folder 0700) beside the artifacts, so that a rerun, and the
    reader trying the CLI afterwards, can act as each of them. A real team never keeps
    anyone's token but their own.
    """
    try:
        admin = Registry(uri, settings=settings)
    except NotFoundError:
        admin, token = Registry.create(uri, admin=ADMIN, settings=settings)
        _keep_token(tokens_folder(admin), ADMIN, token)
    folder = tokens_folder(admin)
    handles: list[Registry] = []
    for name in (ADMIN, MODELLER, CHIEF_ACTUARY):
        kept = folder / f"{name}.token"
        if not kept.exists():
            if name == ADMIN:
                raise PermissionDeniedError(
                    f"the registry at {uri or settings.home} was not made by the demo: "
                    "run the demo on a new one (ratekeeper demo --home FOLDER)"
                )
            role = "modeller" if name == MODELLER else "approver"
            code = handles[0].add_user(name, [role]).enrollment_code
            anonymous = Registry(uri, settings=settings)
            _keep_token(folder, name, anonymous.enroll(code))
            anonymous.close()
        handles.append(Registry(uri, token=kept.read_text().strip(), settings=settings))
    admin.close()
    return handles[0], handles[1], handles[2]


def _keep_token(folder: Path, name: str, token: str) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{name}.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")


def reprice_and_monitor(registry: Registry, book: Any, folder: Path) -> None:
    """The nightly renewal batch and the monthly drift check, on the demo's book."""
    from ratekeeper.monitoring import drift
    from ratekeeper.monitoring.report import render_drift_html

    renewals = book.drop(columns=["claim_count", "gender"]).astype({"area": str})
    renewals.loc[renewals.index[:2], ["area", "driver_age"]] = ["Z", 150]  # two bad rows
    renewals.to_parquet(folder / "renewals.parquet", index=False)
    summary = registry.score_file(
        f"models:/{MODEL}/Production", folder / "renewals.parquet", folder / "priced.parquet"
    )
    console.print(
        f"10. renewal repricing: {summary.rows_priced:,} policies priced with version "
        f"{summary.version} into {summary.output.name}, {summary.rows_rejected} rejected with "
        f"their reasons into {summary.rejects.name if summary.rejects else '-'}"
    )
    next_year = book.assign(
        driver_age=(book["driver_age"] + 1).clip(upper=90),
        vehicle_age=book["vehicle_age"] + 1,
    )
    report = drift(registry.load_model(f"models:/{MODEL}/Production"), next_year)
    (folder / "drift-report.html").write_text(render_drift_html(report), encoding="utf-8")
    moved = ", ".join(f"{d.name} {d.psi:.3f}" for d in report.factors if d.psi >= 0.01)
    console.print(
        f"11. drift of the book one year on vs the frozen reference profile: "
        f"{report.status.upper()} (PSI {moved or 'all below 0.01'}); drift-report.html"
    )
