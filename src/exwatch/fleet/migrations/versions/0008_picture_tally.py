"""picture_tally: the current fleet picture counted per CU, build and report tag, kept as it moves.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

The report's breakdowns (per CU, per build, per organisation, country and network tag) were each a
pass over every pictured host (about half a second each at 400,000 hosts); the store now keeps their
counts when the picture moves (exwatch.fleet.tally), split by the time of each host's verdict so
that stale is decided at read time.  The table is filled on the first open after the upgrade
(exwatch.fleet.picture.ensure); until then the breakdowns are computed from the picture.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "picture_tally",
        sa.Column("scan_id", sa.Integer, primary_key=True),
        sa.Column("wave", sa.String(32), primary_key=True),
        sa.Column("breakdown", sa.String(80), primary_key=True),
        sa.Column("grp", sa.String(255), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("seen_at", sa.DateTime, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("picture_tally")
