"""The store's tables as SQLAlchemy Core objects (the migrations create exactly these)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# A host is one Exchange server as the store knows it across scans; its identifiers are the ones
# last seen (address, DNS name, X-FEServer, certificate key).
hosts = Table(
    "hosts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("address", String(255), index=True),
    Column("name", String(255), index=True),
    Column("fe_server", String(255), index=True),
    Column("cert", String(512), index=True),
    Column("first_seen", DateTime),
)

# A scan is one snapshot (kind "scan"); its time is started_at (the simulated day in the demo).
scans = Table(
    "scans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("params", Text, nullable=False),
    Column("started_at", DateTime, nullable=False, index=True),
    Column("finished_at", DateTime),
)

# What one scan saw of one host.  Per-wave states are in observation_states for GROUP BY.
observations = Table(
    "observations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("scan_id", Integer, ForeignKey("scans.id", ondelete="CASCADE"), nullable=False),
    Column("host_id", Integer, ForeignKey("hosts.id")),
    Column("key", String(512), nullable=False),
    Column("target", String(512)),
    Column("address", String(255)),
    Column("port", Integer),
    Column("status", String(32), nullable=False),
    Column("error", Text),
    Column("build", String(64)),
    Column("cu", String(64)),
    Column("build_source", String(64)),
    Column("cu_only", Boolean),
    Column("time", DateTime),
    Column("detail_id", Integer, ForeignKey("details.id")),
    Index("ix_observations_scan_key", "scan_id", "key"),
    Index("ix_observations_host_scan", "host_id", "scan_id"),
)

# Per-wave verdict texts (reasons, fixes, probe outcomes) repeat across hosts and scans: stored once.
details = Table(
    "details",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("body", Text, nullable=False),
)

# One row per (snapshot, wave, host): the narrow table every aggregate groups over.
observation_states = Table(
    "observation_states",
    metadata,
    Column("scan_id", Integer, ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
    Column("wave", String(32), primary_key=True),
    Column("host_id", Integer, ForeignKey("hosts.id"), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("cu", String(64)),
    sqlite_with_rowid=False,
)

# Counts per snapshot, filled by finish_scan: the trend never reads observation rows.
scan_summary = Table(
    "scan_summary",
    metadata,
    Column("scan_id", Integer, ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
    Column("wave", String(32), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("n", Integer, nullable=False),
)

hunts = Table(
    "hunts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("host_id", Integer, ForeignKey("hosts.id"), index=True),
    Column("verdict", String(32), nullable=False),
    Column("coverage", Text, nullable=False),
    Column("errors", Text, nullable=False),
    Column("started_at", DateTime, nullable=False),
)

findings = Table(
    "findings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hunt_id", Integer, ForeignKey("hunts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("host_id", Integer, ForeignKey("hosts.id"), index=True),
    Column("host", String(255)),
    Column("rule", String(128), nullable=False),
    Column("wave", String(32)),
    Column("cve", String(32)),
    Column("confidence", String(16)),
    Column("time", DateTime, index=True),
    Column("title", Text),
    Column("description", Text),
    Column("evidence", Text),
)

tags = Table(
    "tags",
    metadata,
    Column("host_id", Integer, ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
    Index("ix_tags_key_value", "key", "value"),
)

# Per host and wave: the first snapshot that saw it vulnerable and the first after that which saw it
# patched or mitigated (the exposure window).  finish_scan keeps it current.
host_exposure = Table(
    "host_exposure",
    metadata,
    Column("host_id", Integer, ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True),
    Column("wave", String(32), primary_key=True),
    Column("first_vulnerable", DateTime, nullable=False),
    Column("first_protected", DateTime),
    Index("ix_host_exposure_wave_open", "wave", "first_protected"),
)
