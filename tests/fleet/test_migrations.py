"""Migrations from an empty database reach the head revision and match the Core tables exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_upgrade_of_a_0003_store_builds_the_picture(store_url: str) -> None:
    """A store written before 0004 (one vote per host, no picture) gets its folds and picture on open."""
    from alembic import command
    from sqlalchemy import text

    from exwatch.fleet import queries as q
    from exwatch.fleet.database import engine_for

    engine = engine_for(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        body = '{"waves":{"proxylogon":{"fix":{"text":"install KB5000871"},"state":"vulnerable"}}}'
        conn.execute(text("INSERT INTO hosts (id, address) VALUES (1, '127.76.0.1'), (2, '127.76.0.2')"))
        conn.execute(
            text(
                "INSERT INTO scans (id, kind, params, started_at, finished_at) VALUES "
                "(1, 'scan', '{\"targets\": [\"127.76.0.0/30\"]}', '2021-03-09 00:00:00', '2021-03-09 01:00:00')"
            )
        )
        conn.execute(text("INSERT INTO details (id, digest, body) VALUES (1, 'd1', :b)"), {"b": body})
        conn.execute(
            text(
                "INSERT INTO observations (scan_id, host_id, key, address, port, status, build, cu, cu_only, "
                "detail_id) VALUES "
                "(1, 1, '127.76.0.1:80', '127.76.0.1', 80, 'unreachable', NULL, NULL, NULL, NULL), "
                "(1, 1, '127.76.0.1:443', '127.76.0.1', 443, 'exchange', '15.1.2176.2', '15.1.2176', false, 1), "
                "(1, 2, '127.76.0.2:443', '127.76.0.2', 443, 'exchange', '15.1.2176.2', '15.1.2176', false, 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO observation_states (scan_id, wave, host_id, state, cu) VALUES "
                "(1, 'proxylogon', 1, 'vulnerable', '15.1.2176'), (1, 'proxylogon', 2, 'vulnerable', '15.1.2176')"
            )
        )
    engine.dispose()
    with open_store(store_url) as store:
        (pic,) = q.fleet_series(store)
        assert pic.statuses == {"exchange": 2}
        assert pic.waves["proxylogon"].vulnerable == 2
        assert pic.scope == ("127.76.0.0/30",)
        hosts = {h.address: (h.status, h.port) for h in q.list_hosts(store)}
        assert hosts == {"127.76.0.1": ("exchange", 443), "127.76.0.2": ("exchange", 443)}


def test_head_revision_is_alembics() -> None:
    """The shortcut's head (the newest file's prefix) is the head Alembic finds."""
    from exwatch.fleet.database import head_revision

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_a_store_at_head_opens_without_alembic(tmp_path: Path) -> None:
    """Opening a store already at the newest revision does not import Alembic (a scan's start-up);
    a new store does (it is migrated)."""
    script = (
        "import sys\nfrom exwatch.fleet import open_store\n"
        "with open_store(sys.argv[1]) as s:\n    s.start_scan({})\n"
        "print('alembic' in sys.modules)\n"
    )
    url = f"sqlite:///{tmp_path / 'head.db'}"
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, url], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs == ["True", "False"]
