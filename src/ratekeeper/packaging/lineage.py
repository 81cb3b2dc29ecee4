"""Lineage captured at registration: what data and code made a version."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBRARIES = (
    "ratekeeper",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "lightgbm",
    "xgboost",
    "xgboost-cpu",
    "onnx",
    "onnxruntime",
    "skl2onnx",
    "onnxmltools",
    "glum",
)


def data_fingerprint(frame: Any) -> dict[str, Any]:
    """Rows, columns with dtypes, and a content hash of the training frame (order-sensitive)."""
    import pandas as pd

    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(row_hashes.tobytes())
    digest.update("|".join(f"{c}:{t}" for c, t in frame.dtypes.items()).encode())
    return {
        "rows": len(frame),
        "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
        "content_sha256": digest.hexdigest(),
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_state(directory: Path | None = None) -> dict[str, Any] | None:
    """The commit of the caller's working directory, and whether it had uncommitted changes."""
    cwd = str(directory or Path.cwd())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
