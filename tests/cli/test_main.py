"""The root command: version, help, one-line errors, and every command documented in the README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from exwatch import __version__
from exwatch.cli.main import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _all_commands(group: click.Group, ctx: click.Context, prefix: str) -> list[str]:
    names = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None:
            continue
        full = f"{prefix} {name}"
        names.append(full)
        if isinstance(command, click.Group):
            names.extend(_all_commands(command, click.Context(command, parent=ctx), full))
    return names


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_python_m_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "exwatch", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout


def test_every_registered_command_imports() -> None:
    ctx = click.Context(cli)
    missing = [name for name in COMMANDS if cli.get_command(ctx, name) is None]
    assert missing == [], f"registered but not implemented: {missing}"


def test_every_command_has_help_and_is_in_readme() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in [README, *DOCS])
    ctx = click.Context(cli)
    commands = _all_commands(cli, ctx, "exwatch")
    assert len(commands) >= len(COMMANDS)
    undocumented = [c for c in commands if not re.search(re.escape(c) + r"\b", text)]
    assert undocumented == [], f"commands missing from README.md and docs/: {undocumented}"
    for full in commands:
        parts = full.split()[1:]
        result = CliRunner().invoke(cli, [*parts, "--help"])
        assert result.exit_code == 0, (full, result.output)
        assert len(result.output.strip().splitlines()) > 2, full


def _refused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: a refused port


def test_quiet_and_verbose_work_after_the_sub_command(tmp_path: Path) -> None:
    """`exwatch scan X -v` / `-q` act as `exwatch -v scan X` / `-q` (not a usage error)."""
    port = _refused_port()
    db = f"sqlite:///{tmp_path / 'q.db'}"
    scan = ["scan", f"127.0.0.1:{port}", "--ports", str(port), "--db", db, "--timeout", "1"]
    after_v = CliRunner().invoke(cli, [*scan, "-vv"])
    before_v = CliRunner().invoke(cli, ["-vv", *scan])
    assert after_v.exit_code == before_v.exit_code == 3, after_v.output
    # -vv prints the scan's start and its progress line on stderr, wherever the flag stands.
    assert "service(s) to try" in after_v.stderr and "service(s) to try" in before_v.stderr
    after_q = CliRunner().invoke(cli, [*scan, "-q", "-v"])  # quiet wins over a later -v
    assert after_q.exit_code == 3, after_q.output
    assert after_q.stderr == ""
    # A group's sub-command takes them too; its errors still reach stderr.
    listed = CliRunner().invoke(cli, ["hosts", "list", "-q", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert listed.exit_code == 2 and "no store at" in listed.stderr


def test_every_command_takes_quiet_and_verbose() -> None:
    ctx = click.Context(cli)
    for name in _all_commands(cli, ctx, "exwatch"):
        command: click.Command = cli
        for part in name.split()[1:]:
            assert isinstance(command, click.Group)
            found = command.get_command(ctx, part)
            assert found is not None
            command = found
        opts = {opt for param in command.params for opt in param.opts}
        assert {"-q", "-v"} <= opts, f"{name} lacks -q or -v"


WRITER = r"""
import signal, sys
if sys.argv[1] == "whole":
    from exwatch.cli.main import whole_writes
    whole_writes()
signal.signal(signal.SIGUSR1, lambda *a: None)  # a handled signal, as asyncio's Ctrl-C handler
print("ready", file=sys.stderr, flush=True)
sys.stdout.write("x" * 2_000_000 + "\n")
sys.stdout.flush()
"""


def _written_under_a_signal(mode: str) -> int:
    import os
    import signal
    import time

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stderr is not None and proc.stdout is not None
    assert proc.stderr.readline() == b"ready\n"
    time.sleep(0.3)  # the write is now blocked on the full pipe
    proc.send_signal(signal.SIGUSR1)
    out = proc.stdout.read()
    proc.wait(30)
    return len(out)


def test_stdout_writes_whole_under_signals() -> None:
    """With PYTHONUNBUFFERED=1 a signal during a blocked write to a pipe cut the output short; the
    CLI's stdout (whole_writes) writes all of it."""
    assert _written_under_a_signal("whole") == 2_000_001
    # The case it guards against, seen on this machine: the raw write keeps only what the pipe took.
    assert _written_under_a_signal("raw") < 2_000_001
