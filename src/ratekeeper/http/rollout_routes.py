"""Rollouts over HTTP: their state and comparison (a token that may read), their moves for the
remote registry client (the registry's own permissions decide), and quote outcomes.

``POST /v1/quotes/{quote_id}/outcome`` is the policy system's: a token whose user holds the
``outcome`` permission (deployer or admin). The quote id is checked for form, and reconciled
with the ledger when the comparison is built (an outcome never waits on a ledger read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from ratekeeper.errors import InvalidInputError, NotFoundError
from ratekeeper.http.access import require as require_role
from ratekeeper.http.auth import AUTH_ERRORS, TokenAuth, off_loop, read_object, require
from ratekeeper.http.errors import HTTPProblem, json_response
from ratekeeper.http.protocol import MAX_ID
from ratekeeper.rollouts import report
from ratekeeper.rollouts.routing import RolloutEngine

PREFIX = "/v1/registry"
START_FIELDS = ("version", "mode", "percent", "steps", "bake", "key", "guards", "comment")


def add_rollout_routes(
    app: FastAPI, auth: TokenAuth, engine: RolloutEngine | None, ledger_root: Path | None
) -> None:
    @app.get(
        "/v1/models/{name}/rollout",
        tags=["rollouts"],
        responses=AUTH_ERRORS,
        summary="A model's running (else last) rollout, and how this worker serves it",
    )
    def get_rollout(request: Request, name: str) -> Response:
        actor = auth.acting(request)
        require(actor, "read")
        rollout = actor.get_rollout(name)
        if rollout is None:
            raise NotFoundError(f"model {name!r} has had no rollout")
        served = engine.status().get(name) if engine is not None else None
        return json_response({"rollout": rollout.to_dict(), "served_here": served})

    @app.get(
        "/v1/models/{name}/rollout/report",
        tags=["rollouts"],
        responses=AUTH_ERRORS,
        summary="The champion/challenger comparison of the model's rollout (JSON)",
    )
    async def rollout_report(request: Request, name: str) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        await off_loop(lambda: require(actor, "read"))
        data = await off_loop(lambda: report.comparison(actor, name, ledger_root))
        return json_response(data)

    @app.post(
        "/v1/quotes/{quote_id}/outcome",
        tags=["rollouts"],
        responses=AUTH_ERRORS,
        status_code=201,
        summary="Record whether a quote was taken up, and its written premium (token: outcome)",
    )
    async def outcome(request: Request, quote_id: str) -> Response:
        # The role is checked whatever the registry's policy (like the read doors, access.py):
        # a rating server is reachable by more people than the registry's own users.
        await off_loop(lambda: require_role(auth, request, "outcome"))
        actor = await off_loop(lambda: auth.acting(request))
        body = await read_object(request)
        _only(body, ("taken_up", "written_premium"))
        taken_up = body.get("taken_up")
        if not isinstance(taken_up, bool):
            raise InvalidInputError("taken_up must be true or false")
        premium = body.get("written_premium")
        recorded = await off_loop(
            lambda: actor.record_outcome(quote_id, taken_up=taken_up, written_premium=premium)
        )
        return json_response(recorded, 201)

    _add_moves(app, auth)


def _add_moves(app: FastAPI, auth: TokenAuth) -> None:
    @app.get(
        f"{PREFIX}/models/{{name}}/rollout",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="The model's running (else last) rollout, or null",
    )
    def get(request: Request, name: str) -> Response:
        found = auth.acting(request).get_rollout(name)
        return json_response({"rollout": found.to_dict() if found is not None else None})

    @app.get(
        f"{PREFIX}/models/{{name}}/rollout/events",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="The moves and guard snapshots of the model's last rollout",
    )
    def events(request: Request, name: str) -> Response:
        return json_response({"events": auth.acting(request).rollout_events(name)})

    @app.post(
        f"{PREFIX}/models/{{name}}/rollout",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        status_code=201,
        summary="Start a rollout (shadow: deployer; canary, staged: an approved request's plan)",
    )
    async def start(request: Request, name: str) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        body = await read_object(request)
        _only(body, START_FIELDS)
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_ID:
            raise HTTPProblem("bad_request", "version must be a version number")
        options = {k: body.get(k) for k in START_FIELDS if k not in ("version", "mode")}
        started = await off_loop(
            lambda: actor.start_rollout(name, version, mode=str(body.get("mode")), **options)
        )
        return json_response(started.to_dict(), 201)

    for move in ("pause", "resume", "abort", "complete"):
        _add_move(app, auth, move)


def _add_move(app: FastAPI, auth: TokenAuth, move: str) -> None:
    async def handler(request: Request, name: str) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        body = await read_object(request)
        text = body.get("reason" if move == "abort" else "comment")
        text = None if text is None else str(text)
        if move == "abort":
            moved = await off_loop(lambda: actor.abort_rollout(name, reason=text or ""))
        else:
            method = getattr(actor, f"{move}_rollout")
            moved = await off_loop(lambda: method(name, comment=text))
        return json_response(moved.to_dict())

    app.add_api_route(
        f"{PREFIX}/models/{{name}}/rollout/{move}",
        handler,
        methods=["POST"],
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary=f"{move.capitalize()} the model's rollout",
        name=f"rollout_{move}",
    )


def _only(body: dict[str, Any], fields: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InvalidInputError(f"unknown field(s): {', '.join(unknown)[:200]}")
