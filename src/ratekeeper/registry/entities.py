"""What the registry holds: models, versions, stage transitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.profile import ReferenceProfile
from ratekeeper.packaging.signature import Signature


class Stage(StrEnum):
    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"

    @classmethod
    def parse(cls, value: str | Stage | None) -> Stage:
        if value is None:
            return cls.NONE
        if isinstance(value, Stage):
            return value
        for stage in cls:
            if stage.value.lower() == str(value).lower():
                return stage
        raise InvalidInputError(
            f"unknown stage {value!r}: use one of {', '.join(s.value for s in cls)}"
        )


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str | None
    created_by: str
    created_at: datetime
    latest_version: int
    production_version: int | None
    aliases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    flavor: str
    artifact_digest: str
    artifact_size: int
    stage: Stage
    stage_changed_at: datetime
    created_by: str
    created_at: datetime
    description: str | None
    signature: Signature
    profile: ReferenceProfile
    metrics: dict[str, float]
    lineage: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Everything about the version, JSON-ready (the CLI's --json and the HTTP view)."""
        return {
            "name": self.name,
            "version": self.version,
            "stage": self.stage.value,
            "aliases": list(self.aliases),
            "flavor": self.flavor,
            "artifact_digest": self.artifact_digest,
            "artifact_size": self.artifact_size,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "stage_changed_at": self.stage_changed_at.isoformat(),
            "description": self.description,
            "metrics": self.metrics,
            "tags": self.tags,
            "lineage": self.lineage,
            "signature": self.signature.to_dict(),
            "profile": self.profile.to_dict(),
        }


@dataclass(frozen=True)
class StageTransition:
    name: str
    version: int
    from_stage: Stage
    to_stage: Stage
    actor: str
    at: datetime
    comment: str | None
