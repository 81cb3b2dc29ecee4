"""CPU accounting for the serving benchmark, read from /proc (Linux)."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def machine_busy() -> float:
    """CPU seconds used on the whole machine so far, all cores, from /proc/stat. Niced time
    is left out: a nice-19 process (a background pip install) yields to the benchmark."""
    with open("/proc/stat") as f:
        user, _nice, system, _idle, _iowait, irq, softirq, steal = (
            int(v) for v in f.readline().split()[1:9])
    return (user + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this script's finished children (wrk, the open-loop generator)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def idle_check(seconds: float = 2.0) -> float:
    """Share of the machine's CPU used by other processes over ``seconds``."""
    before = machine_busy()
    time.sleep(seconds)
    return (machine_busy() - before) / seconds / (os.cpu_count() or 1)
