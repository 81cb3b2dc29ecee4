"""The promotion workflow and the audit trail over HTTP, with bearer tokens and the same roles.

401 without a valid token, 403 for a role that may not act, 409 for a stale or decided request.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Query, Request
from starlette.responses import HTMLResponse, Response

from ratekeeper.governance.identity import User
from ratekeeper.http import protocol, schemas
from ratekeeper.http.errors import HTTPProblem, json_response
from ratekeeper.registry.registry import Registry

TOKEN_CACHE_SECONDS = 10.0
"""A revoked token stops working within this many seconds on every worker."""

AUTH_ERRORS = {
    **schemas.ERRORS,
    401: {"model": schemas.ErrorBody, "description": "no valid bearer token"},
    403: {"model": schemas.ErrorBody, "description": "the token's user may not do this"},
    409: {"model": schemas.ErrorBody, "description": "the request is stale or already decided"},
}


class TokenAuth:
    """Bearer tokens → users, cached briefly so the check costs a dict lookup."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: dict[str, tuple[float, User | None]] = {}

    def user(self, request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPProblem(
                "unauthenticated", "send a bearer token: Authorization: Bearer rk_..."
            )
        token = token.strip()
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is None or cached[0] < now:
            cached = (now + TOKEN_CACHE_SECONDS, self.registry.authenticate(token))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = cached
        if cached[1] is None:
            raise HTTPProblem("unauthenticated", "the bearer token is unknown or revoked")
        return cached[1]

    def acting(self, request: Request) -> Registry:
        return self.registry.on_behalf_of(self.user(request))


def add_governance_routes(
    app: FastAPI, registry: Registry, auth: TokenAuth, max_holdout_bytes: int
) -> None:
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
            }
        ),
    )
    async def create_request(request: Request) -> Response:
        actor = auth.acting(request)
        body = await protocol.read_json(request, max_holdout_bytes)
        if not isinstance(body, dict):
            raise HTTPProblem("bad_request", "send a JSON object with model, version and stage")
        holdout = _holdout(body.get("holdout"))
        created = actor.request_promotion(
            str(body.get("model", "")),
            _int(body.get("version")),
            str(body.get("stage", "")),
            holdout=holdout,
            comment=_text(body.get("comment")),
            target=_text(body.get("target")),
            protected=_text(body.get("protected")),
        )
        return json_response(created.to_dict(), 201)

    @app.get(
        "/v1/requests",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Promotion requests, optionally by model and status",
    )
    def list_requests(
        request: Request, model: str | None = Query(None), status: str | None = Query(None)
    ) -> Response:
        auth.user(request)
        found = registry.list_requests(model, status=status)
        return json_response({"requests": [r.to_dict() for r in found]})

    @app.get(
        "/v1/requests/{request_id}",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="One promotion request",
    )
    def get_request(request: Request, request_id: int) -> Response:
        auth.user(request)
        return json_response(registry.get_request(request_id).to_dict())

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

        auth.user(request)
        return HTMLResponse(render_html(registry.request_report(request_id)))

    @app.post(
        "/v1/requests/{request_id}/approve",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Approve (four-eyes); the version moves at once",
        openapi_extra=_body({"comment": "signed off", "override": False}),
    )
    async def approve(request: Request, request_id: int) -> Response:
        actor = auth.acting(request)
        body = await _optional_body(request)
        decided = actor.approve(
            request_id, comment=_text(body.get("comment")), override=body.get("override") is True
        )
        return json_response(decided.to_dict())

    @app.post(
        "/v1/requests/{request_id}/reject",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Reject a pending request",
        openapi_extra=_body({"comment": "why"}),
    )
    async def reject(request: Request, request_id: int) -> Response:
        actor = auth.acting(request)
        body = await _optional_body(request)
        return json_response(actor.reject(request_id, comment=_text(body.get("comment"))).to_dict())

    @app.get(
        "/v1/audit",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="The audit trail, optionally for one model",
    )
    def audit_log(
        request: Request,
        model: str | None = Query(None),
        limit: int = Query(1000, ge=1, le=100_000),
    ) -> Response:
        auth.user(request)
        return json_response(
            {
                "events": [
                    {
                        "id": e.id,
                        "at": e.at.isoformat(),
                        "actor": e.actor,
                        "action": e.action,
                        "model": e.model,
                        "version": e.version,
                        "target": e.target,
                        "before": e.before,
                        "after": e.after,
                        "comment": e.comment,
                        "hash": e.hash,
                    }
                    for e in registry.audit_log(model, limit=limit)
                ]
            }
        )

    @app.get(
        "/v1/audit/verify",
        tags=["governance"],
        responses=AUTH_ERRORS,
        summary="Recompute the audit hash chain",
    )
    def audit_verify(request: Request) -> Response:
        auth.user(request)
        result = registry.verify_audit()
        return json_response(
            {
                "ok": result.ok,
                "checked": result.checked,
                "first_bad_id": result.first_bad_id,
                "reason": result.reason,
            }
        )


async def _optional_body(request: Request) -> dict[str, Any]:
    if not (await request.body()).strip():
        return {}
    body = await protocol.read_json(request, 100_000)
    if not isinstance(body, dict):
        raise HTTPProblem("bad_request", "send a JSON object")
    return body


def _holdout(rows: Any) -> Any:
    if rows is None:
        return None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise HTTPProblem("bad_request", "holdout must be a list of policy objects")
    import pandas as pd

    return pd.DataFrame.from_records(rows)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HTTPProblem("bad_request", "version must be an integer")
    return value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _body(example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        }
    }
