"""observations, observation_states and scan_hosts without foreign keys.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

These three tables take every row a scan writes (one observation, its per-wave states and its
host's fold per service).  A foreign key costs one check per row (a trigger on PostgreSQL, which
halved ingest there; a parent lookup on SQLite); the store now checks a batch's scan, hosts and
detail bodies once (exwatch.fleet.store.Store._check_references) and deletes a scan's rows itself
(exwatch.fleet.lifecycle.delete_scan), so the keys only cost.

PostgreSQL drops the constraints (instant).  SQLite cannot drop a constraint: the three tables are
copied into new ones (Alembic batch mode), which takes about as long as copying them once (seconds
per million observations) on the first open after the upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("observations", "observation_states", "scan_hosts")


def _tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    """The three tables as they are from this revision on (the same as exwatch.fleet.schema)."""
    return {
        "observations": sa.Table(
            "observations",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("scan_id", sa.Integer, nullable=False),
            sa.Column("host_id", sa.Integer),
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
            sa.Column("detail_id", sa.Integer),
            sa.Index("ix_observations_scan_key", "scan_id", "key"),
            sa.Index("ix_observations_host_scan", "host_id", "scan_id"),
        ),
        "observation_states": sa.Table(
            "observation_states",
            metadata,
            sa.Column("scan_id", sa.Integer, primary_key=True),
            sa.Column("wave", sa.String(32), primary_key=True),
            sa.Column("host_id", sa.Integer, primary_key=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("cu", sa.String(64)),
            sqlite_with_rowid=False,
        ),
        "scan_hosts": sa.Table(
            "scan_hosts",
            metadata,
            sa.Column("scan_id", sa.Integer, primary_key=True),
            sa.Column("host_id", sa.Integer, primary_key=True),
            sa.Column("status", sa.String(32), nullable=False),
            sa.Column("rank", sa.Integer, nullable=False),
            sa.Column("port", sa.Integer),
            sa.Column("build", sa.String(64)),
            sa.Column("conflict", sa.Boolean),
            sa.Index("ix_scan_hosts_host", "host_id", "scan_id"),
            sqlite_with_rowid=False,
        ),
    }


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if bind.dialect.name == "sqlite":
        new = _tables(sa.MetaData())
        for name in TABLES:
            if inspector.get_foreign_keys(name):
                with op.batch_alter_table(name, copy_from=new[name], recreate="always"):
                    pass
        return
    for name in TABLES:
        for fk in inspector.get_foreign_keys(name):
            constraint = fk.get("name")
            if constraint:
                op.drop_constraint(constraint, name, type_="foreignkey")


def downgrade() -> None:
    keys = {
        "observations": [
            ("scans", "scan_id", "CASCADE"),
            ("hosts", "host_id", None),
            ("details", "detail_id", None),
        ],
        "observation_states": [("scans", "scan_id", "CASCADE"), ("hosts", "host_id", None)],
        "scan_hosts": [("scans", "scan_id", "CASCADE"), ("hosts", "host_id", None)],
    }
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite: the keys are not put back (they would need the tables copied again)
    for name, refs in keys.items():
        for parent, column, ondelete in refs:
            op.create_foreign_key(f"{name}_{column}_fkey", name, parent, [column], ["id"], ondelete=ondelete)
