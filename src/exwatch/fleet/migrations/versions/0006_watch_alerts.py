"""The watch's alert log: detection state per watch, alerts (once each), deliveries per sink.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

The tables are described in exwatch.watch.tables.  A store opened by a development build of the
watch may already hold them (they were created on first use before this revision existed): they are
created here only where missing.  No secondary index: one alert per change keeps the table small,
and the store's schema test compares every index of the store with the fleet's own tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "watch_state" not in existing:
        op.create_table(
            "watch_state",
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("state", sa.Text, nullable=False),
            sa.Column("updated_at", sa.DateTime, nullable=False),
        )
    if "watch_alerts" not in existing:
        op.create_table(
            "watch_alerts",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("watch", sa.String(255), nullable=False),
            sa.Column("alert_key", sa.String(64), nullable=False, unique=True),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("time", sa.DateTime, nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("host_id", sa.Integer),
            sa.Column("address", sa.String(255)),
            sa.Column("port", sa.Integer),
            sa.Column("wave", sa.String(32)),
            sa.Column("state", sa.String(32)),
            sa.Column("previous", sa.String(32)),
            sa.Column("build", sa.String(64)),
            sa.Column("fix", sa.Text),
            sa.Column("scan_id", sa.Integer),
            sa.Column("body", sa.Text, nullable=False),
        )
    if "watch_deliveries" not in existing:
        op.create_table(
            "watch_deliveries",
            sa.Column("alert_id", sa.Integer, primary_key=True),
            sa.Column("sink", sa.String(64), primary_key=True),
            sa.Column("how", sa.String(16), nullable=False),
            sa.Column("at", sa.DateTime, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("watch_deliveries")
    op.drop_table("watch_alerts")
    op.drop_table("watch_state")
