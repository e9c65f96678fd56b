"""Opening a store URL: driver mapping, SQLite pragmas, and the migrations run on open."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, SQLAlchemyError

from exwatch.config import mask_url
from exwatch.errors import ConfigError, StoreError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# SQLite settings for one writer and many readers: WAL lets reports read while a scan writes;
# NORMAL sync is safe with WAL (a power cut loses at most the last transactions, never corrupts).
# journal_mode=WAL is set apart (_sqlite_wal): on a new file it takes a lock that SQLite does not wait for.
SQLITE_PRAGMAS = (
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


def store_missing(url: str) -> str | None:
    """Where the store should be, when no exwatch store is there (None when one is).

    Nothing is created: a SQLite file is looked at without opening it for writing, a PostgreSQL
    database is asked whether it holds the store's tables.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"not a store URL: {mask_url(url)}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None if database.startswith("file:") else database or ":memory:"
        path = Path(database).expanduser()
        if not path.is_file() or path.stat().st_size == 0:
            return str(path)
        import sqlite3

        try:
            raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                found = raw.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                ).fetchone()
            finally:
                raw.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store {path}: {exc}") from exc
        return None if found else str(path)
    if backend in ("postgresql", "postgres"):
        engine = engine_for(url)
        try:
            with engine.connect() as conn:
                found = conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot connect to the store {mask_url(url)}: {exc}") from exc
        finally:
            engine.dispose()
        return None if found else mask_url(url)
    return None  # engine_for names what is wrong with other URLs


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        _sqlite_wal(cursor)
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


# How long a connection keeps asking for WAL mode while other processes hold the new file (seconds).
WAL_WAIT = 30.0


def _sqlite_wal(cursor: Any) -> None:
    """Put the database in WAL mode (it stays so in the file; a store already in WAL is left alone).

    Turning a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at
    once, without the busy timeout, when another process holds the file at that instant (seen when
    four processes create one store together: tests/abuse/test_store_hostile.py). So: ask, and on
    "locked" ask again after a short sleep, for at most WAL_WAIT seconds.
    """
    deadline = time.monotonic() + WAL_WAIT
    pause = 0.005
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode is not None and str(mode[0]).lower() in ("wal", "memory"):
                return
            cursor.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


# Any constant: the PostgreSQL advisory lock that serialises exwatch migrations on one database.
PG_MIGRATION_LOCK = 0x6578_7761_7463_68  # "exwatch"
DAMAGED_HINT = (
    "it is damaged or not an exwatch store: restore it from a backup "
    "(for SQLite, `sqlite3 FILE .recover` saves what it can); nothing was written"
)


def _lock_for_migration(connection: Connection) -> None:
    """Serialise migrations between processes that open the same new store at once.

    SQLite: ``BEGIN EXCLUSIVE`` before Alembic reads the version, so the second process waits (busy
    timeout) and then finds the schema at head (the sqlite3 driver would otherwise run the DDL in
    autocommit, and both processes would create the tables). PostgreSQL: a transaction-level
    advisory lock, released at commit.
    """
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN EXCLUSIVE")
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})


def head_revision() -> str:
    """The newest revision shipped: revision ids are the 4-digit prefixes of the files in
    migrations/versions (tests/fleet/test_migrations.py checks that Alembic finds the same head)."""
    return max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def _at_head(engine: Engine) -> bool:
    """Whether the store's recorded revision is the newest one (then Alembic is not even imported:
    it costs a scan's start about half a second of CPU here). Any doubt answers False."""
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                found = conn.exec_driver_sql(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                ).scalar()
            else:
                found = conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar()
            if not found:
                return False
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    except SQLAlchemyError:
        return False  # the migration below reports what is wrong
    return list(versions) == [head_revision()]


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (Alembic, scripts shipped in the package), in one
    exclusive transaction, then read one row of every table (a damaged store fails here, not later).
    A store already at the newest revision skips Alembic."""
    if _at_head(engine):
        check_store(engine, thorough=False)
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    try:
        with engine.begin() as connection:
            _lock_for_migration(connection)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except DatabaseError as exc:
        raise damaged(engine, exc) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open or migrate the store {mask_url(str(engine.url))}: {exc}") from exc
    check_store(engine, thorough=False)


def _driver_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())[:300]


def damaged(engine_or_url: Engine | str | None, exc: BaseException) -> StoreError:
    """The one-line StoreError for a database error met while reading or writing the store."""
    where = ""
    if engine_or_url is not None:
        url = str(engine_or_url.url) if isinstance(engine_or_url, Engine) else engine_or_url
        where = f" {mask_url(url)}"
    message = _driver_message(exc)
    lowered = message.lower()
    if "locked" in lowered or "could not connect" in lowered or "connection" in lowered:
        return StoreError(f"the store{where} cannot be used now ({message}); nothing was written")
    return StoreError(f"the store{where} cannot be read ({message}): {DAMAGED_HINT}")


# How long the SQLite integrity check may run before a scan or `serve` (seconds); EXWATCH_STORE_CHECK
# sets it: a number of seconds, "full" (no bound) or "off" (one row of every table and index only).
CHECK_BUDGET = 0.5
CHECK_ENV = "EXWATCH_STORE_CHECK"


def check_budget() -> float | None:
    """The time bound of the integrity check: seconds, None for a full check, 0 for none."""
    value = os.environ.get(CHECK_ENV, "").strip().lower()
    if not value:
        return CHECK_BUDGET
    if value == "full":
        return None
    if value == "off":
        return 0.0
    try:
        seconds = float(value)
    except ValueError as exc:
        raise ConfigError(f"{CHECK_ENV} must be a number of seconds, 'full' or 'off', not {value!r}") from exc
    return max(0.0, seconds)


def check_store(engine: Engine, *, thorough: bool = True, budget: float | None | str = "env") -> None:
    """Raise a StoreError when the store is damaged.

    Always: one row of every exwatch table, and on SQLite the first entry of every index (a damaged
    index root fails here).  ``thorough`` on SQLite adds ``PRAGMA quick_check`` (every page of the
    file) bounded in time: it stops after ``budget`` seconds (default: EXWATCH_STORE_CHECK, else
    CHECK_BUDGET; None: no bound) and what it read by then was sound.  A store that fits is checked
    whole; a store of gigabytes is checked from its first pages (quick_check reads about 1 GB/s
    here, see benchmarks/store/RESULTS.md), and a damaged page met later by a write fails that write
    cleanly (SQLite refuses it; nothing is written).
    """
    from exwatch.fleet.schema import metadata

    seconds = check_budget() if budget == "env" else budget
    assert seconds is None or isinstance(seconds, float | int)
    try:
        with engine.connect() as conn:
            if thorough and conn.dialect.name == "sqlite" and seconds != 0:
                rows = _quick_check(conn, seconds)
                if rows != ["ok"] and rows is not None:
                    raise StoreError(
                        f"the store {mask_url(str(engine.url))} failed SQLite's quick_check "
                        f"({'; '.join(rows)[:300]}): {DAMAGED_HINT}"
                    )
            for table in metadata.sorted_tables:
                conn.execute(select(text("1")).select_from(table).limit(1)).all()
            if conn.dialect.name == "sqlite":
                _first_index_entries(conn)
    except DatabaseError as exc:
        raise damaged(engine, exc) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the store {mask_url(str(engine.url))}: {exc}") from exc


def _quick_check(conn: Connection, seconds: float | None) -> list[str] | None:
    """SQLite's quick_check, stopped after ``seconds`` (None: to its end); None when it was stopped.

    The stop is sqlite3_interrupt from a timer thread: SQLite walks each b-tree in one step that a
    progress handler cannot break into, but it does notice an interrupt."""
    raw = conn.connection.driver_connection
    assert raw is not None
    timer = None
    guard = threading.Lock()
    done = False

    def stop() -> None:
        with guard:  # never after the check has ended (the interrupt would hit the next query)
            if not done:
                raw.interrupt()

    if seconds is not None:
        timer = threading.Timer(seconds, stop)
        timer.daemon = True
        timer.start()
    try:
        return [str(r[0]) for r in raw.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.OperationalError as exc:
        if timer is not None and "interrupt" in str(exc).lower():
            return None
        raise
    finally:
        with guard:
            done = True
        if timer is not None:
            timer.cancel()


def _first_index_entries(conn: Connection) -> None:
    """Read the first entry of every index of the store (through the index alone)."""
    rows = conn.exec_driver_sql(
        "SELECT m.name, m.tbl_name, i.name FROM sqlite_master m, pragma_index_info(m.name) i "
        "WHERE m.type = 'index' AND i.seqno = 0"
    ).all()
    for index, table, column in rows:
        if column is None:
            continue
        conn.exec_driver_sql(
            f'SELECT "{column}" FROM "{table}" INDEXED BY "{index}" WHERE "{column}" IS NOT NULL '
            f'ORDER BY "{column}" LIMIT 1'
        ).all()
