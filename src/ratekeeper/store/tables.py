"""The registry's tables (SQLAlchemy Core).

Governed facts are real columns with constraints; JSON text only for opaque payloads (signature,
reference profile, metrics, lineage). The migrations in ``migrations/versions`` create exactly
this schema; ``tests/test_migrations.py`` checks that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

STAGES = ("None", "Staging", "Production", "Archived")
GENESIS = "0" * 64  # the prev_hash of the first audit event


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stored as naive UTC (portable across SQLite and PostgreSQL), returned timezone-aware."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite returns text for raw SQL expressions
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

registry_state = sa.Table(
    "registry_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # Bumped in the same transaction as every stage or alias move: servers watch it (hot swap).
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("artifact_root", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # governed (four-eyes promotions) or open (a personal sandbox); chosen at creation.
    sa.Column("policy", sa.String(20), nullable=False, server_default="governed"),
    # The audit chain's head, kept with the counter so that a deleted tail is detected too.
    sa.Column("audit_head", sa.String(64), nullable=False, server_default=GENESIS),
    sa.Column("audit_count", sa.BigInteger, nullable=False, server_default="0"),
    # token (every governed write needs a credential) or os (the OS account: honest-user
    # governance for one person on a laptop); chosen at creation (migration 0003).
    sa.Column("identity", sa.String(10), nullable=False, server_default="token"),
    # The id of the key that seals the head (the key itself lives outside the database), and
    # the head's seal: HMAC of "head:count".
    sa.Column("audit_key_id", sa.String(16), nullable=True),
    sa.Column("audit_seal", sa.String(64), nullable=True),
    sa.CheckConstraint("id = 1", name="single_row"),
    sa.CheckConstraint("policy IN ('governed', 'open')", name="policy_known"),
    sa.CheckConstraint("identity IN ('token', 'os')", name="identity_known"),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("flavor", sa.String(40), nullable=False),
    sa.Column("artifact_digest", sa.String(64), nullable=False),
    sa.Column("artifact_size", sa.BigInteger, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("stage_changed_at", UTCDateTime, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("profile", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("lineage", sa.Text, nullable=False),
    sa.UniqueConstraint("model_id", "version"),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    sa.CheckConstraint(
        "stage IN ('None', 'Staging', 'Production', 'Archived')", name="stage_known"
    ),
    # At most one Production version per model, enforced by the database itself.
    sa.Index(
        "ux_model_versions_one_production",
        "model_id",
        unique=True,
        sqlite_where=sa.text("stage = 'Production'"),
        postgresql_where=sa.text("stage = 'Production'"),
    ),
)

version_tags = sa.Table(
    "version_tags",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("alias", sa.String(100), primary_key=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

stage_transitions = sa.Table(
    "stage_transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("from_stage", sa.String(20), nullable=False),
    sa.Column("to_stage", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("request_id", sa.Integer, nullable=True),  # the approved request, if any
    sa.Index("ix_stage_transitions_version_id", "version_id"),
)

# -- governance (migration 0002) ------------------------------------------------------------

ROLES = ("modeller", "approver", "deployer", "viewer", "admin")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

user_roles = sa.Table(
    "user_roles",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("role", sa.String(20), primary_key=True),
    sa.Column("granted_by", sa.String(200), nullable=True),  # NULL: granted before 0003
    sa.CheckConstraint(
        "role IN ('modeller', 'approver', 'deployer', 'viewer', 'admin')", name="role_known"
    ),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(12), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_by", sa.String(200), nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

promotion_requests = sa.Table(
    "promotion_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    # A request moves a version to a stage, or points a protected alias at it (one of the two).
    sa.Column("target_stage", sa.String(20), nullable=True),
    sa.Column("target_alias", sa.String(100), nullable=True),
    # The approval is bound to this exact artifact.
    sa.Column("artifact_digest", sa.String(64), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("gates_passed", sa.Boolean, nullable=False),
    sa.Column("report_digest", sa.String(64), nullable=True),
    sa.Column("champion_version", sa.Integer, nullable=True),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("decided_by", sa.String(200), nullable=True),
    sa.Column("decided_at", UTCDateTime, nullable=True),
    sa.Column("decision_comment", sa.Text, nullable=True),
    sa.Column("override", sa.Boolean, nullable=False),
    # A Production request may carry a rollout plan (JSON, migration 0004): the approver approves
    # the canary or staged release it describes, and the last step's promotion.
    sa.Column("rollout_plan", sa.Text, nullable=True),
    sa.CheckConstraint(
        "status IN ('pending', 'approved', 'rejected', 'superseded')", name="status_known"
    ),
    sa.CheckConstraint(
        "target_stage IN ('None', 'Staging', 'Production', 'Archived')", name="stage_known"
    ),
    sa.CheckConstraint("(target_stage IS NULL) <> (target_alias IS NULL)", name="one_target"),
    sa.Index("ix_promotion_requests_version_id", "version_id"),
)

# -- trust (migration 0003) ------------------------------------------------------------------

# One-time codes with which a new user obtains their own token (an admin never holds it).
enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("code_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("redeemed_at", UTCDateTime, nullable=True),
)

# Aliases that move only through an approved request (champion from the start).
protected_aliases = sa.Table(
    "protected_aliases",
    metadata,
    sa.Column("alias", sa.String(100), primary_key=True),
    sa.Column("protected_by", sa.String(200), nullable=False),
    sa.Column("protected_at", UTCDateTime, nullable=False),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("target", sa.Text, nullable=True),
    sa.Column("before", sa.Text, nullable=True),
    sa.Column("after", sa.Text, nullable=True),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Index("ix_audit_events_model", "model"),
)

# -- rollouts (migration 0004) ---------------------------------------------------------------

ROLLOUT_MODES = ("shadow", "canary", "staged")
ROLLOUT_STATUSES = ("active", "paused", "completed", "aborted", "rolled_back")

# A version released to a share of the quotes beside the Production version (rollouts/).
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    # The Production version when it started: the champion the challenger is compared with.
    sa.Column("champion_version", sa.Integer, nullable=True),
    sa.Column("mode", sa.String(10), nullable=False),
    # The challenger's share of quotes now (shadow: the share of quotes priced in the shadow).
    sa.Column("percent", sa.Float, nullable=False),
    # Staged: the traffic steps ("1,10,50,100"), the step now reached and each step's bake time.
    sa.Column("steps", sa.String(200), nullable=True),
    sa.Column("step_index", sa.Integer, nullable=False, server_default="0"),
    sa.Column("bake_seconds", sa.Float, nullable=True),
    # The policy field whose value decides the arm (NULL: the signature's id column, else a
    # hash of the rating factors).
    sa.Column("key", sa.String(200), nullable=True),
    sa.Column("guards", sa.Text, nullable=False),  # JSON: the limits (rollouts/plan.py)
    sa.Column("status", sa.String(12), nullable=False),
    # The approved promotion request that carried this plan (canary, staged; NULL for a shadow).
    sa.Column("request_id", sa.Integer, sa.ForeignKey("promotion_requests.id"), nullable=True),
    sa.Column("started_by", sa.String(200), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("step_started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.CheckConstraint("mode IN ('shadow', 'canary', 'staged')", name="mode_known"),
    sa.CheckConstraint(
        "status IN ('active', 'paused', 'completed', 'aborted', 'rolled_back')",
        name="status_known",
    ),
    sa.CheckConstraint("percent >= 0 AND percent <= 100", name="percent_range"),
    # At most one running (active or paused) rollout per model, enforced by the database.
    sa.Index(
        "ux_rollouts_one_running",
        "model_id",
        unique=True,
        sqlite_where=sa.text("status IN ('active', 'paused')"),
        postgresql_where=sa.text("status IN ('active', 'paused')"),
    ),
)

# What happened to a rollout: its moves (also audit events) and the guards' snapshots that each
# serving process writes every few seconds (telemetry: not audited).
rollout_events = sa.Table(
    "rollout_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(12), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("percent", sa.Float, nullable=False),
    sa.Column("detail", sa.Text, nullable=True),  # JSON
    sa.Index("ix_rollout_events_rollout_id", "rollout_id"),
)

# Whether a quote was taken up, posted by the policy system (POST /v1/quotes/{id}/outcome).
quote_outcomes = sa.Table(
    "quote_outcomes",
    metadata,
    sa.Column("quote_id", sa.String(40), primary_key=True),
    sa.Column("taken_up", sa.Boolean, nullable=False),
    sa.Column("written_premium", sa.Float, nullable=True),
    sa.Column("recorded_by", sa.String(200), nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
)
