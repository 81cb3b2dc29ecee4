"""The CPU priority of the server's background processes (drift watcher, promotion requests)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def background_priority(cpus: frozenset[int] | None = None) -> None:
    """Let this process run only when the workers answering quotes do not need the CPU, and
    end it with the process that started it; on ``cpus`` only, when given (Linux).

    On Linux, ``SCHED_IDLE``: a worker woken by a quote preempts it at once, where a process
    merely niced (``nice 10``) may keep the core until the scheduler's next tick. Elsewhere,
    nice 10.
    """
    _die_with_parent()
    if cpus and hasattr(os, "sched_setaffinity"):
        # Outside the container's cpuset: the server's cores, as by default.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:  # a container may forbid it: fall back to nice
            pass
    os.nice(10)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the one that started it exits.

    A promotion-request process reads its work from a queue whose write end it holds itself, so
    it never sees end-of-file: a worker killed (SIGKILL, a crash) left it running forever, an
    orphan holding the registry open (found with ``ps`` after benchmark runs).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name, use_errno=True)
    parent = os.getppid()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)
