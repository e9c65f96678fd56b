"""Migrations from an empty database reach the head revision and match the Core tables exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from exwatch.fleet import open_store
from exwatch.fleet.database import MIGRATIONS
from exwatch.fleet.schema import metadata


def test_migrations_from_empty(store_url: str) -> None:
    with open_store(store_url) as store, store.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        assert context.get_current_revision() == head >= "0004"
        tables = set(inspect(conn).get_table_names())
        assert set(metadata.tables) <= tables
        diff = [d for d in compare_metadata(context, metadata) if d[0] not in ("remove_table",)]
        assert diff == []
    # opening again is a no-op
    with open_store(store_url) as again, again.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
