"""``exwatch mitigate``: check, apply, roll back and verify the IIS URL Rewrite mitigations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from exwatch.cli.common import (
    EXIT_OK,
    db_option,
    echo_json,
    exit_code_for,
    format_option,
    resolve_db,
    stderr_console,
)
from exwatch.config import ENV_DB, default_db_url
from exwatch.mitigate import DEFAULT_MAX_CONFIG_KB, MITIGATED_WAVES

if TYPE_CHECKING:
    from exwatch.mitigate import BuildFix

WAVE_CHOICES = click.Choice([*MITIGATED_WAVES, "all"], case_sensitive=False)

wave_option = click.option(
    "--wave", default="all", show_default=True, type=WAVE_CHOICES, help="Which wave's rules."
)
web_config_option = click.option(
    "--web-config",
    "web_config",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help=r"The Default Web Site's web.config (normally %SystemDrive%\inetpub\wwwroot\web.config).",
)
max_size_option = click.option(
    "--max-size-kb",
    "max_kb",
    type=click.IntRange(1, 4 * 1024 * 1024),
    default=DEFAULT_MAX_CONFIG_KB,
    show_default=True,
    help="Refuse a web.config larger than this (IIS reads at most 250 KB unless MaxWebConfigFileSizeInKB is raised).",
)
follow_option = click.option(
    "--follow-symlinks",
    is_flag=True,
    help="Edit the target of a web.config that is a symbolic link (refused by default: it may point anywhere).",
)


@click.group()
def mitigate() -> None:
    """Check, apply, roll back and verify the IIS URL Rewrite mitigations (ProxyLogon, ProxyNotShell).

    The rules are a temporary mitigation: install the security update, and check again after every CU
    (a CU install removes the rules).
    """


def _fix_line(wave: str, fix: BuildFix | None) -> str | None:
    """One line naming the update that fixes ``wave`` for the known build."""
    if not fix:
        return None
    if fix.state == "patched":
        return f"{wave}: build {fix.build} is patched; the rules are no longer needed (mitigate rollback)"
    return f"{wave}: build {fix.build} is {fix.state}: {fix.text}"


@mitigate.command("check")
@web_config_option
@wave_option
@click.option(
    "--exchange-path",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help=r"Exchange install folder: also read every web.config under FrontEnd\HttpProxy for <clear/> and <remove>.",
)
@click.option("--build", default=None, help="The server's build, to name the security update that fixes it.")
@max_size_option
@format_option("table", "json")
def check_cmd(
    web_config: Path, wave: str, exchange_path: Path | None, build: str | None, max_kb: int, fmt: str
) -> None:
    """Validate the rules in a web.config like Microsoft's HealthChecker.

    Exit 0 when every wave is mitigated, 1 when one is not, 3 when a child config could not be read.
    """
    from exwatch.mitigate import check

    result = check(web_config, wave, exchange_path=exchange_path, build=build, max_kb=max_kb)
    if fmt == "json":
        echo_json(result.to_dict())
    else:
        out = Console(highlight=False, soft_wrap=True)
        table = Table(title=f"mitigation rules in {web_config}")
        for col in ("wave", "rule", "status"):
            table.add_column(col, no_wrap=True)
        table.add_column("detail", overflow="fold")
        for wave_id, wc in result.waves.items():
            for rs in wc.rules:
                detail = "; ".join(rs.problems) or (f"present as {rs.found_as!r}" if rs.found_as else "")
                table.add_row(wave_id, rs.rule.name, rs.status, detail)
        out.print(table)
        for wave_id, wc in result.waves.items():
            out.print(f"{wave_id}: {wc.state} ({wc.reason})")
            for o in wc.overrides:
                out.print(f"  {o.file}: {o.kind} {', '.join(o.names)}")
            line = _fix_line(wave_id, wc.fix)
            if line:
                out.print(f"  {line}")
        for w in result.warnings:
            out.print(f"warning: {w}")
        for e in result.errors:
            out.print(f"unreadable: {e['file']}: {e['error']}")
        stderr_console().print(result.to_dict()["note"], highlight=False, soft_wrap=True)
    raise SystemExit(exit_code_for(result.not_mitigated, result.incomplete))


def _print_change(result: Any, fmt: str) -> None:
    if fmt == "json":
        echo_json(result.to_dict())
        return
    out = Console(highlight=False, soft_wrap=True)
    verb = {"apply": "added", "rollback": "removed"}[result.action]
    names = result.added + result.replaced if result.action == "apply" else result.removed
    if result.changed:
        out.print(f"{result.path}: {verb} {len(names)} rule(s): {', '.join(names)}")
        if result.replaced:
            out.print(f"  replaced (--force): {', '.join(result.replaced)}")
        out.print(f"  backup: {result.backup}")
    else:
        out.print(f"{result.path}: unchanged (nothing to {result.action})")
    if result.present and result.action == "apply":
        out.print(f"  already present: {', '.join(result.present)}")


@mitigate.command("apply")
@web_config_option
@wave_option
@click.option(
    "--force", is_flag=True, help="Replace a rule that has the mitigation's name but a wrong definition."
)
@follow_option
@max_size_option
@format_option("table", "json")
def apply_cmd(web_config: Path, wave: str, force: bool, follow_symlinks: bool, max_kb: int, fmt: str) -> None:
    """Add the rules to a web.config: idempotent, atomic, with a timestamped backup next to it.

    The rest of the file is kept byte for byte (comments, attribute order, whitespace, BOM, newlines).
    """
    from exwatch.mitigate import apply

    result = apply(web_config, wave, force=force, follow_symlinks=follow_symlinks, max_kb=max_kb)
    _print_change(result, fmt)
    stderr_console().print(result.to_dict()["note"], highlight=False, soft_wrap=True)


@mitigate.command("rollback")
@web_config_option
@wave_option
@follow_option
@max_size_option
@format_option("table", "json")
def rollback_cmd(web_config: Path, wave: str, follow_symlinks: bool, max_kb: int, fmt: str) -> None:
    """Remove the rules (by name, as EOMT's rollback) and what apply created; nothing else.

    Roll back after the security update is installed: before it, the server is exposed again.
    """
    from exwatch.mitigate import rollback

    result = rollback(web_config, wave, follow_symlinks=follow_symlinks, max_kb=max_kb)
    _print_change(result, fmt)


@mitigate.command("script")
@wave_option
@click.option(
    "--action",
    default="all",
    show_default=True,
    type=click.Choice(["apply", "check", "rollback", "all"]),
    help="Which commands; 'all' prints apply and check, and rollback commented out.",
)
def script_cmd(wave: str, action: str) -> None:
    """Print the PowerShell (WebAdministration) commands that apply, check or roll back the rules by hand."""
    from exwatch.mitigate import powershell

    click.echo(powershell(wave, action), nl=False)


def _store_url(db_url: str | None, no_store: bool) -> str | None:
    """The store to write to: an explicit one, or the default one when it exists already."""
    if no_store:
        return None
    url = resolve_db(db_url)
    if db_url or os.environ.get(ENV_DB) or url != default_db_url():
        return url
    path = url.removeprefix("sqlite:///")
    return url if url.startswith("sqlite:///") and Path(path).is_file() else None


@mitigate.command("verify")
@click.argument("targets", nargs=-1, required=True)
@wave_option
@click.option("--build", default=None, help="The servers' build, to combine with the probe and name the fix.")
@click.option("--timeout", default=5.0, show_default=True, type=float, help="Seconds per request.")
@click.option("--no-store", is_flag=True, help="Do not record the results in the store.")
@db_option
@format_option("table", "json")
def verify_cmd(
    targets: tuple[str, ...],
    wave: str,
    build: str | None,
    timeout: float,
    no_store: bool,
    db_url: str | None,
    fmt: str,
) -> None:
    """Probe TARGETS (host, host:port or URL) with each wave's attack-shaped and control requests.

    Reads mitigated, vulnerable, patched or inconclusive per wave, and records the run in the store
    (kind "verify") when it exists. Authorised targets only. Exit 1 when a target is vulnerable,
    3 when a result is inconclusive.
    """
    from exwatch.mitigate import verify

    err = stderr_console()
    store_url = _store_url(db_url, no_store)
    result = verify(list(targets), wave, build=build, timeout=timeout, store_url=store_url)
    if fmt == "json":
        echo_json(result.to_dict())
    else:
        out = Console(highlight=False, soft_wrap=True)
        table = Table(title="mitigation verification")
        for col in ("target", "wave", "result", "state"):
            table.add_column(col, no_wrap=True)
        table.add_column("reason", overflow="fold")
        for tr in result.results:
            for wave_id, w in tr.waves.items():
                reason = w.reason
                if not w.validated and "unvalidated" not in reason:
                    reason += " (unvalidated probe)"
                table.add_row(tr.target.text, wave_id, w.result, w.state, reason)
        out.print(table)
        for tr in result.results:
            for wave_id, w in tr.waves.items():
                line = _fix_line(wave_id, w.fix)
                if line:
                    out.print(f"{tr.target.text} {line}")
    if result.scan_id is not None:
        err.print(f"stored as run {result.scan_id} (kind verify)", highlight=False)
    elif store_url is None and not no_store:
        err.print("no store yet: results not recorded (give --db to record them)", highlight=False)
    err.print(result.to_dict()["note"], highlight=False, soft_wrap=True)
    code = exit_code_for(result.vulnerable, result.incomplete)
    if code != EXIT_OK:
        raise SystemExit(code)
