"""The remote registry client: ``rk.Registry("http://host:port", token=...)``.

It offers the embedded registry's Python API over the rating server's registry API, so a team
member needs no database credentials: the server authenticates the token and acts as its user
with the same policy, and only the server's database role writes. Models are packaged here,
where they were trained, and uploaded; the server validates the package again. Loading a model
downloads its blobs and verifies each one's SHA-256 here before anything is built from it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratekeeper.artifacts import sha256_hex
from ratekeeper.errors import IntegrityError, InvalidInputError
from ratekeeper.governance import wire
from ratekeeper.governance.audit import AuditEvent, AuditVerification
from ratekeeper.governance.identity import NewUser, TokenInfo, User
from ratekeeper.governance.workflow import ProductionRecord, PromotionRequest
from ratekeeper.packaging.package import Package, as_pandas, load_package
from ratekeeper.packaging.signature import ValidationPolicy
from ratekeeper.registry.entities import ModelVersion, RegisteredModel, Stage, StageTransition
from ratekeeper.registry.transport import Transport, segment
from ratekeeper.rollouts.rollout import Rollout
from ratekeeper.settings import Settings

if TYPE_CHECKING:
    from ratekeeper.batch.scoring import BatchSummary
    from ratekeeper.engine.scorer import Scorer
    from ratekeeper.validation.gate_report import GateReport
    from ratekeeper.validation.policy import GatePolicy

API = "/v1/registry"


def is_remote(uri: object) -> bool:
    """Whether a registry URI names a rating server (``http://`` or ``https://``)."""
    return isinstance(uri, str) and uri.strip().lower().startswith(("http://", "https://"))


class RemoteRegistry:
    """A registry behind a rating server; made by ``rk.Registry("https://...", token=...)``."""

    def __init__(
        self,
        uri: str,
        *,
        token: str | None = None,
        artifacts: str | Path | None = None,
        user: str | None = None,
        settings: Settings | None = None,
        gate_policy: GatePolicy | None = None,
    ) -> None:
        if artifacts is not None:
            raise InvalidInputError(
                "a remote registry keeps its artifacts on the server: drop artifacts="
            )
        if gate_policy is not None:
            raise InvalidInputError(
                "a remote registry's promotion gates are the server's: drop gate_policy="
            )
        self.settings = settings or Settings.from_env()
        token = token or self.settings.token
        if token is not None and not isinstance(token, str):
            raise InvalidInputError("token must be a string")
        self._api = Transport(uri.strip(), token)
        self.url = self._api.base_url
        self._declared = user or self.settings.user
        self._me: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    def close(self) -> None:
        self._api.close()

    @property
    def user(self) -> str:
        """The name this handle acts as (the token's user, as the server knows them)."""
        return str(self._whoami()["name"]) if self._api.has_token else self._declared

    @property
    def policy(self) -> str:
        return str(self._whoami()["policy"])

    def whoami(self) -> User:
        me = self._whoami()
        return User(me["name"], frozenset(me["roles"]), "", datetime.fromtimestamp(0, UTC))

    def _whoami(self) -> dict[str, Any]:
        if self._me is None:
            self._me = self._api.call("GET", "/v1/whoami")
        assert self._me is not None
        return self._me

    # -- registering ----------------------------------------------------------------------------
    def register_model(
        self,
        model: Any,
        name: str,
        *,
        training_data: Any,
        target: str | None = None,
        exposure: str | None = None,
        metrics: Mapping[str, float] | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        id_column: str | None = None,
        validation: ValidationPolicy | None = None,
    ) -> ModelVersion:
        """Package ``model`` here (no pickle), upload it, and record version N+1 of ``name``."""
        from ratekeeper.registry.registry import package_model

        package, facts, clean_metrics, clean_tags = package_model(
            model, name, training_data, target, exposure, metrics, tags, id_column, validation
        )
        return self.register_package(
            package,
            name,
            metrics=clean_metrics,
            lineage=facts,
            description=description,
            tags=clean_tags,
        )

    def register_package(
        self,
        package: Package,
        name: str,
        *,
        metrics: dict[str, float],
        lineage: dict[str, Any],
        description: str | None,
        tags: dict[str, str],
    ) -> ModelVersion:
        """Upload an already built package; the server validates it and records the version."""
        body = {
            "manifest": package.manifest,
            "files": {n: base64.b64encode(data).decode() for n, data in package.files.items()},
            "metrics": metrics,
            "lineage": lineage,
            "description": description,
            "tags": tags,
        }
        return self._version("POST", f"{API}/models/{segment(name)}/versions", body=body)

    # -- stages and aliases -----------------------------------------------------------------------
    def transition_stage(
        self, name: str, version: int, stage: str | Stage, *, comment: str | None = None
    ) -> ModelVersion:
        body = {"stage": stage.value if isinstance(stage, Stage) else stage, "comment": comment}
        return self._version(
            "POST", f"{self._model(name)}/versions/{int(version)}/stage", body=body
        )

    def rollback(self, name: str, *, comment: str | None = None) -> ModelVersion:
        return self._version("POST", f"{self._model(name)}/rollback", body={"comment": comment})

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        path = f"{self._model(name)}/aliases/{segment(alias)}"
        return self._version("PUT", path, body={"version": int(version)})

    def delete_alias(self, name: str, alias: str) -> None:
        self._api.call("DELETE", f"{self._model(name)}/aliases/{segment(alias)}")

    # -- reading ----------------------------------------------------------------------------------
    def list_models(self) -> list[RegisteredModel]:
        found = self._api.call("GET", f"{API}/models")["models"]
        return [RegisteredModel.from_dict(m) for m in found]

    def get_model(self, name: str) -> RegisteredModel:
        return RegisteredModel.from_dict(self._api.call("GET", self._model(name)))

    def get_version(self, name: str, version: int) -> ModelVersion:
        return self._version("GET", f"{self._model(name)}/versions/{int(version)}")

    def list_versions(
        self,
        name: str | None = None,
        *,
        stage: str | Stage | None = None,
        alias: str | None = None,
        tag: str | tuple[str, str] | None = None,
    ) -> list[ModelVersion]:
        query = {
            "name": name,
            "stage": stage.value if isinstance(stage, Stage) else stage,
            "alias": alias,
            "tag": f"{tag[0]}={tag[1]}" if isinstance(tag, tuple) else tag,
        }
        found = self._api.call("GET", f"{API}/versions", query=query)["versions"]
        return [ModelVersion.from_dict(v) for v in found]

    def get_transitions(self, name: str, version: int | None = None) -> list[StageTransition]:
        query = {"version": int(version) if version is not None else None}
        moves = self._api.call("GET", f"{self._model(name)}/transitions", query=query)
        return [StageTransition.from_dict(t) for t in moves["transitions"]]

    def resolve(self, uri: str) -> ModelVersion:
        return self._version("GET", f"{API}/resolve", query={"uri": uri})

    def generation(self) -> int:
        return int(self._api.call("GET", f"{API}/generation")["generation"])

    def production_at(self, name: str, when: datetime) -> ProductionRecord:
        if when.tzinfo is None:
            raise InvalidInputError("give an aware datetime (with a time zone)")
        query = {"at": when.isoformat()}
        return wire.production_from_dict(
            self._api.call("GET", f"{self._model(name)}/production", query=query)
        )

    # -- loading ----------------------------------------------------------------------------------
    def load_model(self, uri: str) -> Scorer:
        from ratekeeper.engine.scorer import Scorer

        version = self.resolve(uri)
        return Scorer(version, self.load_package(version))

    def load_package(self, version: ModelVersion) -> Package:
        """The version's package, each blob downloaded and verified against its digest here."""
        try:
            return load_package(self._blob(version.artifact_digest), self._blob)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{version.name} version {version.version}: {exc.message}"
            ) from None

    def score_file(
        self,
        model_uri: str,
        input: str | Path,
        output: str | Path,
        *,
        rejects: str | Path | None = None,
        chunk_rows: int | None = None,
        progress: bool = False,
        **options: Any,
    ) -> BatchSummary:
        """Reprice a Parquet or CSV book here, with a model downloaded from the server."""
        from ratekeeper.batch.scoring import CHUNK_ROWS, score_file

        return score_file(
            self.load_model(model_uri),
            input,
            output,
            rejects=rejects,
            chunk_rows=chunk_rows or CHUNK_ROWS,
            progress=progress,
            **options,
        )

    def _blob(self, digest: str) -> bytes:
        data = self._api.download(f"{API}/artifacts/{segment(digest)}")
        actual = sha256_hex(data)
        if actual != digest:
            raise IntegrityError(
                f"artifact blob sha256:{digest[:12]} is corrupted (content hashes to {actual[:12]})"
            )
        return data

    # -- the promotion workflow -------------------------------------------------------------------
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
        """Ask to move a version; the server runs the gates on ``holdout`` (sent as Parquet, so
        the gates see the same column types as here)."""
        from ratekeeper.rollouts.plan import RolloutPlan

        body: dict[str, Any] = {
            "model": name,
            "version": version,
            "stage": stage.value if isinstance(stage, Stage) else stage,
            "comment": comment,
            "target": target,
            "protected": protected,
            "rollout": rollout.to_dict() if isinstance(rollout, RolloutPlan) else rollout,
        }
        if holdout is not None:
            body["holdout_parquet"] = _parquet_b64(holdout)
        return wire.request_from_dict(self._api.call("POST", "/v1/requests", body=body))

    def check_promotion(
        self,
        model_uri: str,
        holdout: Any,
        *,
        against: str = "Production",
        target: str | None = None,
        protected: str | None = None,
    ) -> GateReport:
        """Run the promotion gates on the server without filing a request (nothing stored)."""
        from ratekeeper.validation.gate_report import GateReport

        body: dict[str, Any] = {
            "model_uri": model_uri,
            "against": against,
            "target": target,
            "protected": protected,
        }
        if holdout is not None:
            body["holdout_parquet"] = _parquet_b64(holdout)
        return GateReport.from_dict(self._api.call("POST", "/v1/checks", body=body))

    def approve(
        self, request_id: int, *, comment: str | None = None, override: bool = False
    ) -> PromotionRequest:
        body = {"comment": comment, "override": override}
        path = f"/v1/requests/{int(request_id)}/approve"
        return wire.request_from_dict(self._api.call("POST", path, body=body))

    def reject(self, request_id: int, *, comment: str | None = None) -> PromotionRequest:
        path = f"/v1/requests/{int(request_id)}/reject"
        return wire.request_from_dict(self._api.call("POST", path, body={"comment": comment}))

    def get_request(self, request_id: int) -> PromotionRequest:
        return wire.request_from_dict(self._api.call("GET", f"/v1/requests/{int(request_id)}"))

    def list_requests(
        self, name: str | None = None, *, status: str | None = None
    ) -> list[PromotionRequest]:
        found = self._api.call("GET", "/v1/requests", query={"model": name, "status": status})
        return [wire.request_from_dict(r) for r in found["requests"]]

    def request_report(self, request_id: int) -> GateReport:
        from ratekeeper.validation.gate_report import GateReport

        return GateReport.from_dict(self._api.call("GET", f"/v1/requests/{int(request_id)}/gates"))

    # -- users, enrollment and tokens -------------------------------------------------------------
    def add_user(
        self, name: str, roles: Iterable[str], *, enrollment_lifetime: timedelta | None = None
    ) -> NewUser:
        body = {"name": name, "roles": list(roles), "lifetime_hours": _hours(enrollment_lifetime)}
        return wire.new_user_from_dict(self._api.call("POST", "/v1/users", body=body))

    def renew_enrollment(self, name: str, *, lifetime: timedelta | None = None) -> NewUser:
        path = f"/v1/users/{segment(name)}/enrollment"
        body = {"lifetime_hours": _hours(lifetime)}
        return wire.new_user_from_dict(self._api.call("POST", path, body=body))

    def enroll(self, code: str, *, description: str | None = None) -> str:
        """Redeem a one-time enrollment code: returns your own token (shown once)."""
        body = {"code": code, "description": description}
        return str(self._api.call("POST", "/v1/enroll", body=body, anonymous=True)["token"])

    def set_roles(self, name: str, roles: Iterable[str]) -> User:
        path = f"/v1/users/{segment(name)}/roles"
        return wire.user_from_dict(self._api.call("PUT", path, body={"roles": list(roles)}))

    def list_users(self) -> list[User]:
        return [wire.user_from_dict(u) for u in self._api.call("GET", "/v1/users")["users"]]

    def create_token(self, *, description: str | None = None) -> str:
        body = {"description": description}
        return str(self._api.call("POST", "/v1/tokens", body=body)["token"])

    def revoke_token(self, prefix: str) -> TokenInfo:
        path = f"/v1/tokens/{segment(prefix)}/revoke"
        return wire.token_from_dict(self._api.call("POST", path))

    def list_tokens(self) -> list[TokenInfo]:
        return [wire.token_from_dict(t) for t in self._api.call("GET", "/v1/tokens")["tokens"]]

    # -- protected aliases and the audit trail ----------------------------------------------------
    def protected_aliases(self) -> frozenset[str]:
        return frozenset(self._api.call("GET", "/v1/protected-aliases")["aliases"])

    def protect_alias(self, alias: str) -> None:
        self._api.call("PUT", f"/v1/protected-aliases/{segment(alias)}")

    def unprotect_alias(self, alias: str) -> None:
        self._api.call("DELETE", f"/v1/protected-aliases/{segment(alias)}")

    def verify_audit(self) -> AuditVerification:
        """The server's verification (with its signing key, which never leaves the server)."""
        return wire.verification_from_dict(self._api.call("GET", "/v1/audit/verify"))

    def audit_log(self, model: str | None = None, *, limit: int | None = None) -> list[AuditEvent]:
        """The latest ``limit`` audit events (at most 100,000), oldest first."""
        query = {"model": model, "limit": limit or 100_000}
        return [
            wire.event_from_dict(e)
            for e in self._api.call("GET", "/v1/audit", query=query)["events"]
        ]

    # -- rollouts ---------------------------------------------------------------------------------
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
        guards: Any = None,
        comment: str | None = None,
    ) -> Rollout:
        from ratekeeper.rollouts.plan import Guards

        body = {
            "version": int(version),
            "mode": mode,
            "percent": percent,
            "steps": list(steps) if isinstance(steps, tuple | list) else steps,
            "bake": bake,
            "key": key,
            "guards": guards.to_dict() if isinstance(guards, Guards) else guards,
            "comment": comment,
        }
        return Rollout.from_dict(self._api.call("POST", f"{self._model(name)}/rollout", body=body))

    def get_rollout(self, name: str) -> Rollout | None:
        found = self._api.call("GET", f"{self._model(name)}/rollout")["rollout"]
        return Rollout.from_dict(found) if found is not None else None

    def rollout_events(self, name: str) -> list[dict[str, Any]]:
        return list(self._api.call("GET", f"{self._model(name)}/rollout/events")["events"])

    def pause_rollout(self, name: str, *, comment: str | None = None) -> Rollout:
        return self._rollout_move(name, "pause", {"comment": comment})

    def resume_rollout(self, name: str, *, comment: str | None = None) -> Rollout:
        return self._rollout_move(name, "resume", {"comment": comment})

    def abort_rollout(self, name: str, *, reason: str) -> Rollout:
        return self._rollout_move(name, "abort", {"reason": reason})

    def complete_rollout(self, name: str, *, comment: str | None = None) -> Rollout:
        return self._rollout_move(name, "complete", {"comment": comment})

    def rollout_report(self, name: str) -> dict[str, Any]:
        """The comparison the server builds (its guard snapshots, its ledger)."""
        return dict(self._api.call("GET", f"/v1/models/{segment(name)}/rollout/report"))

    def record_outcome(
        self, quote_id: str, *, taken_up: bool, written_premium: float | None = None
    ) -> dict[str, Any]:
        body = {"taken_up": taken_up, "written_premium": written_premium}
        return dict(self._api.call("POST", f"/v1/quotes/{segment(quote_id)}/outcome", body=body))

    def _rollout_move(self, name: str, move: str, body: dict[str, Any]) -> Rollout:
        path = f"{self._model(name)}/rollout/{move}"
        return Rollout.from_dict(self._api.call("POST", path, body=body))

    # -- helpers ----------------------------------------------------------------------------------
    def _model(self, name: str) -> str:
        return f"{API}/models/{segment(name)}"

    def _version(self, method: str, path: str, **options: Any) -> ModelVersion:
        return ModelVersion.from_dict(self._api.call(method, path, **options))


def _hours(lifetime: timedelta | None) -> float | None:
    return lifetime.total_seconds() / 3600 if lifetime is not None else None


def _parquet_b64(frame: Any) -> str:
    """A holdout as a base64 Parquet file: the server's gates see the same column types."""
    buffer = io.BytesIO()
    as_pandas(frame).to_parquet(buffer, index=False)
    return base64.b64encode(buffer.getvalue()).decode()
