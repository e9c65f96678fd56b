"""Alembic environment: runs on the connection that open_store hands over."""

from __future__ import annotations

from alembic import context

from exwatch.fleet.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only open_store runs migrations
    raise RuntimeError("exwatch migrations run through exwatch.fleet.open_store")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
