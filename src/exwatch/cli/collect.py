"""``exwatch collect``: get the evidence off Exchange servers (a PowerShell script, WinRM, a mounted disk)
into a zip with a manifest, and verify such a zip."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

import click

from exwatch.cli.common import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    echo_json,
    format_option,
    parse_time,
    stderr_console,
)
from exwatch.errors import InputError

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def _max_bytes(text: str | None) -> int | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise InputError(f"--max-bytes {text!r} is not a size (examples: 2GB, 500MB, 3000000)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise InputError("--max-bytes must be more than 0")
    return value


def _since(text: str | None) -> datetime | None:
    return parse_time(text, "--since") if text else None


since_option = click.option(
    "--since",
    default=None,
    metavar="T",
    help="Leave out logs last written before this ISO 8601 time (UTC if no zone); events from it on.",
)
max_bytes_option = click.option(
    "--max-bytes",
    "max_bytes_text",
    default=None,
    metavar="N",
    help="At most this many bytes of evidence (e.g. 2GB); the newest logs are kept.",
)


@click.group("collect")
def collect() -> None:
    """Collect the evidence exwatch hunt reads from Exchange servers into a verifiable zip."""


@collect.command("script")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the script here (default: stdout).",
)
@since_option
@max_bytes_option
def script_cmd(out: Path | None, since: str | None, max_bytes_text: str | None) -> None:
    """Write the PowerShell collector (Windows PowerShell 5.1, nothing to install).

    Run it on the server as Administrator: powershell -ExecutionPolicy Bypass -File collect.ps1
    """
    from exwatch.collect import generate

    text = generate(since=_since(since), max_bytes=_max_bytes(max_bytes_text))
    if out is None:
        sys.stdout.write(text)
        return
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out / 'exwatch-collect.ps1'}")
    out.write_bytes(text.encode("ascii"))
    stderr_console().print(f"wrote {out} ({len(text)} bytes)", highlight=False)


@collect.command("verify")
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@format_option("table", "json")
def verify_cmd(zip_path: Path, fmt: str) -> None:
    """Check every member of a collection ZIP against its manifest (size, SHA-256, nothing extra or missing).

    Exit codes: 0 intact; 2 tampered, incomplete or malformed (one line names the first bad member).
    """
    from exwatch.collect import verify

    m = verify(zip_path)
    summary = {
        "zip": str(zip_path),
        "intact": True,
        "host": m.host,
        "collected_at": m.raw.get("collected_at"),
        "build": m.build,
        "files": len(m.files),
        "bytes": sum(f.size for f in m.files),
        "skipped": len(m.skipped),
        "listed_not_copied": sum(1 for i in m.listing if not i.copied),
    }
    if fmt == "json":
        echo_json(summary)
    else:
        click.echo(
            f"{zip_path}: intact, host {m.host}, collected {summary['collected_at']}, build {m.build or '?'}, "
            f"{summary['files']} files, {summary['bytes']} bytes, {summary['skipped']} skipped"
        )
    raise SystemExit(EXIT_OK)


@collect.command("tree")
@click.argument("root", metavar="MOUNT", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="The zip to write.")
@click.option("--host", required=True, help="The server's name (recorded in the manifest).")
@click.option(
    "--install-path",
    default="C:\\Program Files\\Microsoft\\Exchange Server\\V15\\",
    show_default=True,
    help="The Exchange install folder as Windows named it.",
)
@click.option("--build", default=None, help="The installed build, if known (stored with source collector).")
@since_option
@max_bytes_option
def tree_cmd(
    root: Path,
    out: Path,
    host: str,
    install_path: str,
    build: str | None,
    since: str | None,
    max_bytes_text: str | None,
) -> None:
    """Collect from a mounted system drive (a disk image) with the same rules as the script."""
    from exwatch.collect import collect_tree

    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    if out.exists():
        raise InputError(f"{out} exists already: the collector never overwrites a package")
    if root.resolve() in out.resolve().parents:
        raise InputError(f"--out {out} is inside the evidence {root}: write the package elsewhere")
    m = collect_tree(
        root,
        out,
        host=host,
        install=install_path,
        build=build,
        since=_since(since),
        max_bytes=_max_bytes(max_bytes_text),
    )
    stderr_console().print(
        f"wrote {out}: {len(m.files)} files, {sum(f.size for f in m.files)} bytes, "
        f"{len(m.skipped)} skipped, {sum(1 for i in m.listing if not i.copied)} listed only",
        highlight=False,
    )


@collect.command("winrm")
@click.argument("hosts", nargs=-1, required=True)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for HOST.zip files.",
)
@click.option(
    "--auth",
    type=click.Choice(["negotiate", "kerberos", "ntlm", "certificate"]),
    default="negotiate",
    show_default=True,
)
@click.option("--jobs", type=click.IntRange(1, 64), default=4, show_default=True, help="Servers at once.")
@click.option("--port", type=int, default=None, help="WinRM port (default 5986, or 5985 with --http).")
@click.option(
    "--http",
    "use_http",
    is_flag=True,
    help="Plain HTTP listener (messages still encrypted by negotiate/kerberos/ntlm).",
)
@click.option("--no-tls-verify", is_flag=True, help="Do not check the listener's TLS certificate.")
@click.option(
    "--cert",
    "cert_pem",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Client certificate (PEM) for --auth certificate.",
)
@click.option(
    "--cert-key",
    "cert_key_pem",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Its private key (PEM).",
)
@since_option
@max_bytes_option
@format_option("table", "json")
def winrm_cmd(
    hosts: tuple[str, ...],
    out: Path,
    auth: str,
    jobs: int,
    port: int | None,
    use_http: bool,
    no_tls_verify: bool,
    cert_pem: Path | None,
    cert_key_pem: Path | None,
    since: str | None,
    max_bytes_text: str | None,
    fmt: str,
) -> None:
    """Run the collector on HOST... over WinRM, fetch and verify each zip into --out, remove it from the server.

    Credentials: EXWATCH_WINRM_USER and EXWATCH_WINRM_PASSWORD, else a prompt (Kerberos without a user uses
    the ticket cache). Resumable: a host whose DIR/HOST.zip already verifies is not collected again.
    Exit codes: 0 every host collected; 3 some could not be; 2 bad input.
    """
    from dataclasses import replace

    try:
        from exwatch.collect import winrm
    except ImportError as exc:  # pragma: no cover - the collect extra is missing
        raise InputError(
            f"exwatch collect winrm needs pypsrp: pip install 'exwatch[collect]' ({exc})"
        ) from None

    if auth == "certificate" and not (cert_pem and cert_key_pem):
        raise InputError("--auth certificate needs --cert and --cert-key (PEM files)")
    since_at, max_bytes = _since(since), _max_bytes(max_bytes_text)

    def prompt(text: str, hidden: bool) -> str:
        if not sys.stdin.isatty():
            raise InputError(
                "no credentials: set EXWATCH_WINRM_USER and EXWATCH_WINRM_PASSWORD, or run from a terminal to be asked"
            )
        return str(click.prompt(text, hide_input=hidden, err=True))

    creds = winrm.credentials_from_env(auth, prompt)
    creds = replace(
        creds,
        port=port,
        ssl=not use_http,
        cert_validation=not no_tls_verify,
        cert_pem=str(cert_pem) if cert_pem else None,
        cert_key_pem=str(cert_key_pem) if cert_key_pem else None,
    )
    console = stderr_console()

    def progress(r: winrm.HostResult) -> None:
        if r.status == "failed":
            console.print(f"{r.host}: failed ({r.error_class}): {r.error}", highlight=False)
        else:
            console.print(f"{r.host}: {r.status} {r.zip} ({r.files} files, {r.bytes} bytes)", highlight=False)

    results = winrm.collect_hosts(
        hosts,
        out,
        winrm.psrp_factory(creds),
        jobs=jobs,
        since=since_at,
        max_bytes=max_bytes,
        progress=progress,
    )
    if fmt == "json":
        echo_json({"hosts": [r.to_dict() for r in results]})
    else:
        for r in results:
            line = f"{r.host}\t{r.status}\t" + (
                f"{r.error_class}\t{r.error}" if r.error_class else f"{r.zip}"
            )
            click.echo(line)
            for w in r.warnings:
                click.echo(f"{r.host}\twarning\t{w}")
    raise SystemExit(EXIT_INCOMPLETE if any(r.status == "failed" for r in results) else EXIT_OK)
