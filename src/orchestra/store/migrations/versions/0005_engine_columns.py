"""engine-owned columns: leases on the one clock type, retry bookkeeping out of the
definition's state, and no dead ``version`` column

- ``workflows.lease_expires_at``: epoch seconds (float) → a UTC timestamp, like every
  other time in the schema. A lease in force keeps its expiry (to the second).
- ``workflows.retry``: the agents a retry runs again (was the ``_retry`` key inside
  ``state``, which belongs to the workflow definition); moved across.
- ``workflows.version``: bumped on every change and never read; dropped.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.alter_column(
            "lease_expires_at",
            existing_type=sa.Float(),
            type_=sa.DateTime(timezone=True),
            existing_nullable=True,
            postgresql_using="to_timestamp(lease_expires_at)",
        )
        batch_op.add_column(sa.Column("retry", _JSON, nullable=True))
        batch_op.drop_column("version")
    if sqlite:
        # After the table copy (which CASTs to the new type, keeping the number): the
        # epoch seconds become SQLAlchemy's SQLite text form of a naive UTC timestamp.
        op.execute(
            "UPDATE workflows SET lease_expires_at = "
            "strftime('%Y-%m-%d %H:%M:%S', lease_expires_at, 'unixepoch') || '.000000' "
            "WHERE lease_expires_at IS NOT NULL"
        )
        op.execute(
            "UPDATE workflows SET retry = json_extract(state, '$._retry'), "
            "state = json_remove(state, '$._retry') WHERE json_type(state, '$._retry') IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE workflows SET retry = state -> '_retry', state = state - '_retry' "
            "WHERE state ? '_retry'"
        )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # Before the table copy, which CASTs to FLOAT: the timestamps become epoch seconds.
        op.execute(
            "UPDATE workflows SET lease_expires_at = "
            "CAST(strftime('%s', lease_expires_at) AS REAL) WHERE lease_expires_at IS NOT NULL"
        )
        op.execute(
            "UPDATE workflows SET state = json_set(state, '$._retry', json(retry)) "
            "WHERE retry IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE workflows SET state = state || jsonb_build_object('_retry', retry) "
            "WHERE retry IS NOT NULL"
        )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="0", nullable=False))
        batch_op.drop_column("retry")
        batch_op.alter_column(
            "lease_expires_at",
            existing_type=sa.DateTime(timezone=True),
            type_=sa.Float(),
            existing_nullable=True,
            postgresql_using="extract(epoch from lease_expires_at)",
        )
