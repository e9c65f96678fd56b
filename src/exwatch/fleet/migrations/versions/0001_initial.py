"""The first schema: hosts, scans, observations, states, summaries, hunts, findings, tags.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("address", sa.String(255)),
        sa.Column("name", sa.String(255)),
        sa.Column("fe_server", sa.String(255)),
        sa.Column("cert", sa.String(512)),
        sa.Column("first_seen", sa.DateTime),
    )
    for col in ("address", "name", "fe_server", "cert"):
        op.create_index(f"ix_hosts_{col}", "hosts", [col])
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
    )
    op.create_index("ix_scans_started_at", "scans", ["started_at"])
    op.create_table(
        "details",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "observations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scan_id", sa.Integer, sa.ForeignKey("scans.id", ondelete="CASCADE"), nullable=False),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id")),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("target", sa.String(512)),
        sa.Column("address", sa.String(255)),
        sa.Column("port", sa.Integer),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("build", sa.String(64)),
        sa.Column("cu", sa.String(64)),
        sa.Column("build_source", sa.String(64)),
        sa.Column("cu_only", sa.Boolean),
        sa.Column("time", sa.DateTime),
        sa.Column("detail_id", sa.Integer, sa.ForeignKey("details.id")),
    )
    op.create_index("ix_observations_scan_key", "observations", ["scan_id", "key"])
    op.create_index("ix_observations_host_scan", "observations", ["host_id", "scan_id"])
    op.create_table(
        "observation_states",
        sa.Column("scan_id", sa.Integer, sa.ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("wave", sa.String(32), primary_key=True),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id"), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cu", sa.String(64)),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_observation_states_host", "observation_states", ["host_id", "wave", "scan_id"])
    op.create_table(
        "scan_summary",
        sa.Column("scan_id", sa.Integer, sa.ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("wave", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    op.create_table(
        "hunts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id")),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("coverage", sa.Text, nullable=False),
        sa.Column("errors", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_hunts_host_id", "hunts", ["host_id"])
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("hunt_id", sa.Integer, sa.ForeignKey("hunts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id")),
        sa.Column("host", sa.String(255)),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("wave", sa.String(32)),
        sa.Column("cve", sa.String(32)),
        sa.Column("confidence", sa.String(16)),
        sa.Column("time", sa.DateTime),
        sa.Column("title", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("evidence", sa.Text),
    )
    op.create_index("ix_findings_hunt_id", "findings", ["hunt_id"])
    op.create_index("ix_findings_host_id", "findings", ["host_id"])
    op.create_index("ix_findings_time", "findings", ["time"])
    op.create_table(
        "tags",
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    op.create_index("ix_tags_key_value", "tags", ["key", "value"])


def downgrade() -> None:
    for table in (
        "tags",
        "findings",
        "hunts",
        "scan_summary",
        "observation_states",
        "observations",
        "details",
        "scans",
        "hosts",
    ):
        op.drop_table(table)
