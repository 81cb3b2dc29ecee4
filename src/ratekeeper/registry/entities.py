"""What the registry holds: models, versions, stage transitions."""

from __future__ import annotations

from collections.abc import Mapping
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "latest_version": self.latest_version,
            "production_version": self.production_version,
            "aliases": dict(self.aliases),
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> RegisteredModel:
        return cls(
            name=body["name"],
            description=body["description"],
            created_by=body["created_by"],
            created_at=datetime.fromisoformat(body["created_at"]),
            latest_version=int(body["latest_version"]),
            production_version=body["production_version"],
            aliases={str(k): int(v) for k, v in body["aliases"].items()},
        )


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

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ModelVersion:
        """The version ``to_dict`` describes (the remote registry client reads it back)."""
        return cls(
            name=body["name"],
            version=int(body["version"]),
            flavor=body["flavor"],
            artifact_digest=body["artifact_digest"],
            artifact_size=int(body["artifact_size"]),
            stage=Stage.parse(body["stage"]),
            stage_changed_at=datetime.fromisoformat(body["stage_changed_at"]),
            created_by=body["created_by"],
            created_at=datetime.fromisoformat(body["created_at"]),
            description=body["description"],
            signature=Signature.from_dict(body["signature"]),
            profile=ReferenceProfile.from_dict(body["profile"]),
            metrics={str(k): float(v) for k, v in body["metrics"].items()},
            lineage=dict(body["lineage"]),
            tags={str(k): str(v) for k, v in body["tags"].items()},
            aliases=tuple(body["aliases"]),
        )


@dataclass(frozen=True)
class StageTransition:
    name: str
    version: int
    from_stage: Stage
    to_stage: Stage
    actor: str
    at: datetime
    comment: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "from_stage": self.from_stage.value,
            "to_stage": self.to_stage.value,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "comment": self.comment,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> StageTransition:
        return cls(
            name=body["name"],
            version=int(body["version"]),
            from_stage=Stage.parse(body["from_stage"]),
            to_stage=Stage.parse(body["to_stage"]),
            actor=body["actor"],
            at=datetime.fromisoformat(body["at"]),
            comment=body["comment"],
        )
