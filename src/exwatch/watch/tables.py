"""The watch's tables in the store (migration 0006 creates exactly these)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

metadata = MetaData()

# One row per watch (its name): the detection state as JSON (exwatch.watch.detect), rewritten in the
# same transaction as the alerts of the round it describes.
watch_state = Table(
    "watch_state",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# Every alert a watch raised, once (``alert_key`` is Alert.id: unique per watch, scan, host, wave, kind).
# host_id is the store's host for the tag filter of /api/alerts (None when the host is unknown there).
watch_alerts = Table(
    "watch_alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("watch", String(255), nullable=False),
    Column("alert_key", String(64), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("time", DateTime, nullable=False),
    Column("host", String(255), nullable=False),
    Column("host_id", Integer),
    Column("address", String(255)),
    Column("port", Integer),
    Column("wave", String(32)),
    Column("state", String(32)),
    Column("previous", String(32)),
    Column("build", String(64)),
    Column("fix", Text),
    Column("scan_id", Integer),
    Column("body", Text, nullable=False),
)

# An alert handed to a sink: sent (the sink accepted it) or spooled (kept on disk for the next round).
watch_deliveries = Table(
    "watch_deliveries",
    metadata,
    Column("alert_id", Integer, primary_key=True),
    Column("sink", String(64), primary_key=True),
    Column("how", String(16), nullable=False),
    Column("at", DateTime, nullable=False),
)
