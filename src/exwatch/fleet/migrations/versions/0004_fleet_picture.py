"""The fleet picture: per-scan host folds, the current picture, its per-scan summary, host lifecycle.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("retired_at", sa.DateTime))
        batch.add_column(sa.Column("merged_into", sa.Integer))
    with op.batch_alter_table("scans") as batch:
        batch.add_column(sa.Column("pictured", sa.Boolean))
    op.create_table(
        "scan_hosts",
        sa.Column("scan_id", sa.Integer, sa.ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id"), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("port", sa.Integer),
        sa.Column("build", sa.String(64)),
        sa.Column("conflict", sa.Boolean),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_scan_hosts_host", "scan_hosts", ["host_id", "scan_id"])
    op.create_table(
        "service_current",
        sa.Column("host_id", sa.Integer, primary_key=True),
        sa.Column("port", sa.Integer, primary_key=True),
        sa.Column("scan_id", sa.Integer, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("build", sa.String(64)),
        sa.Column("cu", sa.String(64)),
        sa.Column("detail_id", sa.Integer),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "host_current",
        sa.Column("host_id", sa.Integer, primary_key=True),
        sa.Column("scan_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("port", sa.Integer),
        sa.Column("seen_at", sa.DateTime, nullable=False),
        sa.Column("build", sa.String(64)),
        sa.Column("cu", sa.String(64)),
        sa.Column("conflict", sa.Boolean),
    )
    op.create_index("ix_host_current_scan_id", "host_current", ["scan_id"])
    op.create_table(
        "host_states",
        sa.Column("host_id", sa.Integer, primary_key=True),
        sa.Column("wave", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "detail_states",
        sa.Column("detail_id", sa.Integer, primary_key=True),
        sa.Column("wave", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "picture_summary",
        sa.Column("scan_id", sa.Integer, sa.ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("wave", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("source_scan", sa.Integer, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    op.create_table(
        "host_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("host_id", sa.Integer, nullable=False),
        sa.Column("other_id", sa.Integer),
        sa.Column("effective_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("undone_at", sa.DateTime),
    )
    # Stores from before 0004: one folded row per (scan, host) from the observations (the best-ranked
    # service wins); the picture itself is built when the store is next opened (scans.pictured unset).
    op.execute(
        """
        INSERT INTO scan_hosts (scan_id, host_id, status, rank, port, build, conflict)
        SELECT scan_id, host_id, MIN(status), MAX(rank), MIN(port), MAX(build), NULL FROM (
            SELECT o.scan_id, o.host_id, o.status, o.port, o.build,
                   CASE WHEN o.status = 'exchange' AND o.build IS NOT NULL
                             AND (o.cu_only IS NULL OR o.cu_only = false) THEN 4
                        WHEN o.status = 'exchange' THEN 3
                        WHEN o.status = 'not_exchange' THEN 2 ELSE 1 END AS rank,
                   RANK() OVER (PARTITION BY o.scan_id, o.host_id ORDER BY
                        CASE WHEN o.status = 'exchange' AND o.build IS NOT NULL
                                  AND (o.cu_only IS NULL OR o.cu_only = false) THEN 4
                             WHEN o.status = 'exchange' THEN 3
                             WHEN o.status = 'not_exchange' THEN 2 ELSE 1 END DESC) AS r
            FROM observations o WHERE o.host_id IS NOT NULL
        ) ranked WHERE r = 1 GROUP BY scan_id, host_id
        """
    )


def downgrade() -> None:
    for table in (
        "host_changes",
        "picture_summary",
        "detail_states",
        "host_states",
        "host_current",
        "service_current",
        "scan_hosts",
    ):
        op.drop_table(table)
    with op.batch_alter_table("scans") as batch:
        batch.drop_column("pictured")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("merged_into")
        batch.drop_column("retired_at")
