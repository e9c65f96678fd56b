"""Drop the per-host index of observation_states: ingest pays for it on every row, and every per-host
read now goes through observations(host_id, scan_id) and the states' primary key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_observation_states_host", table_name="observation_states")


def downgrade() -> None:
    op.create_index("ix_observation_states_host", "observation_states", ["host_id", "wave", "scan_id"])
