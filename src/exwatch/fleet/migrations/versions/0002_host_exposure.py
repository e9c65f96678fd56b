"""Per-host exposure windows, kept up to date by finish_scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_exposure",
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("wave", sa.String(32), primary_key=True),
        sa.Column("first_vulnerable", sa.DateTime, nullable=False),
        sa.Column("first_protected", sa.DateTime),
    )
    op.create_index("ix_host_exposure_wave_open", "host_exposure", ["wave", "first_protected"])


def downgrade() -> None:
    op.drop_table("host_exposure")
