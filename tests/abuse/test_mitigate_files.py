"""Hostile files around a web.config: planted links at the backup name, a config that is a link, a huge config.

Each test builds the hostile layout in a temporary folder, runs ``exwatch mitigate`` through the CLI, and
checks that nothing outside the folder was written and that the files it must not change are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.mitigate.files import DEFAULT_MAX_CONFIG_KB

SAMPLE = Path(__file__).resolve().parent.parent / "mitigate" / "data" / "other_rules_comments.config"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every entry below ``folder``: links by their target, files by their hash."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = sha256(p)
    return out


def _stamps(seconds: int = 5) -> list[str]:
    """The backup stamps ``mitigate`` may use in the next ``seconds`` seconds."""
    start = int(time.time())
    return [datetime.fromtimestamp(start + s, UTC).strftime("%Y%m%dT%H%M%SZ") for s in range(-1, seconds + 1)]


def test_planted_dangling_link_at_the_backup_name_is_never_followed(tmp_path: Path) -> None:
    """High: an attacker who can write the folder plants dangling links at every backup name the next
    seconds can produce; exwatch must not write the backup (a copy of the config) through any of them."""
    site = tmp_path / "site"
    site.mkdir()
    config = site / "web.config"
    config.write_bytes(SAMPLE.read_bytes())
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    for stamp in _stamps():
        for suffix in ("", *(f"-{n}" for n in range(1, 4))):
            link = site / f"web.config.exwatch-{stamp}{suffix}.bak"
            link.symlink_to(attacker / f"chosen-{stamp}{suffix}")
    before_links = {p.name: os.readlink(p) for p in site.iterdir() if p.is_symlink()}
    code, out, err = run("mitigate", "apply", "--web-config", str(config))
    assert code == 0, err
    assert list(attacker.iterdir()) == []  # nothing written where the links point
    assert {p.name: os.readlink(p) for p in site.iterdir() if p.is_symlink()} == before_links
    backups = [p for p in site.glob("web.config.exwatch-*.bak") if not p.is_symlink()]
    assert len(backups) == 1 and backups[0].read_bytes() == SAMPLE.read_bytes()
    assert b"PowerShell - inbound" in config.read_bytes()
    assert str(backups[0]) in out


def test_link_at_the_backup_name_to_an_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    """The same with links to an existing file the attacker wants clobbered (e.g. root's authorized_keys)."""
    site = tmp_path / "site"
    site.mkdir()
    config = site / "web.config"
    config.write_bytes(SAMPLE.read_bytes())
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    for stamp in _stamps():
        (site / f"web.config.exwatch-{stamp}.bak").symlink_to(victim)
    code, _, err = run("mitigate", "apply", "--web-config", str(config))
    assert code == 0, err
    assert victim.read_text() == "keep me\n"


def test_config_that_is_a_link_is_refused_without_follow_symlinks(tmp_path: Path) -> None:
    """Medium: web.config is a link to a file elsewhere; apply and rollback refuse it unless asked."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "important.config"
    target.write_bytes(SAMPLE.read_bytes())
    site = tmp_path / "site"
    site.mkdir()
    link = site / "web.config"
    link.symlink_to(target)
    before = tree(tmp_path)
    for action in ("apply", "rollback"):
        code, out, err = run("mitigate", action, "--web-config", str(link))
        assert code == 2, (out, err)
        assert err.startswith("exwatch: error: ") and err.count("\n") == 1
        assert "symbolic link" in err and "--follow-symlinks" in err
        assert tree(tmp_path) == before
    # Asked for, it edits the target, and leaves the link a link.
    code, out, err = run("mitigate", "apply", "--web-config", str(link), "--follow-symlinks")
    assert code == 0, err
    assert link.is_symlink() and b"PowerShell - inbound" in target.read_bytes()
    assert [p.read_bytes() for p in elsewhere.glob("*.bak")] == [SAMPLE.read_bytes()]


def test_huge_config_is_refused_at_once_with_one_line(tmp_path: Path) -> None:
    """Medium: a 300 MB web.config is refused in well under a second, without reading it."""
    config = tmp_path / "web.config"
    head = SAMPLE.read_bytes()
    with config.open("wb") as fh:
        fh.write(head)
        fh.truncate(300 * 1024 * 1024)  # sparse: costs no disk
    before = tree(tmp_path)
    for action in ("check", "apply", "rollback"):
        started = time.monotonic()
        code, out, err = run("mitigate", action, "--web-config", str(config))
        elapsed = time.monotonic() - started
        assert code == 2, (out, err)
        assert err.startswith("exwatch: error: ") and err.count("\n") == 1
        assert f"{DEFAULT_MAX_CONFIG_KB} KB" in err and "--max-size-kb" in err
        assert elapsed < 2.0
    assert tree(tmp_path) == before


def test_size_limit_can_be_raised(tmp_path: Path) -> None:
    """Just over the default limit: refused; with --max-size-kb raised, handled normally."""
    config = tmp_path / "web.config"
    text = SAMPLE.read_text()
    padding = "<!-- " + "x" * (DEFAULT_MAX_CONFIG_KB * 1024) + " -->\n"
    config.write_text(text.replace("<configuration>", "<configuration>\n" + padding, 1))
    digest = sha256(config)
    code, _, err = run("mitigate", "apply", "--web-config", str(config))
    assert code == 2 and "--max-size-kb" in err and sha256(config) == digest
    code, _, err = run("mitigate", "apply", "--web-config", str(config), "--max-size-kb", "1024")
    assert code == 0, err
    assert b"PowerShell - inbound" in config.read_bytes()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_config_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A FIFO would hang the read and /dev/zero never ends: neither is a web.config."""
    if kind == "fifo":
        config = tmp_path / "web.config"
        os.mkfifo(config)
    else:
        config = Path("/dev/zero")
    code, _, err = run("mitigate", "check", "--web-config", str(config))
    assert code == 2 and "not a regular file" in err
