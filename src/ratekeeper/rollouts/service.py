"""Rollouts as ``Registry`` methods (mixed into ``Registry``): start, pause, resume, abort,
complete, and the two moves a rating server makes by itself (a staged step that has baked, and
an automatic rollback when a guard breaks).

Governance: a shadow prices in the background only, so it needs the ``rollout`` permission
(deployer, admin) and nothing more. A canary or staged rollout shows customers the challenger's
prices, so in a governed registry it also needs an approved Production request for the version
that carried the same plan (``request_promotion(name, N, "Production", rollout=plan, ...)``):
the approver saw the plan, and approving it approves the last step's promotion too. The request
is used once, and must still be fresh (Production unchanged since its gates ran).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ratekeeper.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from ratekeeper.governance import audit
from ratekeeper.governance import policy as policy_rules
from ratekeeper.governance.session import ActingSession
from ratekeeper.registry import lifecycle, queries
from ratekeeper.registry.entities import Stage
from ratekeeper.rollouts import records
from ratekeeper.rollouts.plan import Guards, RolloutPlan
from ratekeeper.rollouts.rollout import Rollout
from ratekeeper.settings import Settings
from ratekeeper.store import database
from ratekeeper.store.tables import promotion_requests, rollouts

STEP_ACTOR = "rollout"
"""The actor a rating server records for a staged step (and the promotion of the last one)."""
GUARD_ACTOR = "guards"
"""The actor a rating server records for an automatic rollback."""


class RolloutActions(ActingSession):
    settings: Settings
    url: str

    def start_rollout(
        self,
        name: str,
        version: int,
        *,
        mode: str,
        percent: float | None = None,
        steps: Any = None,
        bake: float | str | None = None,
        key: str | None = None,
        guards: Guards | Mapping[str, Any] | None = None,
        comment: str | None = None,
    ) -> Rollout:
        """Release version ``version`` beside the Production version.

        ``mode``: ``"shadow"`` (the challenger prices ``percent`` % of quotes off the request
        path, default 100; customers get the champion's price), ``"canary"`` (``percent`` % of
        policies, default 10, get the challenger's price, sticky by ``key``) or ``"staged"``
        (``steps`` of traffic, default 1,10,50,100 %, each held ``bake`` (default 10m) while the
        guards hold; after the last, the version becomes Production). ``key`` names the policy
        field that decides the arm (default: the signature's id column, else the rating
        factors). ``guards``: ``rk.Guards(...)``.
        """
        plan = RolloutPlan.build(
            mode, percent=percent, steps=steps, bake=bake, key=key, guards=guards
        )
        with self._write("rollout") as (conn, access):
            row = queries.version_row(conn, name, version)
            database.lock_model(conn, row.model_id)
            current = records.running(conn, row.model_id)
            if current is not None:
                raise ConflictError(
                    f"{name} already has a {current.status} {current.mode} rollout of version "
                    f"{current.version}: complete or abort it first"
                )
            champion = queries.production_version(conn, row.model_id)
            if champion is None:
                raise ConflictError(
                    f"model {name!r} has no Production version for version {version} to be "
                    "compared with: promote one first"
                )
            if champion == version:
                raise ConflictError(f"{name} version {version} is already in Production")
            request_id = None
            if access.policy == policy_rules.GOVERNED and plan.mode != "shadow":
                request_id = _approved_plan(conn, name, version, row.id, champion, plan)
            now = datetime.now(UTC)
            rollout_id = conn.execute(
                sa.insert(rollouts)
                .values(
                    model_id=row.model_id,
                    version_id=row.id,
                    champion_version=champion,
                    mode=plan.mode,
                    percent=plan.percent,
                    steps=",".join(f"{s:g}" for s in plan.steps) or None,
                    step_index=0,
                    bake_seconds=plan.bake_seconds,
                    key=plan.key,
                    guards=RolloutPlan.canonical_guards(plan.guards),
                    status="active",
                    request_id=request_id,
                    started_by=access.actor,
                    started_at=now,
                    step_started_at=now,
                )
                .returning(rollouts.c.id)
            ).scalar_one()
            records.add_event(conn, rollout_id, "start", access.actor, plan.percent, plan.to_dict())
            audit.append(
                conn,
                actor=access.actor,
                action="rollout.start",
                model=name,
                version=version,
                target=f"rollout {rollout_id}",
                after={**plan.to_dict(), "champion": champion, "request": request_id},
                comment=comment,
                bump_generation=True,
            )
            lifecycle.follow_alias(
                conn, access.actor, name, row.model_id, lifecycle.CHALLENGER, version
            )
            return records.by_id(conn, rollout_id)

    def get_rollout(self, name: str) -> Rollout | None:
        """The model's running rollout, else its last one (None: it never had one)."""
        with database.read_transaction(self.engine) as conn:
            return records.latest(conn, queries.model_id(conn, name))

    def running_rollouts(self) -> list[Rollout]:
        """Every model's active or paused rollout (what a rating server routes by)."""
        with database.read_transaction(self.engine) as conn:
            return records.all_running(conn)

    def rollout_events(self, name: str) -> list[dict[str, Any]]:
        """What happened to the model's last rollout: its moves and the guards' snapshots."""
        with database.read_transaction(self.engine) as conn:
            found = records.latest(conn, queries.model_id(conn, name))
            return records.events(conn, found.id) if found is not None else []

    def rollout_report(self, name: str, *, ledger: Path | None = None) -> dict[str, Any]:
        """The champion/challenger comparison (``rollouts/report.py``); ``ledger``: the quote
        ledger's folder (default: the one a server beside this registry writes)."""
        from ratekeeper.engine.ledger import default_root
        from ratekeeper.rollouts import report

        root = ledger if ledger is not None else default_root(self.settings, self.url)
        return report.comparison(self, name, root)

    def pause_rollout(self, name: str, *, comment: str | None = None) -> Rollout:
        """Send the challenger no quotes (and stop its steps) until ``resume_rollout``."""
        with self._write("rollout") as (conn, access):
            current = _running(conn, name, "active")
            return records.change(
                conn,
                current,
                actor=access.actor,
                kind="pause",
                values={"status": "paused"},
                comment=comment,
            )

    def resume_rollout(self, name: str, *, comment: str | None = None) -> Rollout:
        """Back to the current step's traffic; its bake time starts again."""
        with self._write("rollout") as (conn, access):
            current = _running(conn, name, "paused")
            values = {"status": "active", "step_started_at": datetime.now(UTC)}
            return records.change(
                conn, current, actor=access.actor, kind="resume", values=values, comment=comment
            )

    def abort_rollout(self, name: str, *, reason: str) -> Rollout:
        """Stop the rollout by hand: the challenger gets no more quotes (the kill switch: a
        deployer, approver or admin may pull it)."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInputError("abort_rollout needs a reason")
        with self._write("rollback") as (conn, access):
            current = _running(conn, name, None)
            return _end(conn, current, access.actor, "abort", "aborted", reason)

    def complete_rollout(self, name: str, *, comment: str | None = None) -> Rollout:
        """End the rollout: a canary or staged one makes its version Production (archiving the
        old one, in one transaction, under the approved request); a shadow simply ends."""
        with self._write("rollout") as (conn, access):
            current = _running(conn, name, None)
            if current.mode == "shadow":
                return _end(conn, current, access.actor, "complete", "completed", comment)
            _promote(conn, current, access.actor, comment or "rollout completed")
            return records.by_id(conn, current.id)

    # -- what a rating server does by itself ------------------------------------------------------
    def advance_rollouts(self, now: datetime | None = None) -> list[Rollout]:
        """Move every staged rollout whose step has baked to its next step, or, after the last,
        make its version Production. Safe to call from every server at once: each step is taken
        once (re-read under the write lock)."""
        moved: list[Rollout] = []
        now = now or datetime.now(UTC)
        with self._write(None) as (conn, _access):
            for current in records.all_running(conn):
                database.lock_model(conn, queries.model_id(conn, current.name))
                current = records.by_id(conn, current.id)  # re-read under the lock
                due = current.next_step_at()
                if due is None or due > now:
                    continue
                following = current.step_index + 1
                if following < len(current.steps):
                    values = {
                        "percent": current.steps[following],
                        "step_index": following,
                        "step_started_at": now,
                    }
                    detail = {"step": following, "of": len(current.steps)}
                    moved.append(
                        records.change(
                            conn,
                            current,
                            actor=STEP_ACTOR,
                            kind="step",
                            values=values,
                            detail=detail,
                        )
                    )
                else:
                    try:
                        _promote(conn, current, STEP_ACTOR, "the last step baked")
                    except ConflictError as refused:  # Production moved meanwhile: stop here
                        _end(conn, current, STEP_ACTOR, "abort", "aborted", refused.message)
                    moved.append(records.by_id(conn, current.id))
        return moved

    def roll_back_rollout(
        self, name: str, rollout_id: int, reason: str, evidence: Mapping[str, Any] | None = None
    ) -> Rollout | None:
        """A guard broke: the challenger to 0 %, why recorded. None when that rollout is no
        longer active (another worker or replica was first)."""
        with self._write(None) as (conn, _access):
            model_id = queries.model_id(conn, name)
            database.lock_model(conn, model_id)
            current = records.running(conn, model_id)
            if current is None or current.id != rollout_id or current.status != "active":
                return None
            return _end(
                conn, current, GUARD_ACTOR, "rollback", "rolled_back", reason, dict(evidence or {})
            )

    def record_guard_snapshot(self, rollout_id: int, worker: str, snapshot: Any) -> None:
        """One serving process's guard statistics so far (telemetry for the comparison report;
        not audited: it changes no governed state)."""
        with database.write_transaction(self.engine) as conn:
            records.add_event(conn, rollout_id, "guards", worker, 0.0, snapshot)


def _running(conn: sa.Connection, name: str, status: str | None) -> Rollout:
    model_id = queries.model_id(conn, name)
    database.lock_model(conn, model_id)
    current = records.running(conn, model_id)
    if current is None:
        raise NotFoundError(f"model {name!r} has no running rollout")
    if status is not None and current.status != status:
        raise ConflictError(f"the rollout of {name} version {current.version} is {current.status}")
    return current


def _end(
    conn: sa.Connection,
    current: Rollout,
    actor: str,
    kind: str,
    status: str,
    reason: str | None,
    evidence: dict[str, Any] | None = None,
) -> Rollout:
    values = {"status": status, "ended_at": datetime.now(UTC), "reason": reason}
    detail = {"reason": reason, **(evidence or {})}
    ended = records.change(
        conn, current, actor=actor, kind=kind, values=values, detail=detail, comment=reason
    )
    model_id = queries.model_id(conn, current.name)
    lifecycle.follow_alias(conn, actor, current.name, model_id, lifecycle.CHALLENGER, None)
    return ended


def _promote(conn: sa.Connection, current: Rollout, actor: str, comment: str) -> None:
    """The challenger to Production under the rollout's request; the stage move archives the
    old version, moves champion and ends the rollout (registry/lifecycle.py)."""
    model_id = queries.model_id(conn, current.name)
    production = queries.production_version(conn, model_id)
    if production != current.champion_version:
        raise ConflictError(
            f"Production of {current.name} is now version {production}, not the version "
            f"{current.champion_version} the rollout started against: abort it"
        )
    lifecycle.move_stage(
        conn,
        actor,
        current.name,
        current.version,
        Stage.PRODUCTION,
        f"rollout {current.id}: {comment}",
        request_id=current.request_id,
    )


def _approved_plan(
    conn: sa.Connection, name: str, version: int, version_id: int, champion: int, plan: RolloutPlan
) -> int:
    """The approved, unused, fresh Production request for the version that carried this plan."""
    rows = conn.execute(
        sa.select(
            promotion_requests.c.id,
            promotion_requests.c.rollout_plan,
            promotion_requests.c.champion_version,
        ).where(
            promotion_requests.c.version_id == version_id,
            promotion_requests.c.target_stage == Stage.PRODUCTION.value,
            promotion_requests.c.status == "approved",
            promotion_requests.c.rollout_plan.is_not(None),
            ~sa.exists().where(rollouts.c.request_id == promotion_requests.c.id),
        )
    ).all()
    wanted = plan.canonical()
    for row in rows:
        if row.rollout_plan == wanted:
            if row.champion_version != champion:
                raise ConflictError(
                    f"request {row.id} is stale: Production is now version {champion}, its "
                    f"gates compared against {row.champion_version}; request again"
                )
            return int(row.id)
    approved = ", ".join(
        f"request {r.id}: {RolloutPlan.from_json(r.rollout_plan).describe()}" for r in rows
    )
    raise PermissionDeniedError(
        f"this registry is governed: a {plan.mode} rollout of {name} version {version} shows "
        "customers its prices and needs an approved Production request carrying this plan "
        f"({plan.describe()}): request_promotion({name!r}, {version}, 'Production', "
        f"rollout=..., holdout=...)" + (f"; approved plans: {approved}" if approved else "")
    )


class OutcomeActions(ActingSession):
    def record_outcome(
        self, quote_id: str, *, taken_up: bool, written_premium: float | None = None
    ) -> dict[str, Any]:
        """Whether a quote was taken up, and its written premium (the policy system's post;
        needs the ``outcome`` permission: deployer or admin). Not audited: it is business
        data, not governed state."""
        from ratekeeper.rollouts import outcomes

        with self._write("outcome") as (conn, access):
            return outcomes.record(conn, quote_id, taken_up, written_premium, access.actor)

    def quote_outcomes(self, quote_ids: list[str]) -> dict[str, tuple[bool, float | None]]:
        from ratekeeper.rollouts import outcomes

        with database.read_transaction(self.engine) as conn:
            return outcomes.read(conn, quote_ids)
