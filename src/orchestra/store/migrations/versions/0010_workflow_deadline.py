"""a workflow's deadline policy in its own column

- ``workflows.deadline``: what the person starting it asked for, merged with the
  operator's ``[deadlines.<step>]`` tables (was the ``deadline`` key inside
  ``agents``, which holds the operator's agent choice); moved across.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline", _JSON, nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "UPDATE workflows SET deadline = json_extract(agents, '$.deadline'), "
            "agents = json_remove(agents, '$.deadline') "
            "WHERE json_type(agents, '$.deadline') IS NOT NULL"
        )
    else:  # a JSON null under the key (SQLite's json_extract gives NULL too): no policy
        op.execute(
            "UPDATE workflows SET deadline = NULLIF(agents -> 'deadline', 'null'::jsonb), "
            "agents = agents - 'deadline' "
            "WHERE agents ? 'deadline'"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "UPDATE workflows SET agents = json_set(agents, '$.deadline', json(deadline)) "
            "WHERE deadline IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE workflows SET agents = agents || jsonb_build_object('deadline', deadline) "
            "WHERE deadline IS NOT NULL"
        )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_column("deadline")
