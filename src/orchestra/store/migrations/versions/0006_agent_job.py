"""an agent's part in a workflow is its ``job`` (a person's permission is a ``role``)

``agent_runs.role`` → ``agent_runs.job``.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_runs", schema=None) as batch_op:
        batch_op.alter_column("role", new_column_name="job")


def downgrade() -> None:
    with op.batch_alter_table("agent_runs", schema=None) as batch_op:
        batch_op.alter_column("job", new_column_name="role")
