"""The rating engine's HTTP app: quotes, batch scores, MLflow invocations, registry views."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ratekeeper.engine.deployments import Deployments, LoadFailure
from ratekeeper.engine.ledger import LedgerConfig, QuoteLedger
from ratekeeper.engine.pinned import CACHE_SIZE, COLD_LOADS_PER_MINUTE, PinnedVersions
from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import InvalidInputError, NotFoundError, Problem, RatekeeperError
from ratekeeper.http import protocol, schemas
from ratekeeper.http.access import require
from ratekeeper.http.catchall import CatchAll
from ratekeeper.http.errors import (
    HTTPProblem,
    answer_response,
    error_response,
    handle_ratekeeper_error,
    json_response,
)
from ratekeeper.http.governance_routes import TokenAuth, add_governance_routes
from ratekeeper.http.invocations import add_invocations_routes
from ratekeeper.http.metrics import Metrics
from ratekeeper.http.pinning import Pins
from ratekeeper.http.pricing import Pricing, RatingApp
from ratekeeper.http.rollout_routes import add_rollout_routes
from ratekeeper.registry.registry import Registry
from ratekeeper.rollouts.routing import RolloutEngine
from ratekeeper.settings import MAX_INVOCATION_ROWS

if TYPE_CHECKING:  # the watcher runs in its own process; a worker never imports it
    from ratekeeper.engine.drift_watcher import DriftWatchConfig

log = logging.getLogger("ratekeeper.http")


@dataclass(frozen=True)
class AppConfig:
    models: list[str] | None = None
    """Serve only these models (default: every model with a Production version)."""
    invocations_model: str | None = None
    """The model behind ``POST /invocations`` (MLflow protocol): ``NAME`` or ``NAME@alias``;
    ``None``: the one model served (404 when there are several)."""
    poll_interval: float = 0.2
    """Seconds between two reads of the registry's generation counter (hot swap)."""
    max_body_bytes: int = 1_000_000
    max_policies: int = 1000
    max_invocation_rows: int = MAX_INVOCATION_ROWS
    """Most rows in one ``POST /invocations`` request (then 413)."""
    max_holdout_bytes: int = 50_000_000
    request_cpus: frozenset[int] | None = None
    """The cores the promotion-request process may run on (default: the server's own)."""
    pinned_cache: int = CACHE_SIZE
    """Scorers of pinned versions (``?version=N``) kept per worker, least recently used out."""
    pinned_loads_per_minute: int = COLD_LOADS_PER_MINUTE
    """Loads of uncached pinned versions one client may start per minute (then 429)."""
    multiprocess_metrics: bool = False
    freeze_after_load: bool = False
    """``gc.freeze()`` after loading models (the server does; see http/server.py)."""
    ledger: LedgerConfig | None = None
    """Record every price in the quote ledger (``None``: no ledger)."""
    drift: DriftWatchConfig | None = None
    """Watch the ledger's drift: ``ratekeeper serve`` runs the watcher in a process of its own."""


def create_app(registry: Registry, config: AppConfig | None = None) -> RatingApp:
    config = config or AppConfig()
    metrics = Metrics(multiprocess=config.multiprocess_metrics)

    def swapped(name: str, slot: str, version: int) -> None:
        metrics.swaps.labels(name, slot).inc()
        metrics.served_version.labels(name, slot).set(version)
        if config.freeze_after_load:
            gc.freeze()  # the new model lives as long as the slot: out of the full GC passes

    def failed(failure: LoadFailure) -> None:
        metrics.load_failures.labels(failure.name, str(failure.version)).inc()

    ledger = QuoteLedger(config.ledger, metrics.ledger_event) if config.ledger else None

    def shadow_record(
        quote_id: str,
        endpoint: str,
        champion: Scorer,
        policy: Mapping[str, Any],
        price: float,
        challenger: Scorer,
        other: float | None,
    ) -> None:  # a shadow's row: the champion's price, the challenger's beside it
        assert ledger is not None
        ledger.record(
            quote_id, champion.name, champion.version, champion.signature, endpoint,
            "Production", policy, price, "champion", challenger.version, other,
        )  # fmt: skip

    rollouts = RolloutEngine(registry, on_shadow=shadow_record if ledger is not None else None)
    deployments = Deployments(
        registry,
        config.models,
        on_swap=swapped,
        on_failure=failed,
        on_refresh=lambda d: rollouts.update(d.served_table(), d.rollouts),
        on_tick=rollouts.tick,
    )
    auth = TokenAuth(registry)
    pinned = PinnedVersions(
        lambda name, version: registry.load_model(f"models:/{name}/{version}"),
        size=config.pinned_cache,
        per_minute=config.pinned_loads_per_minute,
    )
    pins = Pins(deployments, pinned, auth)
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The server normally calls load_models() before it listens; if that failed (or was not
        # done), load in the background while /readyz says 503. Then follow the registry.
        if not deployments.ready:
            threading.Thread(target=load_models, name="ratekeeper-load", daemon=True).start()
        watcher = deployments.watch(config.poll_interval, stop)
        metrics.start(asyncio.get_running_loop())
        if ledger is not None:
            ledger.start()  # here, in the serving process: its thread must not cross a fork
        yield
        stop.set()
        watcher.join(timeout=10)  # a refresh in flight returns its database connection first
        rollouts.close()  # prices what is queued in the shadow before the ledger closes
        pinned.close()
        metrics.close()
        app.state.requests_process.close()
        if ledger is not None:
            ledger.close()

    def load_models() -> bool:
        # Any exception: a worker that raised here would exit, be restarted and raise again (a
        # crash loop that answers nothing). Not ready yet, the watcher retries every poll.
        try:
            deployments.refresh(force=True)
        except RatekeeperError as exc:
            log.error("cannot load the models: %s", exc.message)
            return False
        except Exception:
            log.exception("cannot load the models")
            return False
        return True

    pricing = Pricing(
        deployments,
        pins,
        metrics,
        ledger,
        max_body_bytes=config.max_body_bytes,
        max_policies=config.max_policies,
        rollouts=rollouts,
    )
    app = RatingApp(
        title="ratekeeper rating engine",
        version="1",
        description="Real-time quotes from the registry's Production versions, with hot swap.",
        lifespan=lifespan,
    )
    app.pricing = pricing
    app.state.deployments = deployments
    app.state.load_models = load_models
    app.state.metrics = metrics
    app.state.ledger = ledger
    app.state.pinned = pinned
    app.state.rollouts = rollouts
    app.add_exception_handler(RatekeeperError, handle_ratekeeper_error)
    app.add_middleware(CatchAll)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        problems = [
            Problem(".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "invalid", e["msg"])
            for e in exc.errors()
        ]
        return error_response(InvalidInputError("the request's parameters are invalid", problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        response = error_response(HTTPProblem(code, str(exc.detail)))
        response.status_code = exc.status_code
        return response

    # -- pricing ----------------------------------------------------------------------------
    # RatingApp answers POST /quote and /score itself, before FastAPI's request machinery
    # (http/pricing.py). These declarations keep them in the OpenAPI document (path and query
    # parameters in schemas.PINNING) and answer whatever RatingApp leaves to FastAPI (a
    # root_path), through the same Pricing methods.
    @app.post(
        "/v1/models/{name}/quote",
        response_model=schemas.QuoteResponse,
        responses=schemas.PRICING_ERRORS,
        openapi_extra=schemas.POLICY_BODY | schemas.PINNING,
        tags=["pricing"],
        summary="Price one policy",
    )
    async def quote(request: Request) -> Response:
        name = request.path_params["name"]
        return answer_response(await pricing.quote(name, request.scope, request.receive))

    @app.post(
        "/v1/models/{name}/score",
        response_model=schemas.ScoreResponse,
        responses=schemas.PRICING_ERRORS,
        openapi_extra=schemas.POLICIES_BODY | schemas.PINNING,
        tags=["pricing"],
        summary="Price a list of policies: one result or one error per policy, in order",
    )
    async def score(request: Request) -> Response:
        name = request.path_params["name"]
        return answer_response(await pricing.score(name, request.scope, request.receive))

    add_invocations_routes(app, config)
    add_governance_routes(app, registry, auth, config.max_holdout_bytes, config.request_cpus)
    add_rollout_routes(app, auth, rollouts, config.ledger.root if config.ledger else None)

    # -- registry views ---------------------------------------------------------------------
    # They show user names, lineage, library versions and reference profiles: a token that may
    # read the registry, like the governance routes.
    @app.get(
        "/v1/models",
        tags=["registry"],
        responses=schemas.AUTH_ERRORS,
        summary="Registered models and what this server serves (token with read)",
    )
    def list_models(request: Request) -> Response:
        require(auth, request, "read")
        served = deployments.served_versions()
        return json_response(
            {
                "models": [
                    {
                        "name": m.name,
                        "latest_version": m.latest_version,
                        "production_version": m.production_version,
                        "aliases": m.aliases,
                        "created_by": m.created_by,
                        "created_at": m.created_at.isoformat(),
                        "served": served.get(m.name),
                    }
                    for m in registry.list_models()
                ]
            }
        )

    @app.get(
        "/v1/models/{name}",
        tags=["registry"],
        responses=schemas.AUTH_ERRORS,
        summary="One model: its versions, stages and aliases (token with read)",
    )
    def get_model(request: Request, name: str) -> Response:
        require(auth, request, "read")
        model = registry.get_model(name)
        return json_response(
            {
                "name": model.name,
                "latest_version": model.latest_version,
                "production_version": model.production_version,
                "aliases": model.aliases,
                "versions": [
                    {
                        "version": v.version,
                        "stage": v.stage.value,
                        "aliases": list(v.aliases),
                        "flavor": v.flavor,
                        "metrics": v.metrics,
                        "created_by": v.created_by,
                        "created_at": v.created_at.isoformat(),
                    }
                    for v in registry.list_versions(name)
                ],
            }
        )

    @app.get(
        "/v1/models/{name}/versions/{version}",
        tags=["registry"],
        responses=schemas.AUTH_ERRORS,
        summary="One version: signature, metrics, lineage, reference profile (token with read)",
    )
    def get_version(request: Request, name: str, version: int) -> Response:
        require(auth, request, "read")
        if not 1 <= version <= protocol.MAX_ID:  # SQLite's integers stop at 2^63 - 1
            raise NotFoundError(f"model {name!r} has no version {version}")
        return json_response(registry.get_version(name, version).to_dict())

    # -- operations -------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={503: {"model": schemas.ErrorBody}},
        summary="Ready once the models are loaded; lists load failures",
    )
    async def readyz() -> Response:
        status = deployments.status()
        if not status["ready"]:
            return json_response(
                {"error": {"code": "unavailable", "message": "loading models"}}, 503
            )
        spool = ledger.spool if ledger is not None else None  # the ledger on object storage
        if spool is not None:
            status["ledger_spool"] = spool.to_dict()
        degraded = status["load_failures"] or (spool is not None and spool.full)
        status["status"] = "degraded" if degraded else "ok"
        status["worker"] = os.getpid()  # which worker process answered
        return json_response(status)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app
