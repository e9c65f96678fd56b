"""Migration 0006 creates exactly the watch tables of exwatch.watch.tables."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from exwatch.fleet import open_store
from exwatch.watch import tables


def test_migration_0006_matches_the_tables(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store, store.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() >= "0006"
        mine = set(tables.metadata.tables)

        def about_mine(d: object) -> bool:
            # Entries name their table: an Index/Table/Column object, or a list of modify tuples.
            items = d if isinstance(d, list) else [d]
            for item in items:
                for part in item:
                    name = getattr(getattr(part, "table", None), "name", None) or getattr(part, "name", None)
                    if name in mine or part in mine:
                        return True
            return False

        diff = [d for d in compare_metadata(context, tables.metadata) if about_mine(d)]
        assert diff == []
        assert mine <= set(inspect(conn).get_table_names())
