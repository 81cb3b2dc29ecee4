"""Promotion requests and checks in a process of their own, beside the rating worker.

A request's holdout arrives as up to 50 MB of JSON (or base64 Parquet), and the gates then score
it with both versions: seconds of CPU, most of it holding the GIL (``orjson.loads`` of 40 MB holds
it for the whole parse). In a thread of the worker that answers quotes, every quote waits for
the GIL meanwhile. So the worker hands the body to one child process (started on the first
request, then kept), which parses it, opens the registry once and runs ``request_promotion`` (or
``check_promotion``) as the user the worker authenticated; the worker's event loop only awaits
the answer.

The body never exists whole in the worker. A large one (a declared length of 256 KiB or more,
over plain HTTP) is not even read by it: the child reads it from the connection itself
(``http/handoff.py``). A small, chunked or TLS body is spooled, chunk by chunk as it arrives, to
a private file (0600, in a 0700 folder of the worker's own), and only the file's path crosses
to the child. Measured with ``benchmarks/bench_upload.py``: joining a 40 MB body and pickling it
into the child's pipe held the worker's GIL for 56–105 ms per upload, and the quote p99 at
1,000 quotes/s went from 5 ms to 60–96 ms.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from starlette.requests import Request

from ratekeeper.errors import RatekeeperError
from ratekeeper.governance.identity import User
from ratekeeper.http.errors import HTTPProblem
from ratekeeper.http.handoff import HandedBody, offered, read_handed_body
from ratekeeper.http.priority import background_priority
from ratekeeper.registry.registry import Registry
from ratekeeper.registry.transport import error_from_dict
from ratekeeper.settings import Settings
from ratekeeper.validation.policy import GatePolicy

_OPENED: dict[str, Registry] = {}  # in the child: the registry, opened on its first request

_ChildWork = Callable[[Registry, Any], dict[str, Any]]
"""What the child does with the parsed body, as the acting user (a top-level function: it is
pickled into the child by name)."""


class RequestProcess:
    """Runs promotion requests in one child process (spawned, so no thread crosses a fork)."""

    def __init__(self, registry: Registry, cpus: frozenset[int] | None = None) -> None:
        self._where = (registry.url, registry.settings, registry.blobs.location)
        self._cpus = cpus
        self._gate_policy = registry.gate_policy
        self._pool: ProcessPoolExecutor | None = None
        self._spool: Path | None = None

    async def request_promotion(self, user: User, request: Request, limit: int) -> dict[str, Any]:
        """The new request as its JSON shape; the child's refusal raised here, typed."""
        return await self._run(_request, user, request, limit)

    async def check_promotion(self, user: User, request: Request, limit: int) -> dict[str, Any]:
        """The gate report of a check (``GateReport.to_dict``); nothing is filed or stored."""
        return await self._run(_check, user, request, limit)

    async def _run(
        self, work: _ChildWork, user: User, request: Request, limit: int
    ) -> dict[str, Any]:
        refuse_oversized(request, limit)
        offer = offered(request.scope)
        handed = offer.take() if offer is not None else None
        body: HandedBody | str
        if handed is not None:  # read by the child, straight from the socket (handoff.py)
            body = handed
        else:
            if self._spool is None:
                self._spool = Path(tempfile.mkdtemp(prefix="ratekeeper-requests-"))  # 0700
            body = str(await spool_body(request, limit, self._spool))
        try:
            if self._pool is None:
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=context,
                    initializer=background_priority,
                    initargs=(self._cpus,),
                )
            pool = self._pool
            future = pool.submit(_in_child, *self._where, self._gate_policy, user, body, work)
            outcome: dict[str, Any] = await asyncio.wrap_future(future)
        except BrokenProcessPool:  # the child was killed (out of memory, a signal)
            pool.shutdown(wait=False, cancel_futures=True)
            if self._pool is pool:
                self._pool = None  # the next request starts a new one
            raise HTTPProblem(
                "unavailable",
                "the promotion-request process stopped while working on this request: "
                "send it again",
            ) from None
        finally:
            if isinstance(body, HandedBody):
                body.connection.close()  # the worker's duplicate; the child had its own
            else:
                Path(body).unlink(missing_ok=True)
        if "http_problem" in outcome:  # malformed JSON: 400 here as on every route
            raise HTTPProblem(outcome["http_problem"]["code"], outcome["http_problem"]["message"])
        if "error" in outcome:
            raise error_from_dict(outcome["error"], HTTPProblem)  # HTTP-only codes stay
        result: dict[str, Any] = outcome["result"]
        return result

    @property
    def running(self) -> bool:
        """Whether the child process was started (on the first request that got that far)."""
        return self._pool is not None

    @property
    def spool(self) -> Path | None:
        """The private folder of bodies in transit (created on the first request)."""
        return self._spool

    def close(self) -> None:
        if self._pool is not None:
            # Waiting (the requests have ended by now) lets the pool release its queues; without
            # it, every stopped worker logged "leaked semaphore objects".
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None


def refuse_oversized(request: Request, limit: int) -> None:
    """413 before a byte of the body is read, when its declared length is beyond ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem("payload_too_large", f"the request body exceeds {limit:,} bytes")


async def spool_body(request: Request, limit: int, folder: Path) -> Path:
    """The request's body written to a new 0600 file in ``folder``, as it arrives.

    Never more than ``limit`` bytes (413) and not empty (400); the file is gone when refused.
    A write of one received chunk (64 KB or so) to the page cache takes microseconds, so the
    writes stay on the event loop.
    """
    refuse_oversized(request, limit)
    descriptor, name = tempfile.mkstemp(dir=folder, suffix=".body")  # 0600, a new name
    path = Path(name)
    size = 0
    try:
        with os.fdopen(descriptor, "wb") as spooled:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPProblem(
                        "payload_too_large", f"the request body exceeds {limit:,} bytes"
                    )
                spooled.write(chunk)
        if size == 0:
            raise HTTPProblem("malformed_json", "the request body is empty: send a JSON document")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


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


def _in_child(
    url: str,
    settings: Settings,
    artifacts: str,
    gates: GatePolicy,
    user: User,
    body: HandedBody | str,
    call: _ChildWork,
) -> dict[str, Any]:
    """In the child: read and parse the body (from the socket handed over, or the spooled
    file's path), then ``call(actor, body)``, as ``user``."""
    from ratekeeper.http.protocol import parse_json

    try:
        raw = read_handed_body(body) if isinstance(body, HandedBody) else Path(body).read_bytes()
        actor = _acting(url, settings, artifacts, gates, user)
        return {"result": call(actor, parse_json(raw))}
    except HTTPProblem as problem:
        return {"http_problem": problem.to_dict()}
    except RatekeeperError as refused:
        return {"error": refused.to_dict()}


def _request(actor: Registry, body: Any) -> dict[str, Any]:
    """In the child: ``request_promotion`` on behalf of the actor."""
    from ratekeeper.governance import wire
    from ratekeeper.http.governance_routes import promotion_arguments

    return wire.request_to_dict(actor.request_promotion(**promotion_arguments(body)))


def _check(actor: Registry, body: Any) -> dict[str, Any]:
    """In the child: ``check_promotion`` on behalf of the actor (nothing is filed)."""
    from ratekeeper.http.governance_routes import check_arguments

    return actor.check_promotion(**check_arguments(body)).to_dict()
