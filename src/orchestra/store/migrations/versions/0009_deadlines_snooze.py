"""checkpoints get a due time with its policy (deadlines) and a snooze; the events
and the notification kind that record them; each notification's delivery attempts;
signed single-use links to a decision page

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen: the values of this day (see 0001).
EVENT_TYPES_BEFORE = (
    "'workflow_created', 'workflow_status_changed', 'checkpoint_status_changed', "
    "'agent_run_status_changed', 'step_started', 'checkpoint_created', 'agent_run_started', "
    "'agent_progress'"
)
EVENT_TYPES = EVENT_TYPES_BEFORE + ", 'checkpoint_snoozed', 'checkpoint_deadline_passed'"
KINDS_BEFORE = "'checkpoint_pending', 'workflow_failed', 'workflow_completed', 'workflow_cancelled'"
KINDS = KINDS_BEFORE + ", 'checkpoint_overdue'"


def _replace_check(table: str, column: str, values: str) -> None:
    name = f"ck_{table}_{column}_valid"
    with op.batch_alter_table(table, schema=None, recreate="auto") as batch_op:
        batch_op.drop_constraint(op.f(name), type_="check")
        batch_op.create_check_constraint(f"{column}_valid", sa.text(f"{column} IN ({values})"))


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column(
                "deadline",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column("deadline_fired_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("snoozed_by", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_checkpoints_status_due_at", ["status", "due_at"], unique=False)
    _replace_check("events", "type", EVENT_TYPES)
    _replace_check("notifications", "kind", KINDS)
    op.create_table(
        "notification_attempts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("notification_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_attempts_notification_id_notifications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_attempts")),
        sa.UniqueConstraint(
            "notification_id",
            "attempt",
            name=op.f("uq_notification_attempts_notification_id_attempt"),
        ),
    )
    op.create_table(
        "decision_links",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_decision_links_checkpoint_id_checkpoints"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_links")),
    )
    op.create_index("ix_decision_links_checkpoint_id", "decision_links", ["checkpoint_id"])


def downgrade() -> None:
    op.drop_index("ix_decision_links_checkpoint_id", table_name="decision_links")
    op.drop_table("decision_links")
    op.drop_table("notification_attempts")
    op.execute(
        "DELETE FROM events WHERE type IN ('checkpoint_snoozed', 'checkpoint_deadline_passed')"
    )
    op.execute("DELETE FROM notifications WHERE kind = 'checkpoint_overdue'")
    _replace_check("notifications", "kind", KINDS_BEFORE)
    _replace_check("events", "type", EVENT_TYPES_BEFORE)
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index("ix_checkpoints_status_due_at")
        batch_op.drop_column("snoozed_by")
        batch_op.drop_column("snoozed_until")
        batch_op.drop_column("deadline_fired_at")
        batch_op.drop_column("deadline")
        batch_op.drop_column("due_at")
