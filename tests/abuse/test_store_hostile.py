"""Hostile stores: a SQLite file with damaged pages, and two scans creating a new store at once."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.fleet import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "web"))
from webfill import fill  # noqa: E402

# Tables whose first page is overwritten: what every read command and the dashboard go through.
DAMAGED = ("hosts", "observations", "observation_states", "findings", "host_exposure", "host_current")
# Only index pages: every table still reads its first row, only the queries through these indexes fail.
DAMAGED_INDEXES = ("ix_observations_host_scan", "ix_observations_scan_key", "ix_hosts_address")


def damaged_store(folder: Path, names: tuple[str, ...] = DAMAGED) -> tuple[str, Path]:
    """A filled SQLite store whose schema still reads but whose pages of ``names`` are garbage.

    With ``names`` empty, 3,000 tags are added and only the file's last page is damaged: a leaf deep in
    a table, which a cheap one-row read of every table does not meet (SQLite's quick_check does)."""
    path = folder / "damaged.db"
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        fill(store)
    con = sqlite3.connect(path)
    if not names:
        con.executemany(
            "INSERT INTO tags (host_id, key, value) VALUES (1, ?, ?)",
            [(f"k{i:05d}", "v" * 40) for i in range(3000)],
        )
        con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0").fetchall())
    con.close()
    with path.open("r+b") as fh:
        for page in [roots[name] for name in names] or [pages]:
            fh.seek((page - 1) * page_size)
            fh.write(b"\xa5" * page_size)
    return url, path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CountingListener:
    """A loopback TCP port that counts the connections it accepts (a scan target that must stay untouched)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.mark.parametrize(
    "args",
    [["hosts", "list"], ["report"], ["report", "--format", "json"], ["hosts", "show", "1"]],
    ids=["hosts-list", "report", "report-json", "hosts-show"],
)
def test_damaged_store_gives_one_line_errors(tmp_path: Path, args: list[str]) -> None:
    url, path = damaged_store(tmp_path)
    digest = sha256(path)
    result = CliRunner().invoke(cli, ["--db", url, *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("exwatch: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "damaged" in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""
    assert sha256(path) == digest


@pytest.mark.parametrize("names", [DAMAGED, DAMAGED_INDEXES, ()], ids=["tables", "indexes", "deep-leaf"])
def test_scan_checks_the_store_before_sending_a_request(tmp_path: Path, names: tuple[str, ...]) -> None:
    url, path = damaged_store(tmp_path, names)
    digest = sha256(path)
    target = CountingListener()
    try:
        result = CliRunner().invoke(
            cli,
            ["scan", f"127.0.0.1:{target.port}", "--ports", str(target.port), "--db", url, "--timeout", "1"],
        )
        time.sleep(0.3)
    finally:
        target.close()
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("exwatch: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "damaged" in result.stderr
    assert target.accepted == 0
    assert sha256(path) == digest


CREATE = """
import sys, time
from exwatch.fleet import open_store
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
with open_store(sys.argv[1]) as store:
    store.start_scan({"who": sys.argv[3]})
print("ok")
"""


@pytest.mark.slow
def test_processes_creating_a_new_store_at_once(tmp_path: Path) -> None:
    """Low: new stores opened by four processes at the same instant, five times over: all succeed."""
    failures = []
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        start = time.time() + 1.5  # after every interpreter has imported exwatch
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CREATE, url, str(start), str(i)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            if proc.returncode != 0 or out.strip() != "ok":
                failures.append(err.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
        if not failures:
            with open_store(url) as store, store.connect() as conn:
                count = conn.exec_driver_sql("SELECT count(*) FROM scans").scalar()
            assert count == 4
    assert failures == []
