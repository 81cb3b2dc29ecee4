"""The pricing routes on plain ASGI: ``POST /v1/models/{name}/quote`` and ``/score``.

A quote is the rating server's hot path, and FastAPI's per-request machinery (its middleware
stack, route matching over every route, dependency solving, a ``Request`` and a ``Response``
object) cost more CPU than the pricing itself: profiled under wrk, a 300-tree LightGBM quote
spent about a third of its worker's CPU in the handler and the rest in the framework and the
server. ``RatingApp`` therefore answers these two routes itself, before FastAPI sees the
request: it matches the path with two string tests, reads the body from ASGI ``receive``,
prices, and sends the answer in two ASGI messages. Everything else (other methods on these
paths, every other route, the OpenAPI document) goes through FastAPI as before; FastAPI still
declares both routes (``app.py``), and its endpoints call the same ``Pricing`` methods, so the
document, the error bodies and the behaviour are one.

An exception that is not a ``RatekeeperError`` gets the same answer as from the ``CatchAll``
middleware: 500, the one error body with a correlation id, the traceback in the server's log.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ratekeeper.engine.deployments import Deployments
from ratekeeper.engine.ids import new_quote_id
from ratekeeper.engine.ledger import QuoteLedger
from ratekeeper.engine.scorer import Scorer
from ratekeeper.errors import RatekeeperError
from ratekeeper.http import protocol
from ratekeeper.http.catchall import log_internal_error, send_internal_error
from ratekeeper.http.errors import NO_HEADERS, Answer, error_answer
from ratekeeper.http.metrics import Metrics
from ratekeeper.http.pinning import Pins
from ratekeeper.packaging.signature import problems_error
from ratekeeper.rollouts.routing import CHAMPION, RolloutEngine, Route

PREFIX, QUOTE, SCORE = "/v1/models/", "/quote", "/score"
PRODUCTION = "Production"
_JSON = (b"content-type", b"application/json")

Handler = Callable[[str, Scope, Receive], Awaitable[Answer]]


class Pricing:
    """Prices one policy (``quote``) or a list (``score``) from a request's scope and body."""

    def __init__(
        self,
        deployments: Deployments,
        pins: Pins,
        metrics: Metrics,
        ledger: QuoteLedger | None,
        *,
        max_body_bytes: int,
        max_policies: int,
        rollouts: RolloutEngine | None = None,
    ) -> None:
        self.deployments = deployments
        self.rollouts = rollouts
        self.pins = pins
        self.metrics = metrics
        self.ledger = ledger
        self.max_body_bytes = max_body_bytes
        self.max_policies = max_policies

    def route(self, scope: Scope) -> tuple[Handler, str] | None:
        """The handler and model name of a ``POST`` to a pricing route; None for anything else
        (FastAPI answers it: another method is a 405, an empty name a 404, as before)."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return None
        if path.endswith(QUOTE):
            name, handler = path[len(PREFIX) : -len(QUOTE)], self.quote
        elif path.endswith(SCORE):
            name, handler = path[len(PREFIX) : -len(SCORE)], self.score
        else:
            return None
        if not name or "/" in name:  # Starlette's {name}: one non-empty path segment
            return None
        return handler, name

    async def _scorer(self, name: str, scope: Scope, receive: Receive) -> tuple[Scorer, str]:
        query = scope["query_string"]
        if query:
            version, alias = protocol.pinned(QueryParams(query))
            if version is not None or alias is not None:
                return await self.pins.scorer(Request(scope, receive), name, version, alias)
        return self.deployments.scorer(name)  # the common case: no token, no await

    async def quote(self, name: str, scope: Scope, receive: Receive) -> Answer:
        started = time.perf_counter()
        label = "-"
        recorded = False
        try:
            scorer, served_by = await self._scorer(name, scope, receive)
            label = scorer.label
            body = await protocol.receive_body(scope, receive, self.max_body_bytes)
            policy = protocol.one_policy(protocol.parse_json(body))
            # A rollout routes the unpinned quotes only: a pin names what prices it.
            route = (
                self.rollouts.route(name)
                if self.rollouts is not None and served_by == PRODUCTION
                else None
            )
            if route is None:
                prediction = scorer.predict_one(policy)
                quote_id = new_quote_id()
                arm = CHAMPION if served_by == PRODUCTION else served_by
            else:
                assert self.rollouts is not None
                quote_id = new_quote_id()
                priced = self.rollouts.price(route, policy, quote_id, "quote")
                scorer, arm, prediction = priced.scorer, priced.arm, priced.price
                served_by, label, recorded = priced.served_by, scorer.label, priced.recorded
        except RatekeeperError as exc:
            self.metrics.observe("quote", name, label, exc.code, time.perf_counter() - started)
            return error_answer(exc)
        if self.ledger is not None and not recorded:
            self.ledger.record(
                quote_id, name, scorer.version, scorer.signature, "quote", served_by, policy,
                prediction, arm,
            )  # fmt: skip
        payload = orjson.dumps(
            {
                "quote_id": quote_id,
                "model": name,
                "version": scorer.version,
                "prediction": prediction,
                "served_by": served_by,
                "arm": arm,
            }
        )
        self.metrics.priced(name, label, 1)
        self.metrics.observe("quote", name, label, "ok", time.perf_counter() - started)
        return 200, payload, NO_HEADERS

    async def score(self, name: str, scope: Scope, receive: Receive) -> Answer:
        started = time.perf_counter()
        label = "-"
        try:
            scorer, served_by = await self._scorer(name, scope, receive)
            label = scorer.label
            body = await protocol.receive_body(scope, receive, self.max_body_bytes)
            policies = protocol.policy_list(protocol.parse_json(body), self.max_policies)
            route = (
                self.rollouts.route(name)
                if self.rollouts is not None and served_by == PRODUCTION
                else None
            )
            if route is not None:
                return self._score_routed(name, route, scorer, policies, started)
            priced = scorer.predict_each(policies)
        except RatekeeperError as exc:
            self.metrics.observe("score", name, label, exc.code, time.perf_counter() - started)
            return error_answer(exc)
        arm = CHAMPION if served_by == PRODUCTION else served_by
        results: list[dict[str, Any]] = []
        for policy, outcome in zip(policies, priced, strict=True):
            if isinstance(outcome, float):
                quote_id = new_quote_id()
                results.append({"quote_id": quote_id, "prediction": outcome})
                if self.ledger is not None:
                    self.ledger.record(
                        quote_id, name, scorer.version, scorer.signature, "score", served_by,
                        policy, outcome, arm,
                    )  # fmt: skip
            else:
                results.append({"error": problems_error(outcome).to_dict()})
        self.metrics.priced(name, label, len(policies))
        self.metrics.observe("score", name, label, "ok", time.perf_counter() - started)
        payload = orjson.dumps(
            {
                "model": name,
                "version": scorer.version,
                "served_by": served_by,
                "arm": arm,
                "results": results,
            }
        )
        return 200, payload, NO_HEADERS

    def _score_routed(
        self,
        name: str,
        route: Route,
        champion: Scorer,
        policies: list[Any],
        started: float,
    ) -> Answer:
        """A list priced during a rollout: each policy's arm by its own key (one at a time)."""
        assert self.rollouts is not None
        results: list[dict[str, Any]] = []
        for policy in policies:
            quote_id = new_quote_id()
            try:
                priced = self.rollouts.price(route, policy, quote_id, "score")
            except RatekeeperError as exc:
                results.append({"error": exc.to_dict()})
                continue
            scorer = priced.scorer
            results.append(
                {
                    "quote_id": quote_id,
                    "prediction": priced.price,
                    "arm": priced.arm,
                    "version": scorer.version,
                }
            )
            if self.ledger is not None and not priced.recorded:
                self.ledger.record(
                    quote_id, name, scorer.version, scorer.signature, "score",
                    priced.served_by, policy, priced.price, priced.arm,
                )  # fmt: skip
        self.metrics.priced(name, champion.label, len(policies))
        self.metrics.observe("score", name, champion.label, "ok", time.perf_counter() - started)
        payload = orjson.dumps(
            {
                "model": name,
                "version": champion.version,
                "served_by": PRODUCTION,
                "arm": "rollout",
                "results": results,
            }
        )
        return 200, payload, NO_HEADERS


class RatingApp(FastAPI):
    """FastAPI, with the pricing routes answered before its request machinery (see above)."""

    pricing: Pricing | None = None
    posts: dict[str, Callable[[Request], Awaitable[Response]]] = {}  # noqa: RUF012 (replaced)
    """More routes answered the same way: exact path → endpoint of its POST (/invocations)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            endpoint = self.posts.get(scope["path"])
            if endpoint is not None:
                try:
                    response = await endpoint(Request(scope, receive))
                except ClientDisconnect:
                    return
                except Exception:
                    await send_internal_error(send, log_internal_error(scope))
                    return
                await response(scope, receive, send)
                return
        if scope["type"] == "http" and self.pricing is not None:
            found = self.pricing.route(scope)
            if found is not None:
                handler, name = found
                try:
                    status, body, headers = await handler(name, scope, receive)
                except ClientDisconnect:
                    return  # nobody to answer
                except Exception:  # the CatchAll middleware's answer, on this path too
                    await send_internal_error(send, log_internal_error(scope))
                    return
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-length", str(len(body)).encode()),
                            _JSON,
                            *headers,
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await super().__call__(scope, receive, send)
