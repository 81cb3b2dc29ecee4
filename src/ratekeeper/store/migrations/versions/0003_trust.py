"""Trust: enrollment codes, who granted each role, protected aliases, alias requests, the sealed
audit head, and four-eyes enforced by the database itself.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The database refuses, in a governed registry, whatever SQL would otherwise slip past the API:
# - an approval of a Production (or protected-alias) request by nobody, by "policy", by its
#   requester or by the version's creator;
# - a request inserted already decided;
# - a version moved into Production without an approved Production request for it (a rollback to
#   a version approved before stays possible: the kill switch must keep working);
# - a protected alias pointed at a version without an approved request for that alias.
# The SQL of each condition is written once and used by both dialects.
GOVERNED = "(SELECT policy FROM registry_state WHERE id = 1) = 'governed'"
SELF_APPROVAL = f"""NEW.status = 'approved' AND {GOVERNED}
    AND (NEW.target_stage = 'Production' OR NEW.target_alias IS NOT NULL)
    AND (NEW.decided_by IS NULL OR NEW.decided_by = 'policy'
         OR NEW.decided_by = NEW.requested_by
         OR NEW.decided_by = (SELECT created_by FROM model_versions WHERE id = NEW.version_id))"""
DECIDED_AT_BIRTH = "NEW.status <> 'pending'"
UNAPPROVED_PRODUCTION = f"""NEW.stage = 'Production' AND OLD.stage <> 'Production' AND {GOVERNED}
    AND NOT EXISTS (SELECT 1 FROM promotion_requests r WHERE r.version_id = NEW.id
                    AND r.target_stage = 'Production' AND r.status = 'approved')"""
UNAPPROVED_ALIAS = f"""{GOVERNED}
    AND EXISTS (SELECT 1 FROM protected_aliases p WHERE p.alias = NEW.alias)
    AND NOT EXISTS (SELECT 1 FROM promotion_requests r WHERE r.version_id = NEW.version_id
                    AND r.target_alias = NEW.alias AND r.status = 'approved')"""

TRIGGERS = {
    # name: (table, timing/event, condition, message)
    "requests_four_eyes": (
        "promotion_requests",
        "UPDATE",
        SELF_APPROVAL,
        "four-eyes: this approval is refused by the database",
    ),
    "requests_born_pending": (
        "promotion_requests",
        "INSERT",
        DECIDED_AT_BIRTH,
        "a promotion request starts pending",
    ),
    "production_needs_approval": (
        "model_versions",
        "UPDATE",
        UNAPPROVED_PRODUCTION,
        "Production needs an approved promotion request",
    ),
    "protected_alias_insert": (
        "aliases",
        "INSERT",
        UNAPPROVED_ALIAS,
        "a protected alias moves only through an approved request",
    ),
    "protected_alias_update": (
        "aliases",
        "UPDATE",
        UNAPPROVED_ALIAS,
        "a protected alias moves only through an approved request",
    ),
}


def upgrade() -> None:
    with op.batch_alter_table("registry_state") as batch:
        batch.add_column(
            sa.Column("identity", sa.String(10), nullable=False, server_default="token")
        )
        batch.add_column(sa.Column("audit_key_id", sa.String(16), nullable=True))
        batch.add_column(sa.Column("audit_seal", sa.String(64), nullable=True))
        batch.create_check_constraint(
            "ck_registry_state_identity_known", "identity IN ('token', 'os')"
        )
    with op.batch_alter_table("user_roles") as batch:
        batch.add_column(sa.Column("granted_by", sa.String(200), nullable=True))
    with op.batch_alter_table("promotion_requests") as batch:
        batch.add_column(sa.Column("target_alias", sa.String(100), nullable=True))
        batch.alter_column("target_stage", existing_type=sa.String(20), nullable=True)
        batch.create_check_constraint(
            "ck_promotion_requests_one_target",
            "(target_stage IS NULL) <> (target_alias IS NULL)",
        )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("redeemed_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_enrollments"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_enrollments_user_id_users"),
        sa.UniqueConstraint("code_sha256", name="uq_enrollments_code_sha256"),
    )
    protected = op.create_table(
        "protected_aliases",
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("protected_by", sa.String(200), nullable=False),
        sa.Column("protected_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("alias", name="pk_protected_aliases"),
    )
    op.bulk_insert(
        protected,
        [
            {
                "alias": "champion",
                "protected_by": "ratekeeper",
                "protected_at": datetime.now(UTC).replace(tzinfo=None),
            }
        ],
    )
    _create_triggers()


def _create_triggers() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    for name, (table, event, condition, message) in TRIGGERS.items():
        if postgres:
            # A trigger's WHEN cannot hold a subquery on PostgreSQL: the test is a function's.
            op.execute(f"""CREATE FUNCTION ratekeeper_{name}() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    IF {condition} THEN
                        RAISE EXCEPTION '{message}'
                            USING ERRCODE = 'integrity_constraint_violation';
                    END IF;
                    RETURN NEW;
                END $$""")
            op.execute(f"""CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW
                EXECUTE FUNCTION ratekeeper_{name}()""")
        else:
            op.execute(f"""CREATE TRIGGER {name} BEFORE {event} ON {table}
                WHEN {condition}
                BEGIN SELECT RAISE(ABORT, '{message}'); END""")


def downgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    for name, (table, *_rest) in TRIGGERS.items():
        if postgres:
            op.execute(f"DROP TRIGGER {name} ON {table}")
            op.execute(f"DROP FUNCTION ratekeeper_{name}")
        else:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("protected_aliases")
    op.drop_table("enrollments")
    with op.batch_alter_table("promotion_requests") as batch:
        batch.drop_constraint("ck_promotion_requests_one_target", type_="check")
        batch.alter_column("target_stage", existing_type=sa.String(20), nullable=False)
        batch.drop_column("target_alias")
    with op.batch_alter_table("user_roles") as batch:
        batch.drop_column("granted_by")
    with op.batch_alter_table("registry_state") as batch:
        batch.drop_constraint("ck_registry_state_identity_known", type_="check")
        batch.drop_column("audit_seal")
        batch.drop_column("audit_key_id")
        batch.drop_column("identity")
