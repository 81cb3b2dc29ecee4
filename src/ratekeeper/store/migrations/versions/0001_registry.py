"""The registry core: models, versions, tags, aliases, stage transitions.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("artifact_root", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_registry_state_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_registry_state"),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("flavor", sa.String(40), nullable=False),
        sa.Column("artifact_digest", sa.String(64), nullable=False),
        sa.Column("artifact_size", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("stage_changed_at", sa.DateTime, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("profile", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("lineage", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_model_versions_model_id_models"
        ),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        sa.CheckConstraint("version >= 1", name="ck_model_versions_version_positive"),
        sa.CheckConstraint(
            "stage IN ('None', 'Staging', 'Production', 'Archived')",
            name="ck_model_versions_stage_known",
        ),
    )
    op.create_index(
        "ux_model_versions_one_production",
        "model_versions",
        ["model_id"],
        unique=True,
        sqlite_where=sa.text("stage = 'Production'"),
        postgresql_where=sa.text("stage = 'Production'"),
    )
    op.create_table(
        "version_tags",
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("version_id", "key", name="pk_version_tags"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_versions.id"], name="fk_version_tags_version_id_model_versions"
        ),
    )
    op.create_table(
        "aliases",
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_aliases"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_aliases_model_id_models"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_versions.id"], name="fk_aliases_version_id_model_versions"
        ),
    )
    op.create_table(
        "stage_transitions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("from_stage", sa.String(20), nullable=False),
        sa.Column("to_stage", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stage_transitions"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_stage_transitions_version_id_model_versions",
        ),
    )
    op.create_index("ix_stage_transitions_version_id", "stage_transitions", ["version_id"])


def downgrade() -> None:
    op.drop_index("ix_stage_transitions_version_id", "stage_transitions")
    op.drop_table("stage_transitions")
    op.drop_table("aliases")
    op.drop_table("version_tags")
    op.drop_index("ux_model_versions_one_production", "model_versions")
    op.drop_table("model_versions")
    op.drop_table("models")
    op.drop_table("registry_state")
