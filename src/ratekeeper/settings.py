"""One typed settings object, built once at start-up and passed down.

Nothing deeper in the package reads environment variables. Every setting is documented in
``docs/settings.md``.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    """Folder of the embedded registry (``registry.db``) and its artifacts."""
    registry_uri: str | None = None
    """A SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``); ``None`` = embedded."""
    artifact_root: Path | None = None
    """Artifact folder; ``None`` = the one recorded in the registry, else ``home/artifacts``."""
    user: str = "unknown"
    """The actor recorded on every write."""
    ledger_dir: Path | None = None
    """Quote ledger folder; ``None`` = ``ledger/`` beside an embedded registry, else under home."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        artifacts = env.get("RATEKEEPER_ARTIFACTS")
        return cls(
            home=Path(env.get("RATEKEEPER_HOME", ".ratekeeper")),
            registry_uri=env.get("RATEKEEPER_REGISTRY_URI") or None,
            artifact_root=Path(artifacts) if artifacts else None,
            user=env.get("RATEKEEPER_USER") or _os_user(),
            ledger_dir=Path(env["RATEKEEPER_LEDGER"]) if env.get("RATEKEEPER_LEDGER") else None,
        )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        return f"uid:{os.getuid()}"
