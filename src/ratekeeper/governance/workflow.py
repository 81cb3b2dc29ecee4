"""The promotion workflow, as ``Registry`` methods (mixed into ``Registry``).

request → gates run against the current Production version on a holdout → the report is stored
as an immutable artifact → a second person with the approver role approves (or rejects) → in the
same transaction the stage moves, the previous Production version is archived, and the audit
trail records it all. An approval is bound to the artifact digest and the champion the gates
compared against: if Production changed since, the request is stale (409).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ratekeeper.artifacts import BlobStore
from ratekeeper.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from ratekeeper.governance import audit, identity
from ratekeeper.governance import policy as policy_rules
from ratekeeper.governance.session import ActingSession
from ratekeeper.packaging.package import canonical_json
from ratekeeper.registry import lifecycle, queries
from ratekeeper.registry.entities import ModelVersion, Stage
from ratekeeper.registry.uri import parse_model_uri
from ratekeeper.store import database
from ratekeeper.store.tables import (
    model_versions,
    models,
    promotion_requests,
    protected_aliases,
    stage_transitions,
)

if TYPE_CHECKING:
    from ratekeeper.engine.scorer import Scorer
    from ratekeeper.packaging.package import Package
    from ratekeeper.validation.gate_report import GateReport
    from ratekeeper.validation.policy import GatePolicy

GATED = (Stage.STAGING, Stage.PRODUCTION)
_PRODUCTION = Stage.PRODUCTION.value


@dataclass(frozen=True)
class PromotionRequest:
    id: int
    name: str
    version: int
    stage: Stage | None
    """The stage asked for; None for a request to point a protected alias at the version."""
    status: str  # pending, approved, rejected, superseded
    artifact_digest: str
    gates_passed: bool
    report_digest: str | None
    champion_version: int | None
    requested_by: str
    requested_at: datetime
    comment: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_comment: str | None
    override: bool
    alias: str | None = None
    """The protected alias asked for (``champion``), or None for a stage request."""
    rollout: dict[str, Any] | None = None
    """The rollout plan the request carries (a Production request for a canary or staged
    rollout): approving it lets the rollout start instead of moving the stage at once."""

    @property
    def target(self) -> str:
        """What the request moves the version to: a stage, or ``@alias``."""
        return f"@{self.alias}" if self.alias else self.stage.value if self.stage else ""

    def to_dict(self) -> dict[str, Any]:
        body = {k: getattr(self, k) for k in self.__dataclass_fields__}
        body["stage"] = self.stage.value if self.stage else None
        for key in ("requested_at", "decided_at"):
            body[key] = body[key].isoformat() if body[key] else None
        return body


@dataclass(frozen=True)
class ProductionRecord:
    """Which version was Production at a moment, since when, who approved it, on what evidence."""

    name: str
    at: datetime
    version: int
    since: datetime
    promoted_by: str
    request: PromotionRequest | None


class PromotionWorkflow(ActingSession):
    blobs: BlobStore
    gate_policy: GatePolicy

    if TYPE_CHECKING:  # provided by Registry

        def load_model(self, uri: str) -> Scorer: ...

        def resolve(self, uri: str) -> ModelVersion: ...

        def get_version(self, name: str, version: int) -> ModelVersion: ...

        def load_package(self, version: ModelVersion) -> Package: ...

    # -- requesting ---------------------------------------------------------------------------
    def request_promotion(
        self,
        name: str,
        version: int,
        stage: str | Stage,
        *,
        holdout: Any = None,
        comment: str | None = None,
        target: str | None = None,
        protected: str | None = None,
        rollout: Any = None,
    ) -> PromotionRequest:
        """Ask to move a version; Staging and Production requests run the gates on ``holdout``.

        ``stage`` is a stage, or ``"@alias"`` for a protected alias (``"@champion"``): such a
        request runs the gates like Production and, once approved, points the alias at the
        version. ``target`` is the holdout's observed column (default: the version's registered
        target); ``protected`` names a column the fairness indicator groups by (e.g. ``gender``).
        A Staging request whose gates pass, and an Archived or None request by a deployer or
        approver, take effect at once; Production and alias requests wait for an approval.

        ``rollout`` (a Production request only) is the plan of a canary or staged rollout
        (``{"mode": "canary", "percent": 5, ...}`` or a ``RolloutPlan``): once approved, the
        version is not moved at once; ``start_rollout`` with the same plan releases it, and the
        rollout's completion makes it Production under this request.
        """
        from ratekeeper.validation.policy import prohibited_factors_used

        goal, alias = _parse_target(stage)
        plan_text = _rollout_plan(rollout, goal)
        candidate = self.get_version(name, version)
        self._read_access().require("request")
        from ratekeeper.engine.scorer import Scorer

        challenger = Scorer(candidate, self.load_package(candidate))  # loaded once: the gates too
        prohibited = prohibited_factors_used(
            candidate.signature,
            self.gate_policy,
            challenger.model_inputs,  # what it really reads
        )
        if prohibited:
            raise InvalidInputError(
                f"{name} version {version} uses prohibited rating factor(s) "
                f"{', '.join(prohibited)}: it cannot be promoted"
            )
        with database.read_transaction(self.engine) as conn:  # before seconds of gates
            row = queries.version_row(conn, name, version)
            _refuse_duplicate(conn, row.id, name, version, goal, alias)
        report: GateReport | None = None
        champion: int | None = None
        if alias is not None or goal in GATED:
            report = self._run_gates(challenger, holdout, target, protected, _PRODUCTION)
            champion = report.champion_version
        report_digest = self.blobs.put(canonical_json(report.to_dict())) if report else None
        passed = report.passed if report is not None else True
        with self._write("request") as (conn, access):
            row = queries.version_row(conn, name, version)
            database.lock_model(conn, row.model_id)
            if (
                alias is not None
                and conn.execute(
                    sa.select(protected_aliases.c.alias).where(protected_aliases.c.alias == alias)
                ).first()
                is None
            ):
                raise InvalidInputError(
                    f"alias {alias!r} is not protected: move it with set_alias (needs no request)"
                )
            _refuse_duplicate(conn, row.id, name, version, goal, alias)
            now = datetime.now(UTC)
            request_id = conn.execute(
                sa.insert(promotion_requests)
                .values(
                    version_id=row.id,
                    target_stage=goal.value if goal is not None else None,
                    target_alias=alias,
                    artifact_digest=row.artifact_digest,
                    status="pending",
                    gates_passed=passed,
                    report_digest=report_digest,
                    champion_version=champion,
                    requested_by=access.actor,
                    requested_at=now,
                    comment=comment,
                    override=False,
                    rollout_plan=plan_text,
                )
                .returning(promotion_requests.c.id)
            ).scalar_one()
            audit.append(
                conn,
                actor=access.actor,
                action="request",
                model=name,
                version=version,
                target=f"request {request_id}",
                comment=comment,
                after={
                    "stage": goal.value if goal is not None else None,
                    "alias": alias,
                    "gates_passed": passed,
                    "report": report_digest,
                    "champion": champion,
                    **({"rollout": json.loads(plan_text)} if plan_text else {}),
                },
            )
            governed = access.policy == policy_rules.GOVERNED
            may_move = not governed or bool(access.roles & policy_rules.PERMISSIONS["archive"])
            if goal is not None and (
                (goal == Stage.STAGING and passed) or (goal not in GATED and may_move)
            ):
                self._decide(
                    conn, request_id, "approved", "policy", "applied by the policy", override=False
                )
                audit.append(  # the decision, so that `audit verify` can replay it
                    conn,
                    actor="policy",
                    action="request.applied",
                    model=name,
                    version=version,
                    target=f"request {request_id}",
                    comment="applied by the policy",
                )
                lifecycle.move_stage(
                    conn,
                    access.actor,
                    name,
                    version,
                    goal,
                    f"request {request_id}",
                    request_id=request_id,
                )
            return _request(conn, request_id)

    def check_promotion(
        self,
        model_uri: str,
        holdout: Any,
        *,
        against: str = "Production",
        target: str | None = None,
        protected: str | None = None,
    ) -> GateReport:
        """Run the promotion gates without filing a request: nothing is written or stored.

        ``model_uri`` names the candidate (``models:/NAME/3``, ``models:/NAME@challenger``);
        ``against`` what it is compared with: a stage (default ``Production``), ``@alias``, a
        version number or a model URI of the same model. A stage that holds no version means a
        first promotion (the comparative gates do not apply), as in ``request_promotion``. The
        gates are the ones a request runs (``run_gates``); needs a read credential.
        """
        self._read_access().require("read")
        if holdout is None:
            raise InvalidInputError(
                "a check runs the promotion gates on a holdout data set: "
                "check_promotion(model_uri, holdout=frame)"
            )
        candidate = self.resolve(model_uri)
        from ratekeeper.engine.scorer import Scorer

        challenger = Scorer(candidate, self.load_package(candidate))
        return self._run_gates(challenger, holdout, target, protected, against)

    def _run_gates(
        self,
        challenger: Scorer,
        holdout: Any,
        target: str | None,
        protected: str | None,
        against: str,
    ) -> GateReport:
        from ratekeeper.validation.gates import run_gates

        if holdout is None:
            raise InvalidInputError(
                "a Staging or Production request needs a holdout data set "
                "(request_promotion(..., holdout=frame))"
            )
        candidate = challenger.model_version
        observed = target or candidate.signature.target
        if observed is None:
            raise InvalidInputError(
                "name the holdout's observed column: request_promotion(..., target='claims') "
                "or register the version with target="
            )
        champion = self._champion(candidate, against)
        return run_gates(
            challenger,
            champion,
            holdout,
            target=observed,
            policy=self.gate_policy,
            protected=protected,
        )

    def _champion(self, candidate: ModelVersion, against: str) -> Scorer | None:
        """What the gates compare the candidate with (None: nothing to compare with)."""
        uri = champion_uri(candidate.name, against)
        ref = parse_model_uri(uri)
        if ref.name != candidate.name:
            raise InvalidInputError(
                f"the gates compare versions of one model: {candidate.name} against {uri}"
            )
        try:
            current = self.load_model(uri)
        except NotFoundError:
            if ref.stage is None:
                raise  # an alias or a version that was named must exist
            return None  # nothing in that stage yet: a first promotion
        return current if current.version != candidate.version else None

    # -- deciding -----------------------------------------------------------------------------
    def approve(
        self, request_id: int, *, comment: str | None = None, override: bool = False
    ) -> PromotionRequest:
        """Approve a pending request (four-eyes) and move the stage, in one transaction.

        A request whose gates failed needs ``override=True`` from an admin (recorded).
        """
        with self._write(None) as (conn, access):
            request = self._pending(conn, request_id)
            governed = access.policy == policy_rules.GOVERNED
            if governed:
                access.require("approve")
                _four_eyes(conn, access.actor, request)
            self._check_fresh(conn, request)
            if not request.gates_passed:
                if not override:
                    raise ConflictError(
                        f"request {request_id}: the gates failed; only an admin may approve it, "
                        "with override=True (recorded in the audit trail)"
                    )
                if governed:
                    access.require("override")
            self._decide(conn, request_id, "approved", access.actor, comment, override=override)
            audit.append(
                conn,
                actor=access.actor,
                action="override" if override else "approve",
                model=request.name,
                version=request.version,
                target=f"request {request_id}",
                comment=comment,
                after={
                    "stage": request.stage.value if request.stage else None,
                    "alias": request.alias,
                    "artifact": request.artifact_digest,
                    **({"rollout": request.rollout} if request.rollout else {}),
                },
            )
            if request.rollout is not None:
                # The plan's rollout releases the version (start_rollout), then promotes it.
                return _request(conn, request_id)
            if request.alias is not None:
                lifecycle.set_alias(
                    conn, access.actor, request.name, request.alias, request.version
                )
            else:
                assert request.stage is not None
                note = f"request {request_id} approved by {access.actor}"
                lifecycle.move_stage(
                    conn,
                    access.actor,
                    request.name,
                    request.version,
                    request.stage,
                    f"{note}: {comment}" if comment else note,
                    request_id=request_id,
                )
            return _request(conn, request_id)

    def reject(self, request_id: int, *, comment: str | None = None) -> PromotionRequest:
        with self._write("reject") as (conn, access):
            request = self._pending(conn, request_id)
            self._decide(conn, request_id, "rejected", access.actor, comment, override=False)
            audit.append(
                conn,
                actor=access.actor,
                action="reject",
                model=request.name,
                version=request.version,
                target=f"request {request_id}",
                comment=comment,
                after={
                    "stage": request.stage.value if request.stage else None,
                    "alias": request.alias,
                },
            )
            return _request(conn, request_id)

    def _pending(self, conn: sa.Connection, request_id: int) -> PromotionRequest:
        request = _request(conn, request_id)
        database.lock_model(conn, queries.model_id(conn, request.name))
        request = _request(conn, request_id)  # re-read under the lock
        if request.status != "pending":
            raise ConflictError(f"request {request_id} is {request.status}, not pending")
        return request

    def _check_fresh(self, conn: sa.Connection, request: PromotionRequest) -> None:
        row = queries.version_row(conn, request.name, request.version)
        if row.artifact_digest != request.artifact_digest:
            raise ConflictError(f"request {request.id} is stale: the artifact changed")
        if request.alias is not None or request.stage in GATED:
            current = queries.production_version(conn, row.model_id)
            if current != request.champion_version and current != request.version:
                raise ConflictError(
                    f"request {request.id} is stale: Production is now version {current}, the "
                    f"gates compared against {request.champion_version}; request again"
                )

    def _decide(
        self,
        conn: sa.Connection,
        request_id: int,
        status: str,
        actor: str,
        comment: str | None,
        *,
        override: bool,
    ) -> None:
        conn.execute(
            sa.update(promotion_requests)
            .where(promotion_requests.c.id == request_id)
            .values(
                status=status,
                decided_by=actor,
                decided_at=datetime.now(UTC),
                decision_comment=comment,
                override=override,
            )
        )

    # -- reading ------------------------------------------------------------------------------
    def get_request(self, request_id: int) -> PromotionRequest:
        with database.read_transaction(self.engine) as conn:
            return _request(conn, request_id)

    def list_requests(
        self, name: str | None = None, *, status: str | None = None
    ) -> list[PromotionRequest]:
        with database.read_transaction(self.engine) as conn:
            query = _request_query().order_by(promotion_requests.c.id)
            if name is not None:
                query = query.where(models.c.name == name)
            if status is not None:
                query = query.where(promotion_requests.c.status == status)
            return [_to_request(r) for r in conn.execute(query)]

    def request_report(self, request_id: int) -> GateReport:
        """The gate report stored with a request (verified against its digest)."""
        from ratekeeper.validation.gate_report import GateReport

        request = self.get_request(request_id)
        if request.report_digest is None:
            raise NotFoundError(f"request {request_id} ran no gates (it targets {request.stage})")
        return GateReport.from_dict(json.loads(self.blobs.get(request.report_digest)))

    def production_at(self, name: str, when: datetime) -> ProductionRecord:
        """Which version was Production for ``name`` at ``when``, who approved it, and why."""
        if when.tzinfo is None:
            raise InvalidInputError("give an aware datetime (with a time zone)")
        with database.read_transaction(self.engine) as conn:
            model = queries.model_id(conn, name)
            moves = conn.execute(
                sa.select(model_versions.c.version, stage_transitions)
                .join(model_versions, model_versions.c.id == stage_transitions.c.version_id)
                .where(model_versions.c.model_id == model, stage_transitions.c.at <= when)
                .order_by(stage_transitions.c.id)
            ).all()
            current = None
            for move in moves:
                if move.to_stage == Stage.PRODUCTION.value:
                    current = move
                elif current is not None and move.version == current.version:
                    current = None  # moved out of Production
            if current is None:
                raise NotFoundError(
                    f"model {name!r} had no Production version at {when:%Y-%m-%d %H:%M:%S%z}"
                )
            request = _request(conn, current.request_id) if current.request_id else None
            return ProductionRecord(name, when, current.version, current.at, current.actor, request)


def champion_uri(name: str, against: str) -> str:
    """The model URI of what ``against`` names for model ``name``: a stage, ``@alias``, a
    version number, or a model URI already."""
    text = against.strip()
    if text.startswith("models:/"):
        return text
    if text.startswith("@"):
        return f"models:/{name}{text}"
    return f"models:/{name}/{text}"


def _four_eyes(conn: sa.Connection, approver: str, request: PromotionRequest) -> None:
    """The approver is neither the version's creator nor the requester, nor an account either
    of them created or gave the approver role to (a puppet)."""
    creator = queries.version_row(conn, request.name, request.version).created_by
    if approver == creator:
        raise PermissionDeniedError(
            f"four-eyes: {approver} created {request.name} version {request.version} "
            "and may not approve its promotion"
        )
    if approver == request.requested_by:
        raise PermissionDeniedError(
            f"four-eyes: {approver} requested this promotion and may not approve it"
        )
    made_by, granted_by = identity.role_grantors(conn, approver, "approver")
    puppeteers = {creator, request.requested_by} & {made_by, granted_by}
    if puppeteers:
        who = sorted(puppeteers)[0]
        raise PermissionDeniedError(
            f"four-eyes: {who} created the account {approver} or gave it the approver role, "
            f"so {approver} may not approve {who}'s work"
        )
    # The other way round: an approver who made the requester's or creator's account (an admin
    # who enrolled a modeller account with the code they were given, then approves its work).
    for worker in sorted({creator, request.requested_by}):
        if approver in identity.account_makers(conn, worker):
            raise PermissionDeniedError(
                f"four-eyes: {approver} created the account {worker} or gave it its roles, "
                f"so {approver} may not approve {worker}'s work"
            )


def _refuse_duplicate(
    conn: sa.Connection,
    version_id: int,
    name: str,
    version: int,
    goal: Stage | None,
    alias: str | None,
) -> None:
    """ConflictError when a request for the same version and target is already pending."""
    target = (
        promotion_requests.c.target_stage == goal.value
        if goal is not None
        else promotion_requests.c.target_alias == alias
    )
    duplicate = conn.execute(
        sa.select(promotion_requests.c.id).where(
            promotion_requests.c.version_id == version_id,
            promotion_requests.c.status == "pending",
            target,
        )
    ).scalar()
    if duplicate is not None:
        raise ConflictError(
            f"request {duplicate} for {name} version {version} → "
            f"{goal.value if goal else '@' + str(alias)} is already pending"
        )


def _rollout_plan(rollout: Any, goal: Stage | None) -> str | None:
    """The canonical JSON of a request's rollout plan (checked), or None."""
    if rollout is None:
        return None
    from ratekeeper.rollouts.plan import RolloutPlan

    if goal != Stage.PRODUCTION:
        raise InvalidInputError("a rollout plan goes with a Production request")
    plan = rollout if isinstance(rollout, RolloutPlan) else RolloutPlan.from_dict(rollout)
    if plan.mode == "shadow":
        raise InvalidInputError("a shadow needs no approval: start it with start_rollout")
    return plan.canonical()


def _parse_target(stage: str | Stage) -> tuple[Stage | None, str | None]:
    if isinstance(stage, str) and stage.startswith("@"):
        from ratekeeper.registry.uri import check_alias

        return None, check_alias(stage[1:])
    return Stage.parse(stage), None


def _request_query() -> sa.Select[Any]:
    return (
        sa.select(promotion_requests, models.c.name, model_versions.c.version)
        .join(model_versions, model_versions.c.id == promotion_requests.c.version_id)
        .join(models, models.c.id == model_versions.c.model_id)
    )


def _request(conn: sa.Connection, request_id: int) -> PromotionRequest:
    row = conn.execute(_request_query().where(promotion_requests.c.id == request_id)).first()
    if row is None:
        raise NotFoundError(f"promotion request {request_id} does not exist")
    return _to_request(row)


def _to_request(row: Any) -> PromotionRequest:
    return PromotionRequest(
        id=row.id,
        name=row.name,
        version=row.version,
        stage=Stage(row.target_stage) if row.target_stage else None,
        status=row.status,
        artifact_digest=row.artifact_digest,
        gates_passed=row.gates_passed,
        report_digest=row.report_digest,
        champion_version=row.champion_version,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        comment=row.comment,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_comment=row.decision_comment,
        override=row.override,
        alias=row.target_alias,
        rollout=json.loads(row.rollout_plan) if row.rollout_plan else None,
    )
