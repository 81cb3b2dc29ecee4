"""An open-loop HTTP load generator: requests leave on a fixed timetable, whatever the server does.

wrk and locust are closed-loop: a connection sends its next request only after the previous
answer, so when the server stalls the generator politely stops sending, and the stall is
counted once instead of once per request that should have been sent meanwhile ("coordinated
omission"). Here request ``i`` is due at ``start + i / rate``; a pool of keep-alive HTTP/1.1
connections (one request in flight each) takes due requests in order, and every latency is
measured from the request's *scheduled* time to the end of its response. A request that waits
because every connection is busy is therefore charged its wait, as a real caller would be.

Bounded in requests and time: exactly ``rate * duration`` requests are scheduled, each gets at
most ``timeout`` seconds from its scheduled time (past that it counts as an error, unsent if it
never left), and the run ends at ``duration + timeout`` at the latest. Percentiles count every
failed request as infinitely slow, so a run with 2 % errors has no finite p99.

    python benchmarks/openloop.py http://127.0.0.1:8000/v1/models/frequency/quote \\
        --bodies policies.jsonl --rate 1000 --duration 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import sys
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class OpenLoopResult:
    rate: float
    duration: float
    scheduled: int
    ok: int
    errors: dict[str, int]
    latency_ms: dict[str, float | None]
    """p50, p90, p99, p99.9, max over all measured requests; None = beyond the timeout."""
    achieved_per_s: float
    dispatch_lag_ms: dict[str, float]
    """How late the generator itself put requests on the queue (its own health)."""
    generator_cpu: float
    """CPU seconds of this process per second of run (1.0 = one core)."""
    connections_opened: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> int:
        """Send one request, read one whole response; the HTTP status."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            await self.reader.readexactly(int(lower[at + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if b"\r\nconnection: close" in lower:
            self.close()
        return status


def _request(url: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.inf
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def run(
    url: str,
    bodies: list[bytes],
    *,
    rate: float,
    duration: float,
    connections: int = 64,
    timeout: float = 2.0,
    warmup: float = 1.0,
    keep: list[float] | None = None,
) -> OpenLoopResult:
    """``keep``: extended with every measured latency in seconds, ascending (inf = failed)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [_request(url, body) for body in bodies]
    n_warm = int(rate * warmup)
    n_total = n_warm + int(rate * duration)
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lags: list[float] = []
    opened = 0

    pool = [_Connection(host, port) for _ in range(connections)]
    results = await asyncio.gather(*(c.open() for c in pool), return_exceptions=True)
    opened = sum(1 for r in results if not isinstance(r, BaseException))
    if opened == 0:
        raise ConnectionError(f"cannot connect to {host}:{port}")

    def record(i: int, latency: float | None, error: str | None) -> None:
        if i < n_warm:
            return
        if error is None and latency is not None:
            latencies.append(latency)
        else:
            errors[error or "error"] += 1

    async def worker(conn: _Connection) -> None:
        nonlocal opened
        while True:
            item = await queue.get()
            if item is None:
                return
            i, due = item
            left = due + timeout - clock()
            if left <= 0:
                record(i, None, "timeout (never sent)")
                continue
            try:
                if conn.writer is None:
                    opened += 1
                status = await asyncio.wait_for(
                    conn.exchange(requests[i % len(requests)]), timeout=left
                )
            except TimeoutError:
                conn.close()  # a late answer must not be read as the next one's
                record(i, None, "timeout")
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                record(i, None, f"connection ({type(exc).__name__})")
                continue
            done = clock()
            record(i, done - due, None if 200 <= status < 300 else f"HTTP {status}")

    tasks = [asyncio.create_task(worker(c)) for c in pool]
    cpu0 = time.process_time()
    start = clock() + 0.05
    i = 0
    while i < n_total:
        now = clock()
        while i < n_total and start + i / rate <= now:
            due = start + i / rate
            if i >= n_warm:
                lags.append(now - due)
            queue.put_nowait((i, due))
            i += 1
        if i < n_total:
            await asyncio.sleep(max(0.0, start + i / rate - clock()))
    last_due = start + (n_total - 1) / rate
    for _ in tasks:
        queue.put_nowait(None)
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, last_due + timeout + 0.5 - clock()))
    for task in pending:
        task.cancel()
    while not queue.empty():
        item = queue.get_nowait()
        if item is not None:
            record(item[0], None, "timeout (never sent)")
    in_flight = (n_total - n_warm) - len(latencies) - sum(errors.values())
    if in_flight > 0:
        errors["timeout"] += in_flight
    cpu = time.process_time() - cpu0
    for conn in pool:
        conn.close()
    measured = n_total - n_warm
    ordered = sorted(latencies) + [math.inf] * sum(errors.values())
    if keep is not None:
        keep.extend(ordered)
    return OpenLoopResult(
        rate=rate,
        duration=duration,
        scheduled=measured,
        ok=len(latencies),
        errors=dict(errors),
        latency_ms={
            name: _ms(percentile(ordered, p))
            for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))
        }
        | {"max": _ms(ordered[-1] if ordered else math.inf)},
        achieved_per_s=len(latencies) / duration,
        dispatch_lag_ms={
            "p99": 1e3 * percentile(sorted(lags), 99),
            "max": 1e3 * max(lags, default=0.0),
        },
        generator_cpu=cpu / (warmup + duration),
        connections_opened=opened,
    )


def _ms(seconds: float) -> float | None:
    return None if math.isinf(seconds) else round(seconds * 1e3, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Open-loop HTTP POST load at a fixed rate.")
    parser.add_argument("url")
    parser.add_argument("--bodies", type=Path, required=True, help="JSON lines, used in turn")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--latencies", type=Path, help="also write every latency (float64 seconds, raw binary)"
    )
    args = parser.parse_args(argv)
    bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line.strip()]
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run  # type: ignore[assignment]
    kept: list[float] = []
    gc.disable()  # a collector pause here would be charged to the server
    result = run_loop(
        run(
            args.url,
            bodies,
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            timeout=args.timeout,
            warmup=args.warmup,
            keep=kept,
        )
    )
    if args.latencies is not None:
        with args.latencies.open("wb") as out:
            array("d", kept).tofile(out)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"offered {result.rate:g}/s for {result.duration:g} s: {result.ok:,} ok, "
            f"{result.error_count:,} errors {result.errors}; latency ms {result.latency_ms}; "
            f"generator lag ms {result.dispatch_lag_ms}, cpu {result.generator_cpu:.2f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
