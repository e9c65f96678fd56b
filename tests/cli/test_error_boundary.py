"""The root group's error boundary: a known error is one line ``exwatch: error: ...`` and its exit code."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from exwatch.cli.main import RootGroup, cli
from exwatch.errors import EvidenceError, InputError


def test_the_boundary_is_the_root_group_not_a_patch() -> None:
    assert isinstance(cli, RootGroup)
    assert "invoke" not in vars(cli)  # no instance attribute replacing click's method


def _group(exc: BaseException) -> click.Group:
    @click.group(cls=RootGroup)
    def root() -> None:
        pass

    @root.command("fail")
    def fail() -> None:
        raise exc

    return root


@pytest.mark.parametrize(
    ("exc", "code"),
    [(InputError("bad input"), 2), (EvidenceError("files unreadable"), 3)],
)
def test_an_exwatch_error_is_one_line_and_its_exit_code(exc: Exception, code: int) -> None:
    result = CliRunner().invoke(_group(exc), ["fail"])
    assert result.exit_code == code
    assert result.output == f"exwatch: error: {exc}\n"


def test_another_exception_is_not_swallowed() -> None:
    result = CliRunner().invoke(_group(ValueError("a bug")), ["fail"])
    assert isinstance(result.exception, ValueError)
    assert "exwatch: error" not in result.output


def test_a_bad_build_through_the_real_cli() -> None:
    result = CliRunner().invoke(cli, ["kb", "verdict", "15.x"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "exwatch: error: not an Exchange build: '15.x' (expected e.g. 15.1.2176.9 or 15.1.2176)"
    ]


def test_a_damaged_store_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"garbage" * 200)
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{db}", "report"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"exwatch: error: cannot read the store {db}: file is not a database"
    ]
    assert db.read_bytes() == b"garbage" * 200  # nothing written over it


def test_ctrl_c_in_a_command_without_its_own_handling_is_one_line_and_3(tmp_path: Path) -> None:
    """A real SIGINT to `exwatch lab triage` mid-write (it has no Ctrl-C handling of its own): one
    line and exit 3 (nothing found, not finished), not click's "Aborted!" and 1 ("something found")."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "exwatch", "lab", "triage", "--out", str(tmp_path / "pkg"), "--size", "3GB"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "pkg").exists() and time.monotonic() < deadline:  # writing has begun
            time.sleep(0.05)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3, err
    assert err.strip().splitlines() == ["exwatch: interrupted; what was written before it is kept"]
