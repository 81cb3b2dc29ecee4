"""The one JSON shape of each governance entity: what the registry API sends and the remote
registry client reads back into the same dataclasses the embedded registry returns.

(The registry's own entities carry ``to_dict``/``from_dict`` in ``registry/entities.py``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ratekeeper.governance.audit import AuditEvent, AuditVerification
from ratekeeper.governance.identity import NewUser, TokenInfo, User
from ratekeeper.governance.workflow import ProductionRecord, PromotionRequest
from ratekeeper.registry.entities import Stage


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- promotion requests ---------------------------------------------------------------------------
def request_to_dict(request: PromotionRequest) -> dict[str, Any]:
    return request.to_dict()


def request_from_dict(body: Mapping[str, Any]) -> PromotionRequest:
    return PromotionRequest(
        id=int(body["id"]),
        name=body["name"],
        version=int(body["version"]),
        stage=Stage.parse(body["stage"]) if body["stage"] is not None else None,
        status=body["status"],
        artifact_digest=body["artifact_digest"],
        gates_passed=bool(body["gates_passed"]),
        report_digest=body["report_digest"],
        champion_version=body["champion_version"],
        requested_by=body["requested_by"],
        requested_at=datetime.fromisoformat(body["requested_at"]),
        comment=body["comment"],
        decided_by=body["decided_by"],
        decided_at=_when(body["decided_at"]),
        decision_comment=body["decision_comment"],
        override=bool(body["override"]),
        alias=body.get("alias"),
        rollout=body.get("rollout"),
    )


def production_to_dict(record: ProductionRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "at": record.at.isoformat(),
        "version": record.version,
        "since": record.since.isoformat(),
        "promoted_by": record.promoted_by,
        "request": record.request.to_dict() if record.request is not None else None,
    }


def production_from_dict(body: Mapping[str, Any]) -> ProductionRecord:
    request = body["request"]
    return ProductionRecord(
        name=body["name"],
        at=datetime.fromisoformat(body["at"]),
        version=int(body["version"]),
        since=datetime.fromisoformat(body["since"]),
        promoted_by=body["promoted_by"],
        request=request_from_dict(request) if request is not None else None,
    )


# -- users and tokens -----------------------------------------------------------------------------
def user_to_dict(user: User) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": user.name,
        "roles": sorted(user.roles),
        "created_by": user.created_by,
        "created_at": user.created_at.isoformat(),
    }
    if isinstance(user, NewUser):  # only ever sent to the admin who added the user
        body["enrollment_code"] = user.enrollment_code
        body["enrollment_expires_at"] = _iso(user.enrollment_expires_at)
    return body


def user_from_dict(body: Mapping[str, Any]) -> User:
    facts = (
        body["name"],
        frozenset(body["roles"]),
        body["created_by"],
        datetime.fromisoformat(body["created_at"]),
    )
    if "enrollment_code" in body:
        return NewUser(*facts, body["enrollment_code"], _when(body["enrollment_expires_at"]))
    return User(*facts)


def new_user_from_dict(body: Mapping[str, Any]) -> NewUser:
    user = user_from_dict(body)
    if not isinstance(user, NewUser):
        raise ValueError("the answer carries no enrollment code")
    return user


def token_to_dict(info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "user": info.user,
        "prefix": info.prefix,
        "description": info.description,
        "created_by": info.created_by,
        "created_at": info.created_at.isoformat(),
        "revoked_at": _iso(info.revoked_at),
    }


def token_from_dict(body: Mapping[str, Any]) -> TokenInfo:
    return TokenInfo(
        id=int(body["id"]),
        user=body["user"],
        prefix=body["prefix"],
        description=body["description"],
        created_by=body["created_by"],
        created_at=datetime.fromisoformat(body["created_at"]),
        revoked_at=_when(body["revoked_at"]),
    )


# -- the audit trail ------------------------------------------------------------------------------
def event_to_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "model": event.model,
        "version": event.version,
        "target": event.target,
        "before": event.before,
        "after": event.after,
        "comment": event.comment,
        "hash": event.hash,
    }


def event_from_dict(body: Mapping[str, Any]) -> AuditEvent:
    return AuditEvent(
        id=int(body["id"]),
        at=datetime.fromisoformat(body["at"]),
        actor=body["actor"],
        action=body["action"],
        model=body["model"],
        version=body["version"],
        target=body["target"],
        before=body["before"],
        after=body["after"],
        comment=body["comment"],
        hash=body["hash"],
    )


def verification_to_dict(result: AuditVerification) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "checked": result.checked,
        "first_bad_id": result.first_bad_id,
        "reason": result.reason,
        "head": result.head,
        "sealed": result.sealed,
        "state_differences": list(result.state_differences),
        "missing_guards": list(result.missing_guards),
    }


def verification_from_dict(body: Mapping[str, Any]) -> AuditVerification:
    return AuditVerification(
        ok=bool(body["ok"]),
        checked=int(body["checked"]),
        first_bad_id=body["first_bad_id"],
        reason=body["reason"],
        head=body.get("head"),
        sealed=body.get("sealed"),
        state_differences=tuple(body.get("state_differences", ())),
        missing_guards=tuple(body.get("missing_guards", ())),
    )
