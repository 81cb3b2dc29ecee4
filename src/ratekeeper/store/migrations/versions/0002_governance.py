"""Governance: users and roles, tokens, promotion requests, the audit chain, immutability triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS = "0" * 64

# Columns of a version that never change after registration (only the stage moves).
IMMUTABLE_VERSION_COLUMNS = (
    "model_id",
    "version",
    "flavor",
    "artifact_digest",
    "artifact_size",
    "description",
    "created_by",
    "created_at",
    "signature",
    "profile",
    "metrics",
    "lineage",
)


def upgrade() -> None:
    with op.batch_alter_table("registry_state") as batch:
        batch.add_column(
            sa.Column("policy", sa.String(20), nullable=False, server_default="governed")
        )
        batch.add_column(
            sa.Column("audit_head", sa.String(64), nullable=False, server_default=GENESIS)
        )
        batch.add_column(
            sa.Column("audit_count", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.create_check_constraint(
            "ck_registry_state_policy_known", "policy IN ('governed', 'open')"
        )
    # A registry made before governance existed keeps working as it did: open.
    op.execute("UPDATE registry_state SET policy = 'open'")
    with op.batch_alter_table("stage_transitions") as batch:
        batch.add_column(sa.Column("request_id", sa.Integer, nullable=True))
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "role", name="pk_user_roles"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_user_roles_user_id_users"),
        sa.CheckConstraint(
            "role IN ('modeller', 'approver', 'deployer', 'viewer', 'admin')",
            name="ck_user_roles_role_known",
        ),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(12), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_tokens_user_id_users"),
        sa.UniqueConstraint("token_sha256", name="uq_tokens_token_sha256"),
    )
    op.create_table(
        "promotion_requests",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("target_stage", sa.String(20), nullable=False),
        sa.Column("artifact_digest", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("gates_passed", sa.Boolean, nullable=False),
        sa.Column("report_digest", sa.String(64), nullable=True),
        sa.Column("champion_version", sa.Integer, nullable=True),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", sa.DateTime, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime, nullable=True),
        sa.Column("decision_comment", sa.Text, nullable=True),
        sa.Column("override", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_promotion_requests"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_promotion_requests_version_id_model_versions",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'superseded')",
            name="ck_promotion_requests_status_known",
        ),
        sa.CheckConstraint(
            "target_stage IN ('None', 'Staging', 'Production', 'Archived')",
            name="ck_promotion_requests_stage_known",
        ),
    )
    op.create_index("ix_promotion_requests_version_id", "promotion_requests", ["version_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("before", sa.Text, nullable=True),
        sa.Column("after", sa.Text, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sa.UniqueConstraint("hash", name="uq_audit_events_hash"),
    )
    op.create_index("ix_audit_events_model", "audit_events", ["model"])
    _create_triggers()


def _create_triggers() -> None:
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in IMMUTABLE_VERSION_COLUMNS)
    if op.get_context().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION ratekeeper_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
            END $$""")
        op.execute("""CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE
            ON audit_events FOR EACH ROW
            EXECUTE FUNCTION ratekeeper_refuse('audit events are append-only')""")
        op.execute(f"""CREATE TRIGGER model_versions_immutable BEFORE UPDATE ON model_versions
            FOR EACH ROW WHEN ({changed})
            EXECUTE FUNCTION ratekeeper_refuse('model versions are immutable')""")
        op.execute("""CREATE TRIGGER model_versions_kept BEFORE DELETE ON model_versions
            FOR EACH ROW EXECUTE FUNCTION ratekeeper_refuse('model versions are never deleted')""")
        return
    changed = changed.replace("IS DISTINCT FROM", "IS NOT")  # SQLite spelling
    op.execute("""CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""")
    op.execute("""CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""")
    op.execute(f"""CREATE TRIGGER model_versions_immutable BEFORE UPDATE ON model_versions
        WHEN {changed}
        BEGIN SELECT RAISE(ABORT, 'model versions are immutable'); END""")
    op.execute("""CREATE TRIGGER model_versions_kept BEFORE DELETE ON model_versions
        BEGIN SELECT RAISE(ABORT, 'model versions are never deleted'); END""")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER model_versions_kept ON model_versions")
        op.execute("DROP TRIGGER model_versions_immutable ON model_versions")
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION ratekeeper_refuse")
    else:
        for name in (
            "model_versions_kept",
            "model_versions_immutable",
            "audit_events_no_delete",
            "audit_events_no_update",
        ):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_index("ix_audit_events_model", "audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_promotion_requests_version_id", "promotion_requests")
    op.drop_table("promotion_requests")
    op.drop_table("tokens")
    op.drop_table("user_roles")
    op.drop_table("users")
    with op.batch_alter_table("stage_transitions") as batch:
        batch.drop_column("request_id")
    with op.batch_alter_table("registry_state") as batch:
        batch.drop_constraint("ck_registry_state_policy_known", type_="check")
        batch.drop_column("audit_count")
        batch.drop_column("audit_head")
        batch.drop_column("policy")
