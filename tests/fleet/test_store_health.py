"""The store's health check: bounded quick_check, the index check, and its setting (SQLite files)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exwatch.errors import ConfigError, StoreError
from exwatch.fleet import open_store
from exwatch.fleet.database import CHECK_BUDGET, CHECK_ENV, check_budget, check_store, engine_for


def _store(path: Path) -> str:
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        sid = store.start_scan({"targets": ["192.0.2.1"]}, started_at=datetime(2021, 3, 2, tzinfo=UTC))
        store.add_observations(
            sid,
            [
                {
                    "address": f"192.0.2.{i}",
                    "port": 443,
                    "status": "exchange",
                    "build": "15.1.2176.2",
                    "waves": {"proxylogon": {"state": "vulnerable"}},
                }
                for i in range(1, 40)
            ],
        )
        store.finish_scan(sid)
    return url


def _damage(path: Path, *, index: str | None = None, tags: int = 0) -> None:
    """Overwrite an index's root page, or (with ``tags`` rows added first) the file's last page."""
    con = sqlite3.connect(path)
    if tags:
        con.executemany(
            "INSERT INTO tags (host_id, key, value) VALUES (1, ?, ?)",
            [(f"k{i:05d}", "v" * 40) for i in range(tags)],
        )
        con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = con.execute("PRAGMA page_size").fetchone()[0]
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0").fetchall())
    con.close()
    page = roots[index] if index else pages
    with path.open("r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xa5" * size)


def test_a_damaged_index_root_fails_even_the_cheap_check(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = _store(path)
    engine = engine_for(url)
    check_store(engine, thorough=False)
    engine.dispose()
    _damage(path, index="ix_observations_host_scan")
    engine = engine_for(url)
    try:
        with pytest.raises(StoreError, match="damaged"):
            check_store(engine, thorough=False)  # every table still reads its first row
    finally:
        engine.dispose()


def test_a_deep_leaf_needs_the_integrity_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    url = _store(path)
    _damage(path, tags=3000)
    engine = engine_for(url)
    try:
        monkeypatch.setenv(CHECK_ENV, "off")
        check_store(engine)  # one row per table and index: the damaged leaf is not met
        monkeypatch.setenv(CHECK_ENV, "full")
        with pytest.raises(StoreError, match="quick_check"):
            check_store(engine)
        monkeypatch.delenv(CHECK_ENV)
        with pytest.raises(StoreError, match="quick_check"):
            check_store(engine)  # a small store fits in the default bound: checked whole
    finally:
        engine.dispose()


def test_the_bound_is_set_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHECK_ENV, raising=False)
    assert check_budget() == CHECK_BUDGET
    for value, expected in (("full", None), ("off", 0.0), ("2.5", 2.5), ("-1", 0.0)):
        monkeypatch.setenv(CHECK_ENV, value)
        assert check_budget() == expected
    monkeypatch.setenv(CHECK_ENV, "soon")
    with pytest.raises(ConfigError, match=CHECK_ENV):
        check_budget()
