"""Metrics across worker processes: prometheus_client's multiprocess folder.

This module imports nothing of prometheus_client: the folder must be set before that library is
first imported, because it picks its storage at import time.
"""

from __future__ import annotations

import os
import sys
import tempfile


def prepare_multiprocess_metrics() -> str:
    """Point prometheus_client at a shared folder (made here unless already set)."""
    if "prometheus_client" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
        prefix="ratekeeper-metrics-"
    )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder
