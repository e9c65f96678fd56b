"""``exwatch serve``: the missing extra, the loopback default, and the page in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lxml import html as lhtml
from webfill import HOSTILE_NAME, fill

from exwatch.cli.main import cli
from exwatch.cli.serve import is_loopback
from exwatch.fleet import open_store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.60.0.9", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("192.0.2.10", False), ("::", False), ("example.org", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_missing_web_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what an install without the extra looks like
    result = CliRunner().invoke(cli, ["serve", "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2
    assert "pip install 'exwatch[web]'" in result.output
    assert result.output.startswith("exwatch: error:")


def test_help_explains_authentication() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "users add NAME" in text and "loopback" in text and "token create" in text


def test_loopback_bind_accepts_only_loopback_host_headers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On loopback with no user it serves open, on the pre-bound socket; nothing is served in this test."""
    import uvicorn

    calls: list[Any] = []
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: calls.append((self, sockets[0].getsockname()))
    )
    open_store(f"sqlite:///{tmp_path / 's.db'}").close()  # serve never creates a store
    result = CliRunner().invoke(cli, ["serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "open: no dashboard user yet" in result.stderr
    server, address = calls[0]
    assert address[0] == "127.0.0.1" and address[1] > 0
    assert server.config.ssl_certfile is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chromium() -> str:
    if os.path.exists(CHROMIUM) or shutil.which("chromium"):
        return CHROMIUM if os.path.exists(CHROMIUM) else str(shutil.which("chromium"))
    message = "chromium is missing: run `bash scripts/system-deps.sh browser` (make test does)"
    if os.environ.get("CI") or os.environ.get("CI_REQUIRE_POSTGRES"):
        pytest.fail(message)
    pytest.skip(message)


def _wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"exwatch serve exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(url + "api/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("exwatch serve did not answer in time")


@pytest.mark.integration
@pytest.mark.slow
def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    db = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(db) as store:
        fill(store)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "EXWATCH_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exwatch", "serve", "--db", db, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_ready(url, proc)
        with urllib.request.urlopen(url + "api/summary", timeout=10) as resp:
            headline = json.load(resp)["headline"]
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
        dom = subprocess.run(
            [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        shot = tmp_path / "dashboard.png"
        subprocess.run(
            [chromium, *flags, "--window-size=1280,1800", f"--screenshot={shot}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    doc = lhtml.fromstring(dom)
    assert " ".join(doc.get_element_by_id("headline").text_content().split()) == " ".join(headline.split())
    hosts = doc.get_element_by_id("hosts")
    addresses = [tr.findall("td")[1].text_content() for tr in hosts.iter("tr") if tr.findall("td")]
    assert len(addresses) == 12 and "127.60.0.1" in addresses and "127.60.0.13" in addresses
    assert doc.findall(".//script") == [] and doc.findall(".//img") == []
    assert HOSTILE_NAME.lower() in doc.text_content()  # shown as text, not run
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1800)
    keep = os.environ.get("EXWATCH_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
