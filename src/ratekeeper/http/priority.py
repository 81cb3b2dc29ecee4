"""The CPU priority of the server's background processes (drift watcher, promotion requests)."""

from __future__ import annotations

import os


def background_priority() -> None:
    """Let this process run only when the workers answering quotes do not need the CPU.

    On Linux, ``SCHED_IDLE``: a worker woken by a quote takes the core at once, where a process
    merely niced (``nice 10``) keeps it until the scheduler's next tick. Measured with
    ``benchmarks/bench_upload.py`` (a 40 MB holdout parsed and gated in the request process
    beside quotes at 1,000/s on 2 cores): see docs/benchmarks-serving.md. Elsewhere, nice 10.
    """
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:  # a container may forbid it: fall back to nice
            pass
    os.nice(10)
