"""``exwatch serve``: the web dashboard and read-only JSON API over the store (uvicorn)."""

from __future__ import annotations

import ipaddress

import click

from exwatch.cli.common import db_option, resolve_db, stderr_console, verbosity
from exwatch.config import mask_url

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for a loopback address or the name localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Keep it on loopback: the dashboard has no authentication.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to bind.")
def serve(db_url: str | None, host: str, port: int) -> None:
    """Serve the dashboard and the read-only JSON API over the store.

    The page (/) shows the headline, the per-wave table, the protected-share chart, the exposed servers
    with their fix and the servers compromised before they were protected; /hosts/ID shows one host.
    The API is under /api (summary, snapshots, hosts, hosts/ID, findings, health; OpenAPI at /api/openapi.json).

    There is NO authentication: anyone who can reach the port reads the whole store. It binds to
    127.0.0.1 by default and warns when bound elsewhere; put it behind an authenticating proxy
    before exposing it. Needs the web extra: pip install 'exwatch[web]'.
    """
    from exwatch.web import create_app, require_web_extra

    require_web_extra()
    import uvicorn

    console = stderr_console()
    url = resolve_db(db_url)
    loopback = is_loopback(host)
    # On loopback only loopback Host headers are accepted, so a web page elsewhere cannot read the
    # API through DNS rebinding; bound elsewhere, the user has chosen to expose it.
    allowed = [*LOOPBACK_NAMES, host] if loopback else None
    app = create_app(url, allowed_hosts=allowed)
    if not loopback:
        click.echo(
            f"exwatch: warning: serving on {host}, not loopback: the dashboard has no authentication "
            "and anyone who reaches this port can read the whole store",
            err=True,
        )
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"exwatch dashboard on http://{shown}:{port}/ (store {mask_url(url)}); Ctrl-C stops it",
        soft_wrap=True,
    )
    level = "warning" if verbosity() <= 0 else "info"
    uvicorn.run(app, host=host, port=port, log_level=level, access_log=verbosity() > 0)
