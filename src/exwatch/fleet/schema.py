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
    # From this time on the host is out of the fleet picture (decommissioned): ``hosts retire``.
    Column("retired_at", DateTime),
    # Set on a host whose identity was merged into another one (``hosts merge``); it holds no observation.
    Column("merged_into", Integer),
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
    # True once the fleet picture at this scan's time is in picture_summary (exwatch.fleet.picture).
    Column("pictured", Boolean),
)

# What one scan saw of one host.  Per-wave states are in observation_states for GROUP BY.
# observations, observation_states and scan_hosts carry no foreign keys (migration 0007): they are
# written in bulk by the store alone, which checks a batch's scan, hosts and details once
# (Store._check_references) instead of one trigger or lookup per row, and deletes them explicitly.
observations = Table(
    "observations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("scan_id", Integer, nullable=False),
    Column("host_id", Integer),
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
    Column("detail_id", Integer),
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
    Column("scan_id", Integer, primary_key=True),
    Column("wave", String(32), primary_key=True),
    Column("host_id", Integer, primary_key=True),
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


# One row per (scan, host): the host's services in that scan folded into one verdict (exwatch.scan.fold):
# the winning service's status, rank and port, its build, and whether two Exchange answers disagreed.
scan_hosts = Table(
    "scan_hosts",
    metadata,
    Column("scan_id", Integer, primary_key=True),
    Column("host_id", Integer, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("port", Integer),
    Column("build", String(64)),
    Column("conflict", Boolean),
    Index("ix_scan_hosts_host", "host_id", "scan_id"),
    sqlite_with_rowid=False,
)

# The fleet picture as of the newest pictured scan, kept by exwatch.fleet.picture: each service's
# latest observation (service_current) and each host's fold of them (host_current).
service_current = Table(
    "service_current",
    metadata,
    Column("host_id", Integer, primary_key=True),
    Column("port", Integer, primary_key=True),
    Column("scan_id", Integer, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("build", String(64)),
    Column("cu", String(64)),
    Column("detail_id", Integer),
    sqlite_with_rowid=False,
)

host_current = Table(
    "host_current",
    metadata,
    Column("host_id", Integer, primary_key=True),
    Column("scan_id", Integer, nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("port", Integer),
    Column("seen_at", DateTime, nullable=False),
    Column("build", String(64)),
    Column("cu", String(64)),
    Column("conflict", Boolean),
)

# The current picture's per-wave states of each host: its latest services folded (most exposed among
# the Exchange answers of the winning rank, or among all of them on a conflict).
host_states = Table(
    "host_states",
    metadata,
    Column("host_id", Integer, primary_key=True),
    Column("wave", String(32), primary_key=True),
    Column("state", String(16), nullable=False),
    sqlite_with_rowid=False,
)

# The per-wave states a detail body holds (one row per distinct body and wave): a service's states
# without parsing JSON in a query.
detail_states = Table(
    "detail_states",
    metadata,
    Column("detail_id", Integer, primary_key=True),
    Column("wave", String(32), primary_key=True),
    Column("state", String(16), nullable=False),
    sqlite_with_rowid=False,
)

# Counts of the fleet picture at each pictured scan's time, per wave and state (wave "*": host
# statuses), split by the scan each host's verdict comes from: "stale" is decided at read time from
# that scan's age, for any --max-age.  Retired and merged-away hosts are left out.
picture_summary = Table(
    "picture_summary",
    metadata,
    Column("scan_id", Integer, ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
    Column("wave", String(32), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("source_scan", Integer, primary_key=True),
    Column("n", Integer, nullable=False),
)

# The current picture (as of scan_id, the newest pictured scan) counted per wave, state, breakdown
# ("cu", "build", "tag:KEY" of the report's tag keys), group and the time of each host's verdict
# (stale decided at read time); the row with breakdown "*" marks what it covers (exwatch.fleet.tally).
picture_tally = Table(
    "picture_tally",
    metadata,
    Column("scan_id", Integer, primary_key=True),
    Column("wave", String(32), primary_key=True),
    Column("breakdown", String(80), primary_key=True),
    Column("grp", String(255), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("seen_at", DateTime, primary_key=True),
    Column("n", Integer, nullable=False),
    sqlite_with_rowid=False,
)

# Every identity or lifecycle change a user made (merge, split, retire), with what it moved, so that
# ``hosts undo ID`` can reverse it.
host_changes = Table(
    "host_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("host_id", Integer, nullable=False),
    Column("other_id", Integer),
    Column("effective_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("data", Text, nullable=False),
    Column("undone_at", DateTime),
)
