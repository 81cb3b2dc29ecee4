"""A rollout and its states.

::

    active ⇄ paused          (pause_rollout / resume_rollout)
    active | paused → completed     (complete_rollout; a staged rollout's last step)
    active | paused → aborted       (abort_rollout; a rollback or promotion of the model)
    active → rolled_back            (a guard broke: automatic)

Only an active rollout sends quotes to the challenger; a paused one keeps its statistics and
sends none until resumed (its step's bake time then starts again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ratekeeper.rollouts.plan import Guards, RolloutPlan

RUNNING = ("active", "paused")
ENDED = ("completed", "aborted", "rolled_back")


@dataclass(frozen=True)
class Rollout:
    id: int
    name: str
    version: int
    """The challenger: the version under rollout."""
    champion_version: int | None
    """The Production version when the rollout started."""
    mode: str
    status: str
    percent: float
    """The challenger's share now (a shadow: the share priced in the shadow)."""
    steps: tuple[float, ...]
    step_index: int
    bake_seconds: float | None
    key: str | None
    guards: Guards
    request_id: int | None
    started_by: str
    started_at: datetime
    step_started_at: datetime
    ended_at: datetime | None
    reason: str | None

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    @property
    def live_percent(self) -> float:
        """The challenger's share of quotes right now: 0 unless active."""
        return self.percent if self.status == "active" else 0.0

    @property
    def plan(self) -> RolloutPlan:
        first = self.steps[0] if self.steps else self.percent
        return RolloutPlan(self.mode, first, self.steps, self.bake_seconds, self.key, self.guards)

    def next_step_at(self) -> datetime | None:
        """When a staged rollout's current step has baked (None: nothing to step)."""
        if self.mode != "staged" or self.status != "active" or self.bake_seconds is None:
            return None
        return self.step_started_at + timedelta(seconds=self.bake_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "champion_version": self.champion_version,
            "mode": self.mode,
            "status": self.status,
            "percent": self.percent,
            "live_percent": self.live_percent,
            "steps": list(self.steps),
            "step_index": self.step_index,
            "bake_seconds": self.bake_seconds,
            "key": self.key,
            "guards": self.guards.to_dict(),
            "request_id": self.request_id,
            "started_by": self.started_by,
            "started_at": self.started_at.isoformat(),
            "step_started_at": self.step_started_at.isoformat(),
            "next_step_at": _iso(self.next_step_at()),
            "ended_at": _iso(self.ended_at),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Rollout:
        return cls(
            id=int(body["id"]),
            name=str(body["name"]),
            version=int(body["version"]),
            champion_version=body["champion_version"],
            mode=str(body["mode"]),
            status=str(body["status"]),
            percent=float(body["percent"]),
            steps=tuple(float(s) for s in body["steps"]),
            step_index=int(body["step_index"]),
            bake_seconds=body["bake_seconds"],
            key=body["key"],
            guards=Guards.from_dict(body["guards"]),
            request_id=body["request_id"],
            started_by=str(body["started_by"]),
            started_at=datetime.fromisoformat(body["started_at"]),
            step_started_at=datetime.fromisoformat(body["step_started_at"]),
            ended_at=datetime.fromisoformat(body["ended_at"]) if body["ended_at"] else None,
            reason=body["reason"],
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
