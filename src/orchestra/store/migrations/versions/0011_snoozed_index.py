"""an index on checkpoints' snooze times

- ``ix_checkpoints_status_snoozed_until``: the inbox's Snoozed count and its next wake-up
  read only the snoozed rows (a few), not every pending one (100,000 at volume).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            "ix_checkpoints_status_snoozed_until", ["status", "snoozed_until"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index("ix_checkpoints_status_snoozed_until")
