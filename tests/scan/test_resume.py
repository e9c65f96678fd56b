"""A scan killed with SIGKILL halfway and resumed stores the same hosts as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from exwatch.fleet import open_store
from exwatch.fleet import schema as t
from exwatch.lab import draw_fleet, run_fleet_in_thread

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 80


def _exwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "exwatch", *args]


def _states(lines: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for line in lines:
        rec = json.loads(line)
        out[rec["key"]] = {w: v["state"] for w, v in rec["waves"].items()}
    return out


def _stored(url: str, scan_id: int) -> tuple[set[str], int]:
    with open_store(url) as store:
        keys = store.scan_done_keys(scan_id)
        with store.connect() as conn:
            rows = conn.execute(
                select(func.count()).select_from(t.observations).where(t.observations.c.scan_id == scan_id)
            ).scalar_one()
    return keys, int(rows)


def test_sigkill_then_resume(tmp_path: Path) -> None:
    specs = draw_fleet(N, seed=31, base_address="127.20.5.1", https_port=18443, other_share=0.1)
    manifest_file = tmp_path / "manifest.json"
    slow = [
        "--concurrency",
        "4",
        "--per-host",
        "4",
        "--timeout",
        "1.5",
        "--host-budget",
        "5",
        "--format",
        "jsonl",
    ]
    killed_db = f"sqlite:///{tmp_path / 'killed.db'}"
    full_db = f"sqlite:///{tmp_path / 'full.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with run_fleet_in_thread(specs) as fleet:
        manifest_file.write_text(json.dumps(fleet.manifest()), encoding="utf-8")
        all_keys = {f"{s.scheme}://{s.address}:{s.port}" for s in specs}
        proc = subprocess.Popen(
            _exwatch("scan", "--targets-file", str(manifest_file), "--db", killed_db, *slow),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        first: list[str] = []
        deadline = time.monotonic() + 120
        while len(first) < N // 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            first.append(line)
        # Kill once at least one batch has reached the store (batches are flushed every second).
        while not _stored(killed_db, 1)[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        first.extend(x for x in rest.splitlines() if x.strip())
        assert proc.returncode == -signal.SIGKILL
        stored_before, _ = _stored(killed_db, 1)
        assert 0 < len(stored_before) < N, ("the kill must land halfway", len(first))

        resumed = subprocess.run(
            _exwatch("scan", "--resume", "1", "--db", killed_db, "--format", "jsonl"),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert resumed.returncode in (0, 1, 3), resumed.stderr
        second = [x for x in resumed.stdout.splitlines() if x.strip()]
        full = subprocess.run(
            _exwatch(
                "scan",
                "--targets-file",
                str(manifest_file),
                "--db",
                full_db,
                "--format",
                "jsonl",
                "--timeout",
                "1.5",
                "--host-budget",
                "5",
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert full.returncode in (0, 1, 3), full.stderr

    # The resumed run scanned exactly what the killed one had not stored.
    resumed_keys = {json.loads(x)["key"] for x in second}
    assert resumed_keys.isdisjoint(stored_before)
    assert resumed_keys | stored_before == all_keys
    keys, rows = _stored(killed_db, 1)
    assert keys == all_keys and rows == N, "no host lost, none repeated"
    full_keys, full_rows = _stored(full_db, 1)
    assert full_keys == all_keys and full_rows == N
    # Same verdicts, host by host, as the uninterrupted scan.
    interrupted_states: dict[str, Any] = {**_states(first), **_states(second)}
    assert {k: interrupted_states[k] for k in all_keys} == _states(full.stdout.splitlines())


def test_ctrl_c_stores_what_finished_then_resume(tmp_path: Path) -> None:
    # Nothing listens on 127.20.64.0/18:18444: 16,384 quick refusals, interrupted after 2,000.
    db = f"sqlite:///{tmp_path / 'int.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    target = ["127.20.64.0/18", "--ports", "18444/https", "--concurrency", "16", "--retries", "0"]
    proc = subprocess.Popen(
        _exwatch("scan", *target, "--db", db, "--format", "jsonl"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    printed = [proc.stdout.readline() for _ in range(2000)]
    proc.send_signal(signal.SIGINT)
    # The rest through the same reader: communicate() reads the pipe itself, and would lose what this
    # reader already holds past the 2,000th line (lines stored but "never printed").
    rest = proc.stdout.read()
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait(60)
    printed += [x for x in rest.splitlines() if x.strip()]
    assert proc.returncode == 3, err
    assert "interrupted" in err and "--resume 1" in err
    stored, rows = _stored(db, 1)
    # Everything reported before the interrupt reached the store (the writer is drained on the way out).
    assert stored == {json.loads(x)["key"] for x in printed} and rows == len(stored) < 16384
    resumed = subprocess.run(
        _exwatch("scan", "--resume", "1", "--db", db, "--format", "jsonl"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 3, resumed.stderr
    keys, rows = _stored(db, 1)
    assert len(keys) == rows == 16384


def test_resuming_a_finished_scan_does_not_say_nothing_is_exposed(tmp_path: Path) -> None:
    """A resume whose own run scans nothing new (here: the scan had finished) prints no exposed host of
    its own; its table must not say "No exposed Exchange server." while the whole scan has some and the
    exit code (1) says so."""
    specs = draw_fleet(12, seed=7, base_address="127.20.9.1", https_port=18443, other_share=0.0)
    manifest_file = tmp_path / "manifest.json"
    db = f"sqlite:///{tmp_path / 'done.db'}"
    with run_fleet_in_thread(specs) as fleet:
        manifest_file.write_text(json.dumps(fleet.manifest()), encoding="utf-8")
        first = subprocess.run(
            _exwatch("scan", "--targets-file", str(manifest_file), "--db", db, "-q"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.returncode == 1, first.stderr  # the drawn fleet has vulnerable servers
        again = subprocess.run(
            _exwatch("scan", "--resume", "1", "--db", db),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert again.returncode == 1, again.stderr
    assert "No exposed Exchange server." not in again.stdout
    assert "the whole scan has " in again.stdout and "exwatch scans show 1" in again.stdout
