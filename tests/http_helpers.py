"""Shared pieces of the HTTP tests: a registry with a GLM champion and a GBM challenger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.registries import open_registry

import ratekeeper as rk
from ratekeeper.demo import train_gbm, train_glm
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio

MODEL = "motor_frequency"


def make_registry(folder: Path, n_policies: int = 3000) -> tuple[rk.Registry, Any]:
    book = motor_portfolio(n_policies, seed=21)
    registry = open_registry(folder, user="modeller")
    glm = train_glm(book)
    registry.register_model(
        glm, MODEL, training_data=book, exposure="exposure", id_column="policy_id"
    )
    registry.register_model(
        train_gbm(book, n_trees=20),
        MODEL,
        training_data=book,
        exposure="exposure",
        id_column="policy_id",
    )
    registry.register_model(
        glm,
        MODEL,
        training_data=book.head(n_policies - 1),
        exposure="exposure",
        id_column="policy_id",
    )
    registry.transition_stage(MODEL, 1, "Production")
    registry.set_alias(MODEL, "challenger", 2)
    return registry, book


def bearer_tokens(registry: rk.Registry) -> dict[str, str]:
    """Authorization header values by role: ``admin`` (the registry's creator), a ``viewer``
    and a ``modeller``."""
    tokens = {"admin": registry.create_token(description="tests")}
    for role, name, roles in (("viewer", "vera", ["viewer"]), ("modeller", "mona", ["modeller"])):
        code = registry.add_user(name, roles).enrollment_code
        anonymous = rk.Registry(registry.url)
        tokens[role] = anonymous.enroll(code)
        anonymous.close()
    return {role: f"Bearer {token}" for role, token in tokens.items()}


def policies(book: Any, n: int) -> list[dict[str, Any]]:
    rows = book[[*RATING_FACTORS, "exposure"]].head(n).to_dict("records")
    return [
        {k: (str(v) if k in ("area", "fuel", "cover") else v) for k, v in r.items()} for r in rows
    ]


def glm_and_gbm(folder: Path, n_policies: int = 3000, seed: int = 8) -> tuple[rk.Registry, Any]:
    """An open registry with version 1 a GLM and version 2 a 30-tree GBM of MODEL, no stages."""
    book = motor_portfolio(n_policies, seed=seed)
    registry = open_registry(folder, user="m")
    for model in (train_glm(book), train_gbm(book, n_trees=30)):
        registry.register_model(
            model, MODEL, training_data=book, exposure="exposure", id_column="policy_id"
        )
    return registry, book
