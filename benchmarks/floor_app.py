"""The HTTP floor: a constant-response quote endpoint on ratekeeper's own server stack.

Two floors, under uvicorn (httptools, uvloop), one process per worker, each with its own
``SO_REUSEPORT`` listening socket from ``ratekeeper.http.server.listening_socket`` (so
``TCP_NODELAY`` is on, as in ``ratekeeper serve``):

- ``--kind starlette`` (the floor): a bare Starlette app with one route, the endpoint a user
  would write first;
- ``--kind fastapi``: the same route in FastAPI (a second reference: FastAPI's request
  machinery costs a large part of a request by itself).

The quote route reads the body and answers a fixed JSON document of the same shape as a real
quote: whatever a real quote costs above this is the price of validation, scoring and
bookkeeping. Benchmark-only; started by bench_serve.py::

    python benchmarks/floor_app.py --port 8100 --workers 2 [--kind fastapi]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import signal
import sys
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = (
    b'{"quote_id":"01JDFLOOR0000000000000000","model":"frequency","version":1,'
    b'"prediction":0.1234567890123,"served_by":"Production"}'
)


def create_starlette_app() -> Starlette:
    async def quote(request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json")

    async def readyz(_request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[
        Route("/v1/models/{name}/quote", quote, methods=["POST"]),
        Route("/readyz", readyz),
    ])


def create_fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI(title="HTTP floor")

    @app.post("/v1/models/{name}/quote")
    async def quote(name: str, request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def run_worker(host: str, port: int, kind: str) -> None:
    import uvicorn

    from ratekeeper.http.server import listening_socket

    sock = listening_socket(host, port)
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    config = uvicorn.Config(
        create_starlette_app() if kind == "starlette" else create_fastapi_app(),
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop" if has_uvloop else "asyncio",
    )
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--kind", choices=("starlette", "fastapi"), default="starlette")
    args = parser.parse_args(argv)
    if args.workers <= 1:
        run_worker(args.host, args.port, args.kind)
        return
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=run_worker, args=(args.host, args.port, args.kind))
        for _ in range(args.workers)
    ]
    try:
        for process in workers:
            process.start()
        while not stopping and all(p.is_alive() for p in workers):
            time.sleep(0.2)
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
        for process in workers:
            process.join(timeout=10)
    sys.exit(0 if stopping else 1)


if __name__ == "__main__":
    main()
