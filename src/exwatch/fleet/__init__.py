"""The store and the fleet metrics: snapshots of scans and hunts over time (SQLite or PostgreSQL)."""

from __future__ import annotations

from exwatch.fleet.store import Store, open_existing_store, open_store, require_store

__all__ = ["Store", "open_existing_store", "open_store", "require_store"]
