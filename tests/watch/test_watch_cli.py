"""``exwatch watch`` as a process: kill -9 and restart (no duplicate, no lost alert), SIGTERM after the
round, bad input, and the alert latency after a change."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import HTTPS_PORT, LabServers, Webhook, wait_for  # noqa: E402

pytestmark = pytest.mark.integration

EXWATCH = [sys.executable, "-m", "exwatch"]
A = "127.78.1.1"


def watch_cmd(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *EXWATCH,
        "watch",
        A,
        "--every",
        "1s",
        "--ports",
        f"{HTTPS_PORT}/https",
        "--probe",
        "--timeout",
        "2",
        "--db",
        f"sqlite:///{tmp_path / 'store.db'}",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--format",
        "jsonl",
        *extra,
    ]


def file_events(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def changes(events: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(e["kind"], e["wave"]) for e in events if e["wave"] in (None, "proxylogon")]


def test_kill_9_and_restart_loses_and_repeats_nothing(
    tmp_path: Path, lab: LabServers, webhook: Webhook
) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    lab.add("a", A, "15.1.2176.2")
    lab.start("a")
    cmd = watch_cmd(tmp_path, "--alert", webhook.url, "--alert", f"file://{jsonl}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: ("exposed", "proxylogon") in changes(file_events(jsonl)))
        lab.update("a", mitigations=["proxylogon"])
        assert wait_for(lambda: ("protected", "proxylogon") in changes(file_events(jsonl)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # While the watch is dead the mitigation is rolled back; a restart sees it once.
    lab.update("a", mitigations=[])
    done = subprocess.run([*cmd, "--rounds", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr  # a vulnerable host
    expected = [("exposed", "proxylogon"), ("protected", "proxylogon"), ("protection_lost", "proxylogon")]
    assert changes(file_events(jsonl)) == expected
    assert changes(webhook.events) == expected
    ids = [e["id"] for e in file_events(jsonl)]
    assert len(ids) == len(set(ids))


def test_sigterm_ends_after_the_round(tmp_path: Path, lab: LabServers, webhook: Webhook) -> None:
    lab.add("a", A, "15.1.2176.2")
    lab.start("a")
    proc = subprocess.Popen(
        watch_cmd(tmp_path, "--alert", webhook.url, "--every", "1h"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_for(lambda: len(webhook.events) >= 1)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10  # not the hour of --every
    assert proc.returncode == 1, err
    assert "SIGTERM" in err
    assert {json.loads(line)["kind"] for line in out.splitlines()} == {"exposed"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "0s"], "--every"),
        (["--every", "soon"], "--every"),
        (["--alert", "ftp://example.org/x"], "--alert"),
        (["--alert", "syslog+udp://"], "--alert"),
        (["--rounds", "0"], "--rounds"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    cmd = [*EXWATCH, "watch", A, "--every", "1s", "--db", f"sqlite:///{tmp_path / 's.db'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr
    assert not (tmp_path / "s.db").exists()  # refused before the store is opened


def test_alert_latency_after_a_change(tmp_path: Path, lab: LabServers, webhook: Webhook) -> None:
    """From a state change in the lab to the webhook receiving its alert, with --every 1s."""
    lab.add("a", A, "15.1.2176.2")
    lab.start("a")
    proc = subprocess.Popen(
        watch_cmd(tmp_path, "--alert", webhook.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latencies = []
    try:
        assert wait_for(lambda: len(webhook.events) >= 3)  # the first round: exposed per wave
        for mitigations in (["proxylogon"], [], ["proxylogon"]):
            before = len(webhook.events)
            changed = time.monotonic()
            lab.update("a", mitigations=mitigations)
            assert wait_for(lambda b=before: len(webhook.events) > b)
            latencies.append(webhook.arrivals[before] - changed)
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"alert latency after a change (--every 1s): {', '.join(f'{s:.2f} s' for s in latencies)}")
    assert max(latencies) < 5.0
