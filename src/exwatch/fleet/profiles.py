"""How a store is opened for its use (``open_store(url, profile=...)``).

- ``write`` (the default): created and migrated when missing;
- ``existing``: must exist (``require_store``: exit 2 "no store at PATH"), may be written (the host
  lifecycle, ``scans delete``);
- ``read``: must exist, and its connections only read (SQLite ``query_only``, PostgreSQL read-only
  transactions): ``report``, ``hosts list``/``show``, ``scans list``/``show``;
- ``scan``: the scan's writer: created when missing, refused when damaged (SQLite ``quick_check``
  before a request is sent), and its SQLite connections lean (a scan only appends, so the read
  tuning of a 1 GB memory map and a 128 MB page cache per connection would only grow its memory).
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import Engine

from exwatch.fleet.database import check_store

Profile = Literal["write", "existing", "read", "scan"]
PROFILES: tuple[Profile, ...] = ("write", "existing", "read", "scan")
LEAN_SQLITE_PRAGMAS = ("PRAGMA mmap_size=0", "PRAGMA cache_size=-8192")


def must_exist(profile: str) -> bool:
    """Whether the profile opens only a store that exists already."""
    if profile not in PROFILES:
        raise ValueError(f"unknown store profile {profile!r}: use one of {', '.join(PROFILES)}")
    return profile in ("existing", "read")


def apply_profile(engine: Engine, profile: str) -> None:
    """Set up an opened (and migrated) store's engine for its use; new connections from now on."""
    if profile == "scan":
        check_store(engine, thorough=True)
        if engine.dialect.name == "sqlite":
            _on_connect(engine, LEAN_SQLITE_PRAGMAS)
    elif profile == "read":
        if engine.dialect.name == "sqlite":
            _on_connect(engine, ("PRAGMA query_only=ON",))
        elif engine.dialect.name == "postgresql":
            _on_connect(engine, ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",))


def _on_connect(engine: Engine, statements: tuple[str, ...]) -> None:
    def setup(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for statement in statements:
            cursor.execute(statement)
        cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_connection.commit()

    event.listen(engine, "connect", setup)
    engine.dispose()  # connections opened before (migrations) are replaced by ones set up so
