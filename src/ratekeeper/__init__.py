"""ratekeeper: a governed model registry and rating engine for insurance pricing."""

from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import (
    ConflictError,
    ImplausiblePriceError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Problem,
    RatekeeperError,
    SchemaVersionError,
    StoreAccessDeniedError,
    StoreUnavailableError,
    UnavailableError,
    UnsupportedModelError,
)
from ratekeeper.packaging.signature import Signature, ValidationPolicy
from ratekeeper.registry.entities import ModelVersion, RegisteredModel, Stage, StageTransition
from ratekeeper.registry.registry import Registry, load_model
from ratekeeper.rollouts import Guards, Rollout, RolloutPlan
from ratekeeper.settings import Settings
from ratekeeper.validation.policy import GatePolicy

__version__ = "0.1.0"

__all__ = [
    "ConflictError",
    "GatePolicy",
    "Guards",
    "ImplausiblePriceError",
    "IntegrityError",
    "InvalidInputError",
    "ModelVersion",
    "NotFoundError",
    "PermissionDeniedError",
    "Problem",
    "RatekeeperError",
    "RegisteredModel",
    "Registry",
    "Rollout",
    "RolloutPlan",
    "SchemaVersionError",
    "Scorer",
    "Settings",
    "Signature",
    "Stage",
    "StageTransition",
    "StoreAccessDeniedError",
    "StoreUnavailableError",
    "UnavailableError",
    "UnsupportedModelError",
    "ValidationPolicy",
    "load_model",
    "__version__",
]
