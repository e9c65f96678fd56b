"""The README's "whole loop in five minutes", run exactly as written, each step's exit code checked.

The commands are read from README.md (the code block of that section), not copied here, so the test
and the README cannot drift. Each runs as a subprocess through ``sh`` in a temporary folder with
EXWATCH_HOME set there; the backgrounded ``lab serve`` is stopped at the end and ``serve`` is started,
probed and stopped with SIGINT.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

# The contract per command (DESIGN.md): what each step must exit with on the lab.
EXPECTED = {
    "exwatch scan --targets-file fleet.json --probe": {1},  # the lab fleet has vulnerable servers
    "exwatch scan 127.70.0.0/24 --format jsonl > scan.jsonl": {1},
    "exwatch lab triage --out pkg --size 20MB --seed 3": {0},
    "exwatch hunt pkg --format json > findings.json": {1},  # the package has planted attacks
    "exwatch mitigate verify https://127.70.0.11/ --wave proxylogon": {0, 1},  # vulnerable, then mitigated
    "exwatch mitigate apply --web-config lab-state/host0011/web.config --wave proxylogon": {0},
    "exwatch mitigate rollback --web-config lab-state/host0011/web.config --wave proxylogon": {0},
    "exwatch report": {0, 1},
    "exwatch report --format html --out report.html": {0, 1},
}

# Steps of the README that fail for a reason outside the scanner, reported to the lead; the test still
# runs every other step, fails on any other failure, and fails when one of these starts to pass.
KNOWN_BROKEN: dict[str, str] = {}


def readme_loop() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The whole loop in five minutes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "the README's five-minute loop has no code block"
    commands = []
    for line in block.group(1).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        commands.append(re.sub(r"\s+#.*$", "", line).strip())
    return commands


def _bin_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EXWATCH_DB"}
    env["EXWATCH_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), f"{path.name} did not appear"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the README's loop scans ports 443 and 80: the lab binds them as root"
)
def test_readme_five_minute_loop(tmp_path: Path) -> None:
    commands = readme_loop()
    env = _bin_env(tmp_path / "home")
    background: list[subprocess.Popen[bytes]] = []
    results: dict[str, int] = {}
    failures: dict[str, str] = {}
    verifies: list[int] = []
    try:
        for cmd in commands:
            if cmd.endswith("&"):
                proc = subprocess.Popen(
                    ["sh", "-c", f"exec {cmd[:-1].strip()}"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                background.append(proc)
                manifest = re.search(r"--manifest (\S+)", cmd)
                if manifest:
                    _wait_for(tmp_path / manifest.group(1), 60)
                continue
            if cmd == "exwatch serve":
                proc = subprocess.Popen(
                    ["sh", "-c", f"exec {cmd}"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                deadline = time.monotonic() + 20
                while not _port_open(8000) and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                started = proc.poll() is None and _port_open(8000)
                proc.send_signal(signal.SIGINT)
                _out, err = proc.communicate(timeout=20)
                results[cmd] = proc.returncode
                if not started or proc.returncode != 0:
                    failures[cmd] = f"started={started}, exit {proc.returncode}: {err.decode()[-500:]}"
                continue
            done = subprocess.run(["sh", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, timeout=300)
            if cmd.startswith("exwatch mitigate verify"):
                verifies.append(done.returncode)
            results[cmd] = done.returncode
            want = EXPECTED.get(cmd)
            assert want is not None, f"a new step in the README's loop: {cmd!r}; add its exit code here"
            if done.returncode not in want:
                failures[cmd] = f"exit {done.returncode}, want {sorted(want)}: {done.stderr.decode()[-800:]}"
    finally:
        for proc in background:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    unexpected = {c: why for c, why in failures.items() if c not in KNOWN_BROKEN}
    assert not unexpected, unexpected
    fixed = [c for c in KNOWN_BROKEN if c in results and c not in failures]
    assert not fixed, f"these README steps work now: remove them from KNOWN_BROKEN: {fixed}"
    # the same verify, before and after apply: the lab server host0011 is vulnerable, then mitigated
    assert verifies == [1, 0], verifies
    assert (tmp_path / "scan.jsonl").stat().st_size > 0
    assert (tmp_path / "report.html").stat().st_size > 0
    assert set(results) >= set(EXPECTED) | {"exwatch serve"}
    if failures:
        pytest.xfail(
            "README loop steps broken outside the scanner: " + "; ".join(KNOWN_BROKEN[c] for c in failures)
        )
