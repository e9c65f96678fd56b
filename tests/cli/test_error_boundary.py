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
