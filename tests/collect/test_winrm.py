"""The WinRM glue without a Windows server: a fake session (injected through the factory seam) plays the
server's side from a real package made by the reference collector, and raises pypsrp's own exceptions for
the failure classes. Not run here: a real WinRM listener, Kerberos/NTLM/certificate handshakes, the script
itself on Windows (docs/collect.md says so)."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from exwatch.collect import winrm
from exwatch.collect.manifest import verify


class FakeServer:
    """One Exchange server as the runner sees it: runs the collector, serves the zip, removes it."""

    def __init__(self, package: Path, *, script_error: str | None = None, corrupt: bool = False) -> None:
        self.package = package
        self.script_error = script_error
        self.corrupt = corrupt
        self.remote: Path | None = None
        self.scripts: list[str] = []
        self.closed = False

    def run(self, script: str) -> tuple[list[str], list[str]]:
        self.scripts.append(script)
        if "Invoke-Collection" in script:
            assert "%windir%\\Temp\\exwatch-collect-" in script
            if self.script_error:
                return [], [self.script_error]
            self.remote = self.package.parent / ("remote-" + self.package.name)
            shutil.copy(self.package, self.remote)
            return ['EXWATCH-RESULT {"zip":"' + str(self.remote).replace("\\", "\\\\") + '","files":3}'], []
        assert self.remote is not None
        if "Get-FileHash" in script:
            data = self.remote.read_bytes()
            return [str(len(data)), hashlib.sha256(data).hexdigest().upper()], []
        m = re.search(r"Seek\((\d+), 'Begin'\); \$b = New-Object byte\[\] (\d+)", script)
        if m:
            off, n = int(m.group(1)), int(m.group(2))
            chunk = self.remote.read_bytes()[off : off + n]
            if self.corrupt and off == 0:
                chunk = b"\x00" + chunk[1:]
            return [base64.b64encode(chunk).decode()], []
        if "Remove-Item" in script:
            self.remote.unlink()
            return [], []
        raise AssertionError(f"unexpected script: {script[:80]}")

    def close(self) -> None:
        self.closed = True


def test_collects_verifies_and_removes_the_remote_zip(
    lab_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(winrm, "CHUNK", 64 * 1024)  # several chunks
    servers: dict[str, FakeServer] = {}

    def factory(host: str) -> FakeServer:
        servers[host] = FakeServer(_copy(lab_zip, tmp_path / host))
        return servers[host]

    out = tmp_path / "out"
    (result,) = winrm.collect_hosts(["exch01.corp.example"], out, factory, jobs=2)
    assert result.status == "collected" and result.error_class is None, result
    local = out / "exch01.corp.example.zip"
    assert local.read_bytes() == lab_zip.read_bytes()
    assert verify(local).host == "EXCH01" and result.build == "15.1.2176.2"
    server = servers["exch01.corp.example"]
    assert server.remote is not None and not server.remote.exists()  # removed after the local copy verified
    assert server.closed
    assert sum("Seek(" in s for s in server.scripts) > 2

    # Resumable: a host whose verified zip is there is not contacted again.
    calls: list[str] = []

    def no_call(host: str) -> FakeServer:
        calls.append(host)
        raise AssertionError("contacted again")

    (again,) = winrm.collect_hosts(["exch01.corp.example"], out, no_call)
    assert again.status == "resumed" and calls == []


def test_a_damaged_local_zip_is_kept_aside_and_collected_again(lab_zip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "h1.zip").write_bytes(b"PK\x03\x04 cut short")
    (result,) = winrm.collect_hosts(["h1"], out, lambda h: FakeServer(_copy(lab_zip, tmp_path / h)))
    assert result.status == "collected"
    assert [p.name.split("-")[0] for p in out.glob("h1.zip.invalid-*")] == ["h1.zip.invalid"]


def test_a_transfer_that_does_not_match_is_fetch_failed(lab_zip: Path, tmp_path: Path) -> None:
    server = FakeServer(_copy(lab_zip, tmp_path / "h"), corrupt=True)
    (result,) = winrm.collect_hosts(["h"], tmp_path / "out", lambda h: server)
    assert (result.status, result.error_class) == ("failed", "fetch_failed")
    assert "differs" in (result.error or "")
    assert not (tmp_path / "out" / "h.zip").exists()
    assert server.remote is not None and server.remote.exists()  # not removed: it was never verified here
    assert any("stays on the server" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (requests.exceptions.ConnectionError("Max retries exceeded: connection refused"), "unreachable"),
        (requests.exceptions.ConnectTimeout("timed out"), "unreachable"),
        (AuthenticationError("Failed to authenticate the user exwatch with ntlm"), "auth"),
        (WinRMTransportError("http", 401, "Unauthorized"), "auth"),
        (WinRMTransportError("http", 500, "Internal"), "unreachable"),
        (WSManFaultError(5, "EXCH01", "Access is denied.", 5, None, None), "auth"),
    ],
)
def test_connection_failures_are_classed(error: Exception, expected: str, tmp_path: Path) -> None:
    def factory(host: str) -> Any:
        raise error

    (result,) = winrm.collect_hosts(["h"], tmp_path, factory)
    assert (result.status, result.error_class) == ("failed", expected)
    assert result.error and "\n" not in result.error


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("exwatch-collect: not_exchange: no Exchange 2013 or later install", "not_exchange"),
        ("exwatch-collect: not_admin: run this script as Administrator", "script_failed"),
        ('Exception calling "Open" with "4" argument(s): disk full', "script_failed"),
    ],
)
def test_script_failures_are_classed(message: str, expected: str, lab_zip: Path, tmp_path: Path) -> None:
    server = FakeServer(lab_zip, script_error=message)
    (result,) = winrm.collect_hosts(["h"], tmp_path / "out", lambda h: server)
    assert (result.status, result.error_class) == ("failed", expected)
    assert server.closed and not (tmp_path / "out" / "h.zip").exists()


def test_hosts_run_in_parallel_and_keep_their_order(lab_zip: Path, tmp_path: Path) -> None:
    def factory(host: str) -> Any:
        if host == "down":
            raise requests.exceptions.ConnectionError("no route")
        return FakeServer(_copy(lab_zip, tmp_path / host))

    results = winrm.collect_hosts(["a", "down", "b", "a"], tmp_path / "out", factory, jobs=3)
    assert [(r.host, r.status) for r in results] == [
        ("a", "collected"),
        ("down", "failed"),
        ("b", "collected"),
    ]


def test_credentials_come_from_the_environment_or_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXWATCH_WINRM_USER", "CORP\\ir")
    monkeypatch.setenv("EXWATCH_WINRM_PASSWORD", "s3cret")
    c = winrm.credentials_from_env("ntlm", None)
    assert (c.username, c.password) == ("CORP\\ir", "s3cret") and "s3cret" not in repr(c)
    monkeypatch.delenv("EXWATCH_WINRM_PASSWORD")
    asked: list[tuple[str, bool]] = []
    c = winrm.credentials_from_env("negotiate", lambda text, hidden: asked.append((text, hidden)) or "typed")
    assert c.password == "typed" and asked == [("password for CORP\\ir", True)]
    monkeypatch.delenv("EXWATCH_WINRM_USER")
    c = winrm.credentials_from_env("kerberos", lambda text, hidden: "never")
    assert c.username is None and c.password is None  # the ticket cache


def test_the_pypsrp_session_is_built_with_the_chosen_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    """PsrpSession hands the options to pypsrp's own WSMan (which checks them) and opens a runspace pool;
    the pool's open is stopped before any network traffic."""
    from pypsrp.powershell import RunspacePool

    seen: dict[str, Any] = {}

    def fake_open(self: Any) -> None:
        seen["wsman"] = self.connection
        raise requests.exceptions.ConnectionError("stopped before the network")

    monkeypatch.setattr(RunspacePool, "open", fake_open)
    creds = winrm.Credentials(auth="ntlm", username="u", password="p", ssl=False)
    with pytest.raises(requests.exceptions.ConnectionError):
        winrm.PsrpSession("exch01", creds)
    wsman = seen["wsman"]
    assert wsman.transport.auth == "ntlm" and wsman.transport.endpoint.startswith("http://exch01:5985/")
    with pytest.raises(ValueError, match="not supported"):
        winrm.PsrpSession("exch01", winrm.Credentials(auth="digest"))


def test_cli_refuses_missing_credentials_without_a_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exwatch.cli.main import main

    monkeypatch.delenv("EXWATCH_WINRM_USER", raising=False)
    monkeypatch.delenv("EXWATCH_WINRM_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["collect", "winrm", "exch01", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "EXWATCH_WINRM_USER" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["collect", "winrm", "exch01", "--out", str(tmp_path), "--auth", "certificate"])
    assert exc.value.code == 2


def _copy(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, folder / "pkg.zip"))
