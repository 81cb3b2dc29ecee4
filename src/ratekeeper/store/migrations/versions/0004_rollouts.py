"""Rollouts: the rollouts and their events, quote outcomes, a rollout plan on promotion requests,
and the champion alias allowed to follow the Production version.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

GOVERNED = "(SELECT policy FROM registry_state WHERE id = 1) = 'governed'"
MESSAGE = "a protected alias moves only through an approved request"
# 0003's rule, less one case: the registry keeps `champion` on the Production version (every
# promotion, rollback and completed rollout points it there), which needs no request of its own.
FOLLOWS_PRODUCTION = """NEW.alias = 'champion' AND
    (SELECT stage FROM model_versions WHERE id = NEW.version_id) = 'Production'"""
UNAPPROVED_ALIAS = f"""{GOVERNED}
    AND EXISTS (SELECT 1 FROM protected_aliases p WHERE p.alias = NEW.alias)
    AND NOT EXISTS (SELECT 1 FROM promotion_requests r WHERE r.version_id = NEW.version_id
                    AND r.target_alias = NEW.alias AND r.status = 'approved')"""
ALIAS_TRIGGERS = {"protected_alias_insert": "INSERT", "protected_alias_update": "UPDATE"}


def upgrade() -> None:
    op.add_column("promotion_requests", sa.Column("rollout_plan", sa.Text, nullable=True))
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("champion_version", sa.Integer, nullable=True),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("steps", sa.String(200), nullable=True),
        sa.Column("step_index", sa.Integer, nullable=False, server_default="0"),
        sa.Column("bake_seconds", sa.Float, nullable=True),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("guards", sa.Text, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("request_id", sa.Integer, nullable=True),
        sa.Column("started_by", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("step_started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_rollouts_model_id_models"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_versions.id"], name="fk_rollouts_version_id_model_versions"
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["promotion_requests.id"],
            name="fk_rollouts_request_id_promotion_requests",
        ),
        sa.CheckConstraint("mode IN ('shadow', 'canary', 'staged')", name="ck_rollouts_mode_known"),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'completed', 'aborted', 'rolled_back')",
            name="ck_rollouts_status_known",
        ),
        sa.CheckConstraint("percent >= 0 AND percent <= 100", name="ck_rollouts_percent_range"),
    )
    op.create_index(
        "ux_rollouts_one_running",
        "rollouts",
        ["model_id"],
        unique=True,
        sqlite_where=sa.text("status IN ('active', 'paused')"),
        postgresql_where=sa.text("status IN ('active', 'paused')"),
    )
    op.create_table(
        "rollout_events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("rollout_id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rollout_events"),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.id"], name="fk_rollout_events_rollout_id_rollouts"
        ),
    )
    op.create_index("ix_rollout_events_rollout_id", "rollout_events", ["rollout_id"])
    op.create_table(
        "quote_outcomes",
        sa.Column("quote_id", sa.String(40), nullable=False),
        sa.Column("taken_up", sa.Boolean, nullable=False),
        sa.Column("written_premium", sa.Float, nullable=True),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("quote_id", name="pk_quote_outcomes"),
    )
    _replace_alias_triggers(f"{UNAPPROVED_ALIAS} AND NOT ({FOLLOWS_PRODUCTION})")


def _replace_alias_triggers(condition: str) -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    for name, event in ALIAS_TRIGGERS.items():
        if postgres:  # the function holds the test (0003); replacing it keeps the trigger
            op.execute(f"""CREATE OR REPLACE FUNCTION ratekeeper_{name}() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    IF {condition} THEN
                        RAISE EXCEPTION '{MESSAGE}'
                            USING ERRCODE = 'integrity_constraint_violation';
                    END IF;
                    RETURN NEW;
                END $$""")
        else:
            op.execute(f"DROP TRIGGER {name}")
            op.execute(f"""CREATE TRIGGER {name} BEFORE {event} ON aliases
                WHEN {condition}
                BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""")


def downgrade() -> None:
    _replace_alias_triggers(UNAPPROVED_ALIAS)
    op.drop_table("quote_outcomes")
    op.drop_index("ix_rollout_events_rollout_id", "rollout_events")
    op.drop_table("rollout_events")
    op.drop_index("ux_rollouts_one_running", "rollouts")
    op.drop_table("rollouts")
    op.drop_column("promotion_requests", "rollout_plan")
