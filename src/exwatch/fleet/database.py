"""Opening a store URL: driver mapping, SQLite pragmas, and the migrations run on open."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from exwatch.config import mask_url
from exwatch.errors import ConfigError, StoreError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# SQLite settings for one writer and many readers: WAL lets reports read while a scan writes;
# NORMAL sync is safe with WAL (a power cut loses at most the last transactions, never corrupts).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-131072",
    "PRAGMA mmap_size=1073741824",
)


def engine_for(url: str) -> Engine:
    """A SQLAlchemy engine for a store URL; a bad URL or a missing extra is a ConfigError."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"not a store URL: {mask_url(url)}") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None:
            raise ConfigError(
                "a PostgreSQL store needs the 'postgres' extra: pip install 'exwatch[postgres]'"
            )
        parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except (ArgumentError, SQLAlchemyError) as exc:
            raise ConfigError(f"cannot use store {mask_url(url)}: {exc}") from exc
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    raise ConfigError(f"unsupported store URL {mask_url(url)}: use sqlite:///PATH or postgresql://...")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (Alembic, scripts shipped in the package)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    try:
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open or migrate the store {mask_url(str(engine.url))}: {exc}") from exc
