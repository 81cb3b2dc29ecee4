"""Promotion requests and checks in a process of their own, beside the rating worker.

A request's holdout arrives as up to 50 MB of JSON (or base64 Parquet), and the gates then score
it with both versions: seconds of CPU, most of it holding the GIL (``orjson.loads`` of 40 MB holds
it for the whole parse). In a thread of the worker that answers quotes, every quote waits for
the GIL meanwhile. So the worker hands the raw body to one child process (started on the first
request, then kept), which parses it, opens the registry once and runs ``request_promotion`` (or
``check_promotion``) as the user the worker authenticated; the worker's event loop only awaits
the answer.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ratekeeper.errors import RatekeeperError
from ratekeeper.governance.identity import User
from ratekeeper.http.errors import HTTPProblem
from ratekeeper.registry.registry import Registry
from ratekeeper.registry.transport import error_from_dict
from ratekeeper.settings import Settings
from ratekeeper.validation.policy import GatePolicy

_ChildWork = Callable[[str, Settings, str, GatePolicy, User, bytes], dict[str, Any]]
_OPENED: dict[str, Registry] = {}  # in the child: the registry, opened on its first request


class RequestProcess:
    """Runs promotion requests in one child process (spawned, so no thread crosses a fork)."""

    def __init__(self, registry: Registry) -> None:
        self._where = (registry.url, registry.settings, str(registry.blobs.root))
        self._gate_policy = registry.gate_policy
        self._pool: ProcessPoolExecutor | None = None

    async def request_promotion(self, user: User, body: bytes) -> dict[str, Any]:
        """The new request as its JSON shape; the child's refusal raised here, typed."""
        return await self._run(_request, user, body)

    async def check_promotion(self, user: User, body: bytes) -> dict[str, Any]:
        """The gate report of a check (``GateReport.to_dict``); nothing is filed or stored."""
        return await self._run(_check, user, body)

    async def _run(self, work: _ChildWork, user: User, body: bytes) -> dict[str, Any]:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=context, initializer=_lower_priority
            )
        future = self._pool.submit(work, *self._where, self._gate_policy, user, body)
        outcome: dict[str, Any] = await asyncio.wrap_future(future)
        if "error" in outcome:
            raise error_from_dict(outcome["error"], HTTPProblem)  # HTTP-only codes stay
        result: dict[str, Any] = outcome["result"]
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _lower_priority() -> None:
    """The child yields the CPU to the workers answering quotes (as the drift watcher does)."""
    os.nice(10)


def _acting(
    url: str, settings: Settings, artifacts: str, gates: GatePolicy, user: User
) -> Registry:
    """In the child: the registry (opened on the first call, then kept), acting as ``user``."""
    registry = _OPENED.get(url)
    if registry is None:
        registry = _OPENED[url] = Registry(url, artifacts=artifacts, settings=settings)
    actor = registry.on_behalf_of(user)
    actor.gate_policy = gates
    return actor


def _request(
    url: str, settings: Settings, artifacts: str, gates: GatePolicy, user: User, body: bytes
) -> dict[str, Any]:
    """In the child: parse the body, then ``request_promotion`` on behalf of ``user``."""
    from ratekeeper.governance import wire
    from ratekeeper.http.governance_routes import promotion_arguments
    from ratekeeper.http.protocol import parse_json

    try:
        actor = _acting(url, settings, artifacts, gates, user)
        arguments = promotion_arguments(parse_json(body))
        return {"result": wire.request_to_dict(actor.request_promotion(**arguments))}
    except RatekeeperError as refused:
        return {"error": refused.to_dict()}


def _check(
    url: str, settings: Settings, artifacts: str, gates: GatePolicy, user: User, body: bytes
) -> dict[str, Any]:
    """In the child: parse the body, then ``check_promotion`` on behalf of ``user``."""
    from ratekeeper.http.governance_routes import check_arguments
    from ratekeeper.http.protocol import parse_json

    try:
        actor = _acting(url, settings, artifacts, gates, user)
        return {"result": actor.check_promotion(**check_arguments(parse_json(body))).to_dict()}
    except RatekeeperError as refused:
        return {"error": refused.to_dict()}
