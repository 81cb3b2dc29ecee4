"""The governed state rebuilt from the audit trail alone, and each event checked against the rules.

``replay(events)`` walks the events oldest first and rebuilds what the tables should hold: every
version (artifact digest, flavor, creator, stage), aliases, protected aliases, the policy and
identity mode, users with their roles and who granted each, tokens (by prefix), enrollment codes,
promotion requests with their decisions, and one stage transition per ``stage`` event. On the way
it checks each event against the rules in force when it was written (the replayed policy and
roles): in a governed registry, a Production move needs an approved request (or is a rollback to a
version approved before), an approver is neither the requester nor the version's creator nor
their puppet, a protected alias moves through an approved request. A state edited with SQL and
then put back (policy → open, a one-person promotion through the API, policy → governed) leaves
such an event behind.

``reconcile.py`` compares the rebuilt state with the tables. An action the replay does not know
changes nothing here: whatever such an event did to the tables shows up as a difference there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ratekeeper.governance.policy import PERMISSIONS

if TYPE_CHECKING:
    from ratekeeper.governance.audit import AuditEvent

GOVERNED = "governed"
SEEDED_PROTECTED = {"champion": "ratekeeper"}
"""Protected by migration 0003 (no event records it): the state before the first event."""
POLICY_ACTOR = "policy"
"""The decider recorded when the policy applies a request by itself (``request.applied``)."""
GATED = ("Staging", "Production")
ROLLOUT_ACTORS = ("rollout", "guards")
"""Who a rating server records as the actor of a rollout's step and of an automatic rollback."""


def column_digest(text: str) -> str:
    """The SHA-256 of a stored JSON column's text, as a ``register`` event records it."""
    return hashlib.sha256(text.encode()).hexdigest()


def recorded_columns(size: int, signature: str, profile: str, lineage: str) -> dict[str, Any]:
    """What a ``register`` event records of a version's stored columns, beyond its artifact."""
    return {
        "size": size,
        "signature": column_digest(signature),
        "profile": column_digest(profile),
        "lineage": column_digest(lineage),
    }


@dataclass
class VersionFacts:
    created_by: str
    description: str | None
    recorded: dict[str, Any]
    """What the ``register`` event holds: artifact, flavor, metrics, and (newer events) size and
    the digests of the signature, profile and lineage columns."""
    stage: str = "None"


@dataclass
class RequestFacts:
    model: str
    version: int
    stage: str | None
    alias: str | None
    recorded: dict[str, Any]
    requested_by: str
    comment: str | None
    status: str = "pending"
    decided_by: str | None = None
    decision_comment: str | None = None
    override: bool = False


@dataclass
class UserFacts:
    created_by: str
    roles: dict[str, str]
    """role → who granted it."""


@dataclass
class TokenFacts:
    user: str
    created_by: str
    revoked_by: str | None = None


@dataclass
class TransitionFacts:
    event_id: int
    model: str
    version: int
    from_stage: str
    to_stage: str
    actor: str
    request_id: int | None
    comment: str | None
    at: datetime


@dataclass
class GovernedState:
    policy: str | None = None
    identity: str | None = None
    models: dict[str, str] = field(default_factory=dict)
    """model name → who created it (its first registration)."""
    versions: dict[tuple[str, int], VersionFacts] = field(default_factory=dict)
    aliases: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    """(model, alias) → (version, who set it)."""
    protected: dict[str, str] = field(default_factory=lambda: dict(SEEDED_PROTECTED))
    users: dict[str, UserFacts] = field(default_factory=dict)
    tokens: dict[str, TokenFacts] = field(default_factory=dict)
    enrollments: dict[str, list[int]] = field(default_factory=dict)
    """user → [codes issued, codes redeemed]."""
    requests: dict[int, RequestFacts] = field(default_factory=dict)
    transitions: list[TransitionFacts] = field(default_factory=list)


def replay(events: Iterable[AuditEvent]) -> tuple[GovernedState, list[str]]:
    """The state the events rebuild, and the events that broke a rule when written."""
    replayer = _Replayer()
    for event in events:
        handler = _HANDLERS.get(event.action)
        if handler is not None:
            handler(replayer, event)
    return replayer.state, replayer.violations


def request_id(target: str | None) -> int | None:
    """The request an event names (``target="request 12"``)."""
    if target and target.startswith("request "):
        number = target.removeprefix("request ")
        return int(number) if number.isdigit() else None
    return None


def where(model: str | None, version: int | None) -> str:
    return f"models/{model} version {version}"


class _Replayer:
    def __init__(self) -> None:
        self.state = GovernedState()
        self.violations: list[str] = []
        self._rollback_to: tuple[str, int] | None = None
        self.rollouts: dict[str, int] = {}
        """model → the version under rollout."""

    # -- the rules in force when an event was written ------------------------------------------
    @property
    def governed(self) -> bool:
        return self.state.policy == GOVERNED

    def refuse(self, event: AuditEvent, what: str) -> None:
        self.violations.append(f"event {event.id}: {what} while the registry was governed")

    def _roles(self, actor: str) -> set[str] | None:
        user = self.state.users.get(actor)
        return set(user.roles) if user is not None else None

    def require(self, event: AuditEvent, action: str, doing: str) -> None:
        """In a governed registry, the actor was a user holding a role that allows ``action``."""
        roles = PERMISSIONS[action]
        if not self.governed or event.actor.startswith("sso:"):
            return  # SSO roles come from the identity provider's groups, not the registry
        held = self._roles(event.actor)
        if held is None:
            self.refuse(event, f"{event.actor} {doing}, not being a user of the registry,")
        elif not held & roles:
            self.refuse(
                event,
                f"{event.actor} ({'+'.join(sorted(held)) or 'no roles'}) {doing} without the "
                f"{' or '.join(sorted(roles))} role",
            )

    def approved(self, model: str, version: int, *, stage: str | None, alias: str | None) -> bool:
        return any(
            r.model == model
            and r.version == version
            and r.status == "approved"
            and (r.stage == stage if stage is not None else r.alias == alias)
            for r in self.state.requests.values()
        )

    # -- the registry, users, tokens -----------------------------------------------------------
    def registry_create(self, event: AuditEvent) -> None:
        after = event.after or {}
        self.state.policy = after.get("policy")
        self.state.identity = after.get("identity")
        admin = after.get("admin", event.actor)
        self.state.users[admin] = UserFacts(admin, {"admin": admin})

    def user_add(self, event: AuditEvent) -> None:
        self.require(event, "manage_users", f"added user {event.target}")
        roles = (event.after or {}).get("roles", [])
        self.state.users[str(event.target)] = UserFacts(
            event.actor, dict.fromkeys(roles, event.actor)
        )
        self._enrollment(str(event.target), issued=1)

    def user_roles(self, event: AuditEvent) -> None:
        self.require(event, "manage_users", f"changed the roles of {event.target}")
        user = self.state.users.get(str(event.target))
        roles = (event.after or {}).get("roles", [])
        if user is None:
            self.violations.append(f"event {event.id}: roles given to {event.target}, never added")
            user = self.state.users[str(event.target)] = UserFacts(event.actor, {})
        user.roles = {role: user.roles.get(role, event.actor) for role in roles}

    def user_enrollment(self, event: AuditEvent) -> None:
        self.require(event, "manage_users", f"issued an enrollment code for {event.target}")
        self._enrollment(str(event.target), issued=1)

    def enroll(self, event: AuditEvent) -> None:
        name = str(event.target)
        self._enrollment(name, redeemed=1)
        prefix = (event.after or {}).get("prefix")
        if prefix:
            self.state.tokens[prefix] = TokenFacts(name, name)

    def _enrollment(self, name: str, *, issued: int = 0, redeemed: int = 0) -> None:
        counts = self.state.enrollments.setdefault(name, [0, 0])
        counts[0] += issued
        counts[1] += redeemed

    def token_create(self, event: AuditEvent) -> None:
        prefix = (event.after or {}).get("prefix")
        if prefix:
            self.state.tokens[prefix] = TokenFacts(str(event.target or event.actor), event.actor)

    def token_revoke(self, event: AuditEvent) -> None:
        prefix = (event.before or {}).get("prefix")
        token = self.state.tokens.get(prefix) if prefix else None
        if token is not None:
            if token.user != event.actor:
                self.require(event, "manage_users", f"revoked token {prefix} of {token.user}")
            token.revoked_by = event.actor

    def alias_protect(self, event: AuditEvent) -> None:
        self.require(event, "manage_users", f"protected alias {event.target!r}")
        self.state.protected[str(event.target)] = event.actor

    def alias_unprotect(self, event: AuditEvent) -> None:
        self.require(event, "manage_users", f"unprotected alias {event.target!r}")
        self.state.protected.pop(str(event.target), None)

    # -- versions, stages, aliases -------------------------------------------------------------
    def register(self, event: AuditEvent) -> None:
        assert event.model is not None and event.version is not None
        self.require(event, "register", f"registered {where(event.model, event.version)}")
        self.state.models.setdefault(event.model, event.actor)
        self.state.versions[(event.model, event.version)] = VersionFacts(
            event.actor, event.comment, dict(event.after or {})
        )

    def rollback(self, event: AuditEvent) -> None:
        assert event.model is not None and event.version is not None
        self.require(event, "rollback", f"rolled back {event.model}")
        self._rollback_to = (event.model, event.version)

    def stage(self, event: AuditEvent) -> None:
        model, version = str(event.model), int(event.version or 0)
        old, new = (event.before or {}).get("stage"), (event.after or {}).get("stage")
        number = request_id(event.target)
        facts = self.state.versions.get((model, version))
        if facts is not None:
            facts.stage = str(new)
        self.state.transitions.append(
            TransitionFacts(
                event.id,
                model,
                version,
                str(old),
                str(new),
                event.actor,
                number,
                event.comment,
                event.at,
            )
        )
        rollback = self._rollback_to if new == "Production" else None
        if new == "Production":
            self._rollback_to = None
        if not self.governed:
            return
        moved = f"moved {where(model, version)} to {new}"
        by = f"{event.actor} {moved}"
        if number is not None:
            request = self.state.requests.get(number)
            # A promotion archives the previous Production version under the same request.
            archived = old == "Production" and new == "Archived"
            if request is None or request.status != "approved":
                self.refuse(event, f"{by} under request {number}, which was not approved")
            elif not archived and (request.model, request.version, request.stage) != (
                model,
                version,
                new,
            ):
                self.refuse(event, f"{by} under request {number}, which asked for another move")
        elif new == "Production" and rollback == (model, version):
            if not self.approved(model, version, stage="Production", alias=None):
                self.refuse(event, f"{by} (a rollback) though no request ever approved it")
        elif new in GATED:
            self.refuse(event, f"{by} without an approved request")
        else:
            self.require(event, "archive", moved)

    def alias_set(self, event: AuditEvent) -> None:
        model, alias, version = str(event.model), str(event.target), int(event.version or 0)
        self.state.aliases[(model, alias)] = (version, event.actor)
        if not self.governed:
            return
        pointed = f"pointed alias {model}@{alias} at version {version}"
        self.require(event, "alias", pointed)
        if alias in self.state.protected and not self.approved(
            model, version, stage=None, alias=alias
        ):
            self.refuse(event, f"{event.actor} {pointed} (protected) without an approved request")

    def alias_follow(self, event: AuditEvent) -> None:
        """An alias the registry keeps: ``champion`` on the Production version, ``challenger``
        on the version under rollout (each moved inside the change that moves it)."""
        model, alias = str(event.model), str(event.target)
        version = (event.after or {}).get("version")
        if version is None:
            self.state.aliases.pop((model, alias), None)
            return
        self.state.aliases[(model, alias)] = (int(version), event.actor)
        facts = self.state.versions.get((model, int(version)))
        if alias == "champion" and (facts is None or facts.stage != "Production"):
            self.violations.append(
                f"event {event.id}: champion followed {where(model, version)}, "
                "which is not in Production"
            )
        elif alias == "challenger" and self.rollouts.get(model) != int(version):
            self.violations.append(
                f"event {event.id}: challenger followed {where(model, version)}, "
                "which is not under rollout"
            )

    # -- rollouts ------------------------------------------------------------------------------
    def rollout_start(self, event: AuditEvent) -> None:
        model, version = str(event.model), int(event.version or 0)
        self.rollouts[model] = version
        mode = (event.after or {}).get("mode")
        self.require(event, "rollout", f"started a {mode} rollout of {where(model, version)}")
        if (
            self.governed
            and mode != "shadow"
            and not self.approved(model, version, stage="Production", alias=None)
        ):
            self.refuse(
                event,
                f"{event.actor} started a {mode} rollout of {where(model, version)} "
                "without an approved request",
            )

    def rollout_change(self, event: AuditEvent) -> None:
        """A pause, resume or hand-made completion needs the rollout role, an abort the
        rollback one; a step or an automatic rollback is the rating server's."""
        action = event.action.removeprefix("rollout.")
        status = (event.after or {}).get("status")
        if status in ("completed", "aborted", "rolled_back"):
            self.rollouts.pop(str(event.model), None)
        if event.actor in ROLLOUT_ACTORS or (event.after or {}).get("cause") == "stage":
            return  # the server's own, or ended by a stage move (checked as such)
        needed = "rollback" if action == "abort" else "rollout"
        self.require(event, needed, f"{action}d the rollout of {event.model}")

    def alias_delete(self, event: AuditEvent) -> None:
        self.state.aliases.pop((str(event.model), str(event.target)), None)
        self.require(event, "alias", f"deleted alias {event.model}@{event.target}")

    # -- promotion requests --------------------------------------------------------------------
    def request(self, event: AuditEvent) -> None:
        number = request_id(event.target)
        if number is None:
            return
        after = event.after or {}
        model, version = str(event.model), int(event.version or 0)
        self.require(
            event,
            "request",
            f"requested a move of {where(model, version)}",
        )
        self.state.requests[number] = RequestFacts(
            model,
            version,
            after.get("stage"),
            after.get("alias"),
            dict(after),
            event.actor,
            event.comment,
        )

    def decide(self, event: AuditEvent) -> None:
        number = request_id(event.target)
        request = self.state.requests.get(number) if number is not None else None
        if request is None:
            self.violations.append(f"event {event.id}: {event.action} of unknown {event.target}")
            return
        if request.status != "pending":
            self.violations.append(
                f"event {event.id}: {event.action} of request {number}, already {request.status}"
            )
        request.decided_by, request.decision_comment = event.actor, event.comment
        request.status = "rejected" if event.action == "reject" else "approved"
        request.override = event.action == "override"
        if event.action == "reject":
            self.require(event, "reject", f"rejected request {number}")
        elif event.action == "request.applied":
            self._check_applied(event, request)
        else:
            self._check_approval(event, request)

    def _check_applied(self, event: AuditEvent, request: RequestFacts) -> None:
        """The policy applies a request by itself only for Staging with passing gates, or for a
        move to None or Archived (in a governed registry, asked by someone who may archive)."""
        number = request_id(event.target)
        if request.stage == "Staging" and request.recorded.get("gates_passed"):
            return
        if request.stage in ("None", "Archived"):
            if (
                self.governed
                and not (self._roles(request.requested_by) or set()) & PERMISSIONS["archive"]
            ):
                self.refuse(event, f"request {number} by {request.requested_by} was applied")
            return
        what = request.stage or f"@{request.alias}"
        self.violations.append(
            f"event {event.id}: request {number} ({what}) was applied by the policy, "
            "which never applies a request without passing gates or an approval"
        )

    def _check_approval(self, event: AuditEvent, request: RequestFacts) -> None:
        if not self.governed:
            return
        number = request_id(event.target)
        self.require(event, "approve", f"approved request {number}")
        if event.action == "override":
            self.require(event, "override", f"overrode the failed gates of request {number}")
        version = self.state.versions.get((request.model, request.version))
        creator = version.created_by if version is not None else None
        approver = self.state.users.get(event.actor)
        puppet_of = {approver.created_by, approver.roles.get("approver", "")} if approver else set()
        if event.actor in (request.requested_by, creator):
            did = "requested it" if event.actor == request.requested_by else "created the version"
            self.refuse(event, f"request {number} was approved by {event.actor}, who {did}")
        elif puppet_of & {request.requested_by, creator}:
            who = sorted(puppet_of & {request.requested_by, str(creator)})[0]
            self.refuse(
                event,
                f"request {number} was approved by {event.actor}, an account {who} created or "
                "made an approver",
            )
        elif event.actor in self._makers_of(request.requested_by) | self._makers_of(creator):
            self.refuse(
                event,
                f"request {number} was approved by {event.actor}, who created or gave roles to "
                "the account that created or requested it",
            )

    def _makers_of(self, name: str | None) -> set[str]:
        """Who created the account ``name`` or granted it any role."""
        user = self.state.users.get(name) if name is not None else None
        if user is None:
            return set()
        return ({user.created_by} | set(user.roles.values())) - {name, ""}


_Handler = Callable[[_Replayer, "AuditEvent"], None]

_HANDLERS: dict[str, _Handler] = {
    "registry.create": _Replayer.registry_create,
    "user.add": _Replayer.user_add,
    "user.roles": _Replayer.user_roles,
    "user.enrollment": _Replayer.user_enrollment,
    "enroll": _Replayer.enroll,
    "token.create": _Replayer.token_create,
    "token.revoke": _Replayer.token_revoke,
    "alias.protect": _Replayer.alias_protect,
    "alias.unprotect": _Replayer.alias_unprotect,
    "register": _Replayer.register,
    "rollback": _Replayer.rollback,
    "stage": _Replayer.stage,
    "alias.set": _Replayer.alias_set,
    "alias.delete": _Replayer.alias_delete,
    "alias.follow": _Replayer.alias_follow,
    "rollout.start": _Replayer.rollout_start,
    "rollout.step": _Replayer.rollout_change,
    "rollout.pause": _Replayer.rollout_change,
    "rollout.resume": _Replayer.rollout_change,
    "rollout.abort": _Replayer.rollout_change,
    "rollout.complete": _Replayer.rollout_change,
    "rollout.rollback": _Replayer.rollout_change,
    "request": _Replayer.request,
    "approve": _Replayer.decide,
    "override": _Replayer.decide,
    "reject": _Replayer.decide,
    "request.applied": _Replayer.decide,
}
