"""Fixtures of the web tests: the filled store on SQLite and PostgreSQL, and an in-process client."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from exwatch.fleet import open_store

# The tests import their data helpers from webfill.py beside this file (a name unique in the repo).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from webfill import Client, fill  # noqa: E402


def _fresh_pg(base: str) -> Iterator[str]:
    name = f"w_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.integration])],
)
def web_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a filled store (filled once per module and backend; the web only reads it)."""
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path_factory.mktemp('web') / 'store.db'}"])
    else:
        urls = _fresh_pg(request.getfixturevalue("pg_url"))
    url = next(urls)
    with open_store(url) as store:
        fill(store)
    yield url
    for _ in urls:  # drops the PostgreSQL database
        pass


@pytest.fixture(scope="module")
def client(web_db: str) -> Iterator[Client]:
    from exwatch.web import create_app

    app = create_app(web_db)
    yield Client(app)
    app.state.store.close()
