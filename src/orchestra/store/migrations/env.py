"""Alembic environment: migrations run against the URL and connection we pass in."""

from __future__ import annotations

from alembic import context

from orchestra.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through orchestra.store.migrate")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
