"""Honest output of ``exwatch scan`` as a process: machine formats on stdout whatever stderr is
(a real pseudo-terminal, so the progress bar is drawn), Ctrl-C and a closed pipe per DESIGN.md, and
the per-host fold over a real lab with default-like ports (one port refused, one Exchange)."""

from __future__ import annotations

import csv
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exwatch.fleet import open_store
from exwatch.lab import run_fleet_in_thread
from exwatch.lab.spec import ServerSpec

pytestmark = pytest.mark.integration
HTTPS = 18443
ALT = 18444  # a second Exchange port on some hosts
REFUSED = 18080  # nothing listens: refused, as port 80 on most Exchange servers
VULN = "127.20.9.1"  # Exchange 2019 CU9: open to ProxyShell and ProxyNotShell
PATCHED = "127.20.9.2"  # Exchange 2019 CU14 Apr24HU
WEB = "127.20.9.3"  # nginx on HTTPS, Exchange nowhere
TWO = "127.20.9.4"  # Exchange on two ports with two different builds: a conflict
SLOW = "127.20.9.5"  # accepts and never answers
PORTS = f"{HTTPS}/https,{REFUSED}/http"


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    specs = [
        ServerSpec("vuln", VULN, HTTPS, "https", "Exchange 2019", "15.2.858.5"),
        ServerSpec("done", PATCHED, HTTPS, "https", "Exchange 2019", "15.2.1544.11"),
        ServerSpec("web", WEB, HTTPS, "https", "", None, variant="nginx"),
        ServerSpec("two-a", TWO, HTTPS, "https", "Exchange 2019", "15.2.1544.11"),
        ServerSpec("two-b", TWO, ALT, "https", "Exchange 2019", "15.2.858.5"),
        ServerSpec("slow", SLOW, HTTPS, "https", "", None, variant="silent"),
    ]
    with run_fleet_in_thread(specs) as fleet:
        yield fleet


def exwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "exwatch", *args]


def env(home: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "EXWATCH_DB"}
    out["EXWATCH_HOME"] = str(home)
    out["COLUMNS"] = "160"
    return out


def _read_all(fds: list[int], proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[int, bytes]:
    got: dict[int, bytes] = {fd: b"" for fd in fds}
    open_fds = list(fds)
    deadline = time.monotonic() + timeout
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(open_fds, [], [], 0.2)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            if not chunk:
                open_fds.remove(fd)
            else:
                got[fd] += chunk
        if proc.poll() is not None and not ready:
            break
    return got


def _check_machine_output(fmt: str, text: str) -> set[str]:
    """The hosts of a machine-format output; fails if anything else is in it."""
    assert "\x1b[" not in text, "terminal escape codes in machine output"
    if fmt == "json":
        return {h["address"] for h in json.loads(text)["hosts"]}
    if fmt == "jsonl":
        return {json.loads(line)["address"] for line in text.splitlines()}
    rows = list(csv.DictReader(io.StringIO(text)))
    assert all(r["fix"] for r in rows if r["proxyshell"] == "vulnerable")
    return {r["address"] for r in rows}


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
@pytest.mark.parametrize("stdout_tty", [False, True], ids=["stdout-file", "stdout-pty"])
def test_machine_formats_on_stdout_with_a_terminal(
    lab: Any, tmp_path: Path, fmt: str, stdout_tty: bool
) -> None:
    err_master, err_slave = os.openpty()
    out_master = out_slave = -1
    out_file = tmp_path / f"out.{fmt}"
    args = exwatch("scan", VULN, PATCHED, WEB, "--ports", PORTS, "--timeout", "2", "--format", fmt)
    with out_file.open("wb") as fh:
        if stdout_tty:
            out_master, out_slave = os.openpty()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out_slave if stdout_tty else fh,
            stderr=err_slave,
            env=env(tmp_path / "home"),
        )
        os.close(err_slave)
        if stdout_tty:
            os.close(out_slave)
        fds = [err_master] + ([out_master] if stdout_tty else [])
        got = _read_all(fds, proc)
        assert proc.wait(60) == 1
    stderr = got[err_master].decode("utf-8", "replace")
    os.close(err_master)
    if stdout_tty:
        stdout = got[out_master].decode().replace("\r\n", "\n")
        os.close(out_master)
    else:
        stdout = out_file.read_text(encoding="utf-8")
    assert stdout.strip(), f"nothing on stdout; stderr: {stderr}"
    assert _check_machine_output(fmt, stdout) == {VULN, PATCHED, WEB}
    assert "vulnerable host(s)" in stderr  # messages went to the terminal on stderr


def test_table_and_fold_over_a_refused_port(lab: Any, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    base = [
        "scan",
        VULN,
        TWO,
        WEB,
        "--ports",
        f"{PORTS},{ALT}/https",
        "--timeout",
        "2",
        "--db",
        f"sqlite:///{db}",
    ]
    proc = subprocess.run(
        exwatch(*base, "--format", "jsonl"), capture_output=True, env=env(tmp_path), timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    hosts = {h["address"]: h for h in map(json.loads, proc.stdout.decode().splitlines())}
    assert set(hosts) == {VULN, TWO, WEB}  # one record per host, not per port
    vuln = hosts[VULN]
    assert (vuln["status"], vuln["port"], vuln["build"], vuln["conflict"]) == (
        "exchange",
        HTTPS,
        "15.2.858.5",
        False,
    )
    assert {s["port"]: (s["status"], s["error"]) for s in vuln["services"]} == {
        HTTPS: ("exchange", None),
        REFUSED: ("unreachable", "refused"),
        ALT: ("unreachable", "refused"),
    }
    assert vuln["fix"] and vuln["fix_kb"]
    two = hosts[TWO]
    assert two["conflict"] is True and two["status"] == "exchange"
    assert two["waves"]["proxyshell"]["state"] == "vulnerable"  # the most exposed of the two builds
    assert two["waves"]["proxyshell"]["port"] == ALT
    assert hosts[WEB]["status"] == "not_exchange"
    with open_store(f"sqlite:///{db}") as store:  # every service is stored
        scan_id = store.latest_scan_id()
        assert scan_id is not None
        assert len(store.scan_done_keys(scan_id)) == 9
    table = subprocess.run(exwatch(*base), capture_output=True, env=env(tmp_path), timeout=60)
    text = table.stdout.decode()
    assert table.returncode == 1 and "(conflict)" in text and "KB" in text


def _interrupt(args: list[str], home: Path, after: float) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(home),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_ctrl_c_keeps_what_it_stored_and_exits_by_what_it_found(lab: Any, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    # The vulnerable host answers at once; the slow one holds the scan until Ctrl-C.
    args = exwatch(
        "scan",
        VULN,
        SLOW,
        "--ports",
        f"{HTTPS}/https",
        "--timeout",
        "20",
        "--host-budget",
        "30",
        "--format",
        "jsonl",
        "--db",
        f"sqlite:///{db}",
    )
    done = _interrupt(args, tmp_path, 4.0)
    err = done.stderr.decode()
    assert done.returncode == 1, err  # a vulnerable host was found before Ctrl-C
    lines = [x for x in err.splitlines() if x.startswith("exwatch:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in err and "Aborted" not in err
    assert [json.loads(x)["address"] for x in done.stdout.decode().splitlines()] == [VULN]
    with open_store(f"sqlite:///{db}") as store:
        scan_id = store.latest_scan_id()
        assert scan_id is not None and store.scan_done_keys(scan_id) == {f"https://{VULN}:{HTTPS}"}
    # Nothing found before Ctrl-C: exit 3, not 1.
    args = exwatch(
        "scan",
        PATCHED,
        SLOW,
        "--ports",
        f"{HTTPS}/https",
        "--timeout",
        "20",
        "--host-budget",
        "30",
        "--format",
        "jsonl",
        "--db",
        f"sqlite:///{db}",
    )
    done = _interrupt(args, tmp_path, 4.0)
    assert done.returncode == 3, done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_closed_pipe_is_one_line(lab: Any, tmp_path: Path) -> None:
    scan = subprocess.Popen(
        exwatch(
            "scan",
            "127.20.9.1-9",
            "--ports",
            f"{HTTPS}/https,{REFUSED}/http",
            "--timeout",
            "2",
            "--format",
            "jsonl",
            "--db",
            f"sqlite:///{tmp_path / 's.db'}",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(tmp_path),
    )
    assert scan.stdout is not None and scan.stderr is not None
    first = scan.stdout.readline()
    scan.stdout.close()  # as `| head -1` does
    err = scan.stderr.read().decode()
    code = scan.wait(60)
    assert json.loads(first)["address"].startswith("127.20.9.")
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    messages = [x for x in err.splitlines() if x.startswith("exwatch:")]
    assert len(messages) <= 1
    if messages:  # the pipe closed before the scan's end
        assert "output closed" in messages[0] and code in (1, 3)
    else:
        assert code in (1, 3)


def test_nothing_scannable_exits_2_and_stores_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    typo = subprocess.run(exwatch("scan", "127.70.0.1100"), capture_output=True, env=env(home), timeout=60)
    assert typo.returncode == 2
    assert typo.stderr.decode().strip().count("\n") == 0 and "127.70.0.1100" in typo.stderr.decode()
    empty = tmp_path / "targets.txt"
    empty.write_text("# nothing yet\n\n", encoding="utf-8")
    run = subprocess.run(
        exwatch("scan", "--targets-file", str(empty)), capture_output=True, env=env(home), timeout=60
    )
    assert run.returncode == 2 and "nothing to scan" in run.stderr.decode()
    assert not any(home.rglob("*.db")), "a store was created for a scan with nothing to scan"
    bad_wave = subprocess.run(
        exwatch("scan", VULN, "--wave", "proxylogin"), capture_output=True, env=env(home), timeout=60
    )
    assert bad_wave.returncode == 2 and "proxylogon, proxyshell, proxynotshell" in bad_wave.stderr.decode()
    bad_day = subprocess.run(
        exwatch("scan", VULN, "--as-of", "2021-13-01"), capture_output=True, env=env(home), timeout=60
    )
    assert bad_day.returncode == 2 and "--as-of" in bad_day.stderr.decode()


def test_wave_as_of_no_store_and_host_port(lab: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    # CU14 Apr24HU is patched for every wave today; as of 2021-03-10 the build did not exist, and
    # CU9 (15.2.858.5) is open to ProxyShell only through updates released after that day.
    base = [f"{VULN}:{HTTPS}", "--timeout", "2", "--no-store", "--format", "json"]
    only_logon = subprocess.run(
        exwatch("scan", *base, "--wave", "proxylogon"), capture_output=True, env=env(home), timeout=60
    )
    doc = json.loads(only_logon.stdout)
    assert only_logon.returncode == 0  # CU9 is patched for ProxyLogon; ProxyShell is open but not chosen
    assert doc["hosts"][0]["waves"]["proxyshell"]["state"] == "vulnerable"  # still reported
    assert doc["summary"]["waves_selected"] == ["proxylogon"]
    today = subprocess.run(exwatch("scan", *base), capture_output=True, env=env(home), timeout=60)
    assert today.returncode == 1
    early = subprocess.run(
        exwatch("scan", *base, "--as-of", "2021-04-20"), capture_output=True, env=env(home), timeout=60
    )
    host = json.loads(early.stdout)["hosts"][0]
    assert host["waves"]["proxyshell"]["state"] == "vulnerable"
    assert "2021-04-20" in host["waves"]["proxyshell"]["reason"]
    assert host["waves"]["proxylogon"]["state"] == "patched"
    assert not any(home.rglob("*.db")), "--no-store created a store"
    v6 = subprocess.run(
        exwatch("scan", "[::1]:8080", "--timeout", "1", "--no-store", "--format", "jsonl"),
        capture_output=True,
        env=env(home),
        timeout=60,
    )
    rec = json.loads(v6.stdout)
    assert v6.returncode == 3 and (rec["address"], rec["port"], rec["scheme"]) == ("::1", 8080, "http")
