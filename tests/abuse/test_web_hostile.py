"""Hostile requests and stores against the dashboard: huge numbers, a damaged store, a busy port."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exwatch.fleet import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "web"))
from webfill import Client, fill  # noqa: E402

HUGE = "9" * 30  # past any 64-bit integer
BIG = str(2**63)  # one past SQLite's largest integer


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('webabuse') / 'store.db'}"
    with open_store(url) as store:
        fill(store)
    return url


@pytest.fixture(scope="module")
def client(filled: str) -> Client:
    from exwatch.web import create_app

    return Client(create_app(filled))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/api/hosts/{HUGE}", 404),
        (f"/api/hosts/{BIG}", 404),
        (f"/api/hosts/-{HUGE}", 404),
        (f"/hosts/{HUGE}", 404),
        (f"/hosts/{BIG}", 404),
        (f"/api/hosts?offset={HUGE}", 422),
        (f"/api/hosts?offset={BIG}", 422),
        (f"/api/findings?offset={BIG}", 422),
        (f"/api/findings?host=%23{HUGE}", 404),
        (f"/api/findings?host=%23{BIG}", 404),
        (f"/?offset={HUGE}", 422),
        (f"/?offset={BIG}", 422),
        (f"/?offset=-{BIG}", 422),
    ],
)
def test_huge_ids_and_offsets_are_404_or_422(client: Client, path: str, expected: int) -> None:
    """Low: numbers past 64 bits reached SQLite and came back as a 500 (OverflowError)."""
    r = client.get(path)
    assert r.status_code == expected, (path, r.status_code, r.text[:300])
    if path.startswith("/api/"):
        assert "detail" in r.json()


def _damage(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0").fetchall())
    con.close()
    with path.open("r+b") as fh:
        for name in (
            "hosts",
            "observations",
            "observation_states",
            "findings",
            "host_current",
            "scan_summary",
        ):
            fh.seek((roots[name] - 1) * page_size)
            fh.write(b"\xa5" * page_size)


def test_damaged_store_is_503_and_health_says_so(tmp_path: Path) -> None:
    """Medium: a store damaged while the dashboard runs gave 500s while /api/health said ok."""
    from exwatch.web import create_app

    path = tmp_path / "store.db"
    with open_store(f"sqlite:///{path}") as store:
        fill(store)
    app = create_app(f"sqlite:///{path}")
    client = Client(app)
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/health").json()["status"] == "ok"
    app.state.store.engine.dispose()  # the damage lands between two connections
    _damage(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for page in (
        "/",
        "/hosts/1",
        "/api/summary",
        "/api/hosts",
        "/api/hosts/1",
        "/api/findings",
        "/api/snapshots",
    ):
        r = client.get(page)
        assert r.status_code == 503, (page, r.status_code, r.text[:300])
        if page.startswith("/api/"):
            assert "damaged" in r.json()["detail"]
        else:
            assert "damaged" in r.text and "Traceback" not in r.text
    health = client.get("/api/health")
    assert health.status_code == 503 and health.json()["status"] == "error"
    assert "damaged" in health.json()["detail"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    app.state.store.close()


def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exwatch", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_serve_refuses_a_damaged_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with open_store(f"sqlite:///{path}") as store:
        fill(store)
    _damage(path)
    result = _serve("--db", f"sqlite:///{path}", "--port", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("exwatch: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "damaged" in result.stderr


def test_serve_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        open_store(f"sqlite:///{tmp_path / 's.db'}").close()  # serve never creates a store
        started = time.monotonic()
        result = _serve("--db", f"sqlite:///{tmp_path / 's.db'}", "--port", str(port))
    finally:
        busy.close()
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("exwatch:")]
    assert lines == [lines[0]] and lines[0].startswith("exwatch: error: "), result.stderr
    assert str(port) in lines[0] and "in use" in lines[0]
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
