"""The promotion workflow, users, tokens and the audit trail over HTTP, with bearer tokens and the
same roles as the Python API (each route calls it, acting as the token's user).

401 without a valid token, 403 for a role that may not act, 409 for a stale or decided request.
The registry API itself (models, versions, stages, aliases, artifacts) is in registry_routes.py;
``add_governance_routes`` mounts both.
"""

from __future__ import annotations

import base64
import binascii
import io
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Query, Request
from starlette.responses import HTMLResponse, Response

from ratekeeper.governance import wire
from ratekeeper.http import protocol, schemas
from ratekeeper.http.auth import (
    AUTH_ERRORS,
    AttemptLimiter,
    TokenAuth,
    id64,
    off_loop,
)
from ratekeeper.http.errors import HTTPProblem, json_response
from ratekeeper.http.isolated import RequestProcess
from ratekeeper.http.registry_routes import add_registry_routes
from ratekeeper.registry.registry import Registry

__all__ = ["AUTH_ERRORS", "TokenAuth", "add_governance_routes"]

ENROLL_ATTEMPTS_PER_MINUTE = 10
"""Enrollment is anonymous (the code is the credential): guessing is slowed per client address."""


def add_governance_routes(
    app: FastAPI,
    registry: Registry,
    auth: TokenAuth,
    max_holdout_bytes: int,
    request_cpus: frozenset[int] | None = None,
) -> None:
    add_registry_routes(app, registry, auth)
    _add_request_routes(app, registry, auth, max_holdout_bytes, request_cpus)
    _add_identity_routes(app, auth)
    _add_audit_routes(app, auth)


def _request_id(request_id: int) -> int:
    return id64(request_id, f"promotion request {request_id} does not exist")


def _add_request_routes(
    app: FastAPI,
    registry: Registry,
    auth: TokenAuth,
    max_holdout_bytes: int,
    request_cpus: frozenset[int] | None,
) -> None:
    requests_process = RequestProcess(registry, request_cpus)
    app.state.requests_process = requests_process  # closed by the app's shutdown

    @app.post(
        "/v1/requests",
        tags=["governance"],
        responses=AUTH_ERRORS,
        status_code=201,
        summary="Request a promotion; the gates run on the holdout given",
        openapi_extra=_body(
            {
                "model": "motor_frequency",
                "version": 2,
                "stage": "Production",
                "comment": "2027 tariff",
                "target": "claim_count",
                "holdout": [{**schemas.POLICY_EXAMPLE, "claim_count": 0}],
            },
            "holdout: a list of policy objects, or holdout_parquet: a base64 Parquet file",
        ),
    )
    async def create_request(request: Request) -> Response:
        user = await off_loop(lambda: auth.user(request))
        # Parsing the holdout and the gates hold the GIL for seconds: in another process, which
        # reads a large body from the connection itself (isolated.py and handoff.py say why).
        created = await requests_process.request_promotion(user, request, max_holdout_bytes)
        return json_response(created, 201)

    @app.post(
        "/v1/checks",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Run the promotion gates without filing a request (CI); nothing is stored",
        openapi_extra=_body(
            {
                "model_uri": "models:/motor_frequency/2",
                "against": "Production",
                "target": "claim_count",
                "holdout": [{**schemas.POLICY_EXAMPLE, "claim_count": 0}],
            },
            "holdout: a list of policy objects, or holdout_parquet: a base64 Parquet file; "
            "the answer is the gate report (GateReport.to_dict); any read role may check",
        ),
    )
    async def check_promotion(request: Request) -> Response:
        user = await off_loop(lambda: auth.user(request))
        checked = await requests_process.check_promotion(user, request, max_holdout_bytes)
        return json_response(checked)

    @app.get(
        "/v1/requests",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Promotion requests, optionally by model and status",
    )
    def list_requests(
        request: Request, model: str | None = Query(None), status: str | None = Query(None)
    ) -> Response:
        found = auth.acting(request).list_requests(model, status=status)
        return json_response({"requests": [wire.request_to_dict(r) for r in found]})

    @app.get(
        "/v1/requests/{request_id}",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="One promotion request",
    )
    def get_request(request: Request, request_id: int) -> Response:
        actor = auth.acting(request)
        return json_response(wire.request_to_dict(actor.get_request(_request_id(request_id))))

    @app.get(
        "/v1/requests/{request_id}/report",
        tags=["governance"],
        responses={
            **AUTH_ERRORS,
            200: {
                "description": "the validation report",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
        },
        summary="The request's validation report (HTML)",
    )
    def get_report(request: Request, request_id: int) -> Response:
        from ratekeeper.validation.report import render_html

        actor = auth.acting(request)
        return HTMLResponse(render_html(actor.request_report(_request_id(request_id))))

    @app.get(
        "/v1/requests/{request_id}/gates",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="The request's gate report (JSON, as GateReport.to_dict)",
    )
    def get_gates(request: Request, request_id: int) -> Response:
        actor = auth.acting(request)
        return json_response(actor.request_report(_request_id(request_id)).to_dict())

    @app.post(
        "/v1/requests/{request_id}/approve",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Approve (four-eyes); the version moves at once",
        openapi_extra=_body({"comment": "signed off", "override": False}),
    )
    async def approve(request: Request, request_id: int) -> Response:
        number = _request_id(request_id)
        actor = await off_loop(lambda: auth.acting(request))
        body = await _optional_body(request)
        decided = await off_loop(
            lambda: actor.approve(
                number, comment=_text(body.get("comment")), override=body.get("override") is True
            )
        )
        return json_response(wire.request_to_dict(decided))

    @app.post(
        "/v1/requests/{request_id}/reject",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Reject a pending request",
        openapi_extra=_body({"comment": "why"}),
    )
    async def reject(request: Request, request_id: int) -> Response:
        number = _request_id(request_id)
        actor = await off_loop(lambda: auth.acting(request))
        body = await _optional_body(request)
        decided = await off_loop(lambda: actor.reject(number, comment=_text(body.get("comment"))))
        return json_response(wire.request_to_dict(decided))


def _add_identity_routes(app: FastAPI, auth: TokenAuth) -> None:
    enrollments = AttemptLimiter(ENROLL_ATTEMPTS_PER_MINUTE, 60.0)

    @app.get("/v1/users", tags=["identity"], responses=AUTH_ERRORS, summary="The users and roles")
    def list_users(request: Request) -> Response:
        users = auth.acting(request).list_users()
        return json_response({"users": [wire.user_to_dict(u) for u in users]})

    @app.post(
        "/v1/users",
        tags=["identity"],
        responses=AUTH_ERRORS,
        status_code=201,
        summary="Add a user (admin); the answer carries their one-time enrollment code",
        openapi_extra=_body({"name": "carol", "roles": ["approver"], "lifetime_hours": 72}),
    )
    async def add_user(request: Request) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        body = await _optional_body(request)
        name, roles = str(body.get("name", "")), _roles(body.get("roles"))
        lifetime = _hours(body.get("lifetime_hours"))
        added = await off_loop(
            lambda: (
                actor.add_user(name, roles, enrollment_lifetime=lifetime)
                if lifetime
                else actor.add_user(name, roles)
            )
        )
        return json_response(wire.user_to_dict(added), 201)

    @app.put(
        "/v1/users/{name}/roles",
        tags=["identity"],
        responses=AUTH_ERRORS,
        summary="Replace a user's roles (admin; audited)",
        openapi_extra=_body({"roles": ["approver", "viewer"]}),
    )
    async def set_roles(request: Request, name: str) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        roles = _roles((await _optional_body(request)).get("roles"))
        return json_response(
            wire.user_to_dict(await off_loop(lambda: actor.set_roles(name, roles)))
        )

    @app.post(
        "/v1/users/{name}/enrollment",
        tags=["identity"],
        responses=AUTH_ERRORS,
        summary="A new one-time enrollment code for a user (admin)",
        openapi_extra=_body({"lifetime_hours": 72}),
    )
    async def renew_enrollment(request: Request, name: str) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        lifetime = _hours((await _optional_body(request)).get("lifetime_hours"))
        renewed = await off_loop(
            lambda: (
                actor.renew_enrollment(name, lifetime=lifetime)
                if lifetime
                else actor.renew_enrollment(name)
            )
        )
        return json_response(wire.user_to_dict(renewed))

    @app.post(
        "/v1/enroll",
        tags=["identity"],
        responses={**AUTH_ERRORS, 429: {"model": schemas.ErrorBody, "description": "slow down"}},
        status_code=201,
        summary="Redeem an enrollment code for your own token (no token needed: the code is it)",
        openapi_extra=_body({"code": "rke_...", "description": "laptop"}),
    )
    async def enroll(request: Request) -> Response:
        enrollments.check(request)
        body = await _optional_body(request)
        code, description = str(body.get("code", "")), _text(body.get("description"))
        token = await off_loop(lambda: auth.registry.enroll(code, description=description))
        return json_response({"token": token}, 201)

    @app.get(
        "/v1/whoami",
        tags=["identity"],
        responses=AUTH_ERRORS,
        summary="The token's user, their roles, and the registry's policy",
    )
    def whoami(request: Request) -> Response:
        actor = auth.acting(request)
        me = actor.whoami()
        return json_response({"name": me.name, "roles": sorted(me.roles), "policy": actor.policy})

    @app.get("/v1/tokens", tags=["identity"], responses=AUTH_ERRORS, summary="The API tokens")
    def list_tokens(request: Request) -> Response:
        actor = auth.acting(request)
        return json_response({"tokens": [wire.token_to_dict(t) for t in actor.list_tokens()]})

    @app.post(
        "/v1/tokens",
        tags=["identity"],
        responses=AUTH_ERRORS,
        status_code=201,
        summary="A new token for yourself (shown once)",
        openapi_extra=_body({"description": "CI pipeline"}),
    )
    async def create_token(request: Request) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        description = _text((await _optional_body(request)).get("description"))
        token = await off_loop(lambda: actor.create_token(description=description))
        return json_response({"token": token}, 201)

    @app.post(
        "/v1/tokens/{prefix}/revoke",
        tags=["identity"],
        responses=AUTH_ERRORS,
        summary="Revoke a token: your own, or anyone's as an admin",
    )
    def revoke_token(request: Request, prefix: str) -> Response:
        return json_response(wire.token_to_dict(auth.acting(request).revoke_token(prefix)))

    @app.get(
        "/v1/protected-aliases",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Aliases that move only through an approved request",
    )
    def protected_aliases(request: Request) -> Response:
        return json_response({"aliases": sorted(auth.acting(request).protected_aliases())})

    @app.put(
        "/v1/protected-aliases/{alias}",
        tags=["governance"],
        responses=AUTH_ERRORS,
        status_code=204,
        summary="Protect an alias (admin; audited)",
    )
    def protect_alias(request: Request, alias: str) -> Response:
        auth.acting(request).protect_alias(alias)
        return Response(status_code=204)

    @app.delete(
        "/v1/protected-aliases/{alias}",
        tags=["governance"],
        responses=AUTH_ERRORS,
        status_code=204,
        summary="Stop protecting an alias (admin; audited)",
    )
    def unprotect_alias(request: Request, alias: str) -> Response:
        auth.acting(request).unprotect_alias(alias)
        return Response(status_code=204)


def _add_audit_routes(app: FastAPI, auth: TokenAuth) -> None:
    @app.get(
        "/v1/audit",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="The latest audit events (oldest first), optionally for one model",
    )
    def audit_log(
        request: Request,
        model: str | None = Query(None),
        limit: int = Query(1000, ge=1, le=100_000),
    ) -> Response:
        events = auth.acting(request).audit_log(model, limit=limit)
        return json_response({"events": [wire.event_to_dict(e) for e in events]})

    @app.get(
        "/v1/audit/verify",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Recompute the audit hash chain and check its seal with the server's key",
    )
    def audit_verify(request: Request) -> Response:
        return json_response(wire.verification_to_dict(auth.acting(request).verify_audit()))


async def _optional_body(request: Request) -> dict[str, Any]:
    if not (await request.body()).strip():
        return {}
    body = await protocol.read_json(request, 100_000)
    if not isinstance(body, dict):
        raise HTTPProblem("bad_request", "send a JSON object")
    return body


def _holdout(rows: Any, parquet: Any) -> Any:
    """The holdout frame: a list of policy objects, or a base64 Parquet file (exact types)."""
    import pandas as pd

    if parquet is not None:
        if not isinstance(parquet, str):
            raise HTTPProblem("bad_request", "holdout_parquet must be a base64 string")
        try:
            return pd.read_parquet(io.BytesIO(base64.b64decode(parquet, validate=True)))
        except (binascii.Error, ValueError, OSError) as exc:
            raise HTTPProblem(
                "bad_request", f"holdout_parquet is not a base64 Parquet file: {type(exc).__name__}"
            ) from None
    if rows is None:
        return None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise HTTPProblem("bad_request", "holdout must be a list of policy objects")
    return pd.DataFrame.from_records(rows)


def promotion_arguments(body: Any) -> dict[str, Any]:
    """``request_promotion``'s arguments from a request's JSON body (checked field by field)."""
    if not isinstance(body, dict):
        raise HTTPProblem("bad_request", "send a JSON object with model, version and stage")
    version = id64(_int(body.get("version")), "no version has a number that large")
    return {
        "name": str(body.get("model", "")),
        "version": version,
        "stage": str(body.get("stage", "")),
        "holdout": _holdout(body.get("holdout"), body.get("holdout_parquet")),
        "comment": _text(body.get("comment")),
        "target": _text(body.get("target")),
        "protected": _text(body.get("protected")),
        "rollout": body.get("rollout"),  # a rollout plan (checked by RolloutPlan)
    }


def check_arguments(body: Any) -> dict[str, Any]:
    """``check_promotion``'s arguments from a request's JSON body (checked field by field)."""
    if not isinstance(body, dict):
        raise HTTPProblem("bad_request", "send a JSON object with model_uri and a holdout")
    return {
        "model_uri": str(body.get("model_uri", "")),
        "holdout": _holdout(body.get("holdout"), body.get("holdout_parquet")),
        "against": _text(body.get("against")) or "Production",
        "target": _text(body.get("target")),
        "protected": _text(body.get("protected")),
    }


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HTTPProblem("bad_request", "version must be an integer")
    return value


def _roles(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise HTTPProblem("bad_request", "roles must be a list of role names")
    return value


def _hours(value: Any) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 24 * 90:
        raise HTTPProblem("bad_request", "lifetime_hours must be a number of hours (at most 2160)")
    return timedelta(hours=value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _body(example: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if description:
        schema["description"] = description
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }
