"""One typed settings object, built once at start-up and passed down.

Nothing deeper in the package reads environment variables. Every setting is documented in
``docs/settings.md``.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ratekeeper.errors import InvalidInputError

MAX_INVOCATION_ROWS = 10_000
"""Rows in one ``POST /invocations`` request (MLflow has no cap). A 1 MB body holds about 7,000
policies as ``dataframe_records`` and 19,000 as ``dataframe_split``; 10,000 take 90-140 ms to
parse, price and record (12-26 ms without the ledger; benchmarks/bench_invocations.py, 2 cores)."""


@dataclass(frozen=True)
class Settings:
    home: Path
    """Folder of the embedded registry (``registry.db``) and its artifacts."""
    registry_uri: str | None = None
    """A SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``); ``None`` = embedded."""
    artifact_root: str | None = None
    """Artifact store: a folder or ``s3://bucket/prefix``; ``None`` = the one recorded in the
    registry, else ``home/artifacts``."""
    user: str = "unknown"
    """The declared actor: names who reads, and who writes in an open registry; never a
    credential (a governed registry's writes need ``token``)."""
    ledger_dir: Path | None = None
    """Quote ledger folder; ``None`` = ``ledger/`` beside an embedded registry, else under home."""
    token: str | None = None
    """The credential behind governed writes (a registry token ``rk_...`` or an SSO JWT)."""
    audit_key: str | None = field(default=None, repr=False)
    """The signing key (hex) that seals the audit head and ledger segments; a secret."""
    audit_key_file: Path | None = None
    """A file holding the signing key; ``None`` = ``audit.key`` beside an embedded registry."""
    oidc_issuer: str | None = None
    """Company single sign-on: the identity provider's issuer URL (``iss`` of its tokens)."""
    oidc_audience: str | None = None
    """The ``aud`` the provider's tokens must carry for ratekeeper."""
    oidc_jwks_url: str | None = None
    """Where the provider publishes its signing keys (JWKS)."""
    oidc_groups_claim: str = "groups"
    """The claim that lists a person's groups."""
    oidc_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Group → ratekeeper roles, from ``RATEKEEPER_OIDC_ROLES="pricing-team=modeller;..."``."""
    oidc_user_claim: str = "preferred_username"
    """The claim that names the person (falls back to ``sub``)."""
    max_invocation_rows: int = MAX_INVOCATION_ROWS
    """Most rows one ``POST /invocations`` request may hold (``serve --max-invocation-rows``)."""
    s3_endpoint_url: str | None = None
    """An S3-compatible store's endpoint (MinIO, Ceph...); ``None`` = AWS S3. Credentials are
    never settings: boto3 takes them from the environment or the instance."""
    s3_region: str | None = None
    """The S3 region (``None``: boto3's own, e.g. ``AWS_DEFAULT_REGION``)."""
    s3_max_attempts: int = 5
    """Requests per S3 operation, retried with exponential backoff (connection errors, 5xx)."""
    ledger_spool_max_bytes: int = 1 << 30
    """With the ledger on S3: local bytes awaiting upload beyond which ``/readyz`` is degraded."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        artifacts = env.get("RATEKEEPER_ARTIFACTS")
        return cls(
            home=Path(env.get("RATEKEEPER_HOME", ".ratekeeper")),
            registry_uri=env.get("RATEKEEPER_REGISTRY_URI") or None,
            artifact_root=artifacts or None,
            user=env.get("RATEKEEPER_USER") or _os_user(),
            ledger_dir=Path(env["RATEKEEPER_LEDGER"]) if env.get("RATEKEEPER_LEDGER") else None,
            token=env.get("RATEKEEPER_TOKEN") or None,
            audit_key=env.get("RATEKEEPER_AUDIT_KEY") or None,
            audit_key_file=_path(env.get("RATEKEEPER_AUDIT_KEY_FILE")),
            oidc_issuer=env.get("RATEKEEPER_OIDC_ISSUER") or None,
            oidc_audience=env.get("RATEKEEPER_OIDC_AUDIENCE") or None,
            oidc_jwks_url=env.get("RATEKEEPER_OIDC_JWKS_URL") or None,
            oidc_groups_claim=env.get("RATEKEEPER_OIDC_GROUPS_CLAIM") or "groups",
            oidc_roles=parse_role_map(env.get("RATEKEEPER_OIDC_ROLES", "")),
            oidc_user_claim=env.get("RATEKEEPER_OIDC_USER_CLAIM") or "preferred_username",
            max_invocation_rows=_int(env, "RATEKEEPER_MAX_INVOCATION_ROWS", MAX_INVOCATION_ROWS),
            # boto3 reads AWS_ENDPOINT_URL(_S3) too; read here so that one object says it all.
            s3_endpoint_url=env.get("RATEKEEPER_S3_ENDPOINT_URL")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or None,
            s3_region=env.get("RATEKEEPER_S3_REGION") or None,
            s3_max_attempts=_int(env, "RATEKEEPER_S3_MAX_ATTEMPTS", 5),
            ledger_spool_max_bytes=_int(env, "RATEKEEPER_LEDGER_SPOOL_MAX_BYTES", 1 << 30),
        )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        return f"uid:{os.getuid()}"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInputError(f"{name} must be a positive whole number")
    return value


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def parse_role_map(text: str) -> dict[str, tuple[str, ...]]:
    """``"pricing=modeller;chief-actuary=approver,viewer"`` → group → roles."""
    mapping: dict[str, tuple[str, ...]] = {}
    for item in text.split(";"):
        group, sep, roles = item.partition("=")
        if not sep or not group.strip():
            continue
        mapping[group.strip()] = tuple(r.strip() for r in roles.split(",") if r.strip())
    return mapping
