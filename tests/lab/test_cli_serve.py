"""``exwatch lab serve`` as a process: manifest once listening, answers, clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.lab import ServerSpec

from .conftest import PROXYLOGON_COOKIE, fetch

pytestmark = pytest.mark.integration


def test_serve_drawn_fleet_until_sigterm(tmp_path: Path) -> None:
    manifest = tmp_path / "fleet.json"
    logs = tmp_path / "logs"
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exwatch",
            "lab",
            "serve",
            "--fleet",
            "12",
            "--seed",
            "5",
            "--only-exchange",
            "--base-address",
            "127.10.6.1",
            "--https-port",
            "18443",
            "--http-port",
            "18080",
            "--manifest",
            str(manifest),
            "--log-dir",
            str(logs),
            "--state-dir",
            str(state),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not manifest.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        data = json.loads(manifest.read_text())
        servers = data["servers"]
        assert len(servers) == 12 and "BEGIN CERTIFICATE" in data["ca_pem"]
        for entry in servers:
            assert set(entry) >= {
                "address",
                "port",
                "scheme",
                "name",
                "product",
                "build",
                "mitigations",
                "variant",
                "truth",
                "truth_passive",
            }
            assert set(entry["truth"]) == {"proxylogon", "proxyshell", "proxynotshell"}
            assert entry["web_config"] == str(state / entry["name"] / "web.config")
            spec = ServerSpec(
                entry["name"],
                entry["address"],
                entry["port"],
                entry["scheme"],
                entry["product"],
                entry["build"],
                entry["mitigations"],
                entry["variant"],
            )
            answer = fetch(spec, "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE})
            localhost = answer.header("X-CalculatedBETarget") == "localhost"
            assert localhost == (
                entry["truth"]["proxylogon"] == "vulnerable" and not entry["product"].endswith("2010")
            ), entry
        assert any(p.name.startswith("HttpProxy_") for p in logs.rglob("*.LOG"))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "lab: stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_spec_file_with_duration(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps([{"name": "one", "address": "127.10.6.100", "port": 18443, "variant": "iis"}])
    )
    manifest = tmp_path / "m.json"
    result = CliRunner().invoke(
        cli, ["lab", "serve", "--spec", str(spec_file), "--manifest", str(manifest), "--duration", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(manifest.read_text())["servers"][0]["truth"]["proxylogon"] == "not_exchange"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --fleet N or --spec FILE"),
        (["--fleet", "2", "--share", "bogus=1"], "--share expects VARIANT=SHARE"),
        (["--fleet", "2", "--base-address", "10.1.1.1"], "loopback"),
    ],
)
def test_serve_bad_input(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["lab", "serve", *args])
    assert result.exit_code == 2
    assert message in result.output
