"""``exwatch serve``: the web dashboard and JSON API over the store (uvicorn), and its users and tokens."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from exwatch.cli.common import db_option, echo_json, format_option, resolve_db, stderr_console, verbosity
from exwatch.config import mask_url
from exwatch.errors import ConfigError, InputError

if TYPE_CHECKING:
    from exwatch.web import AuthStore

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ENV_PASSWORD = "EXWATCH_PASSWORD"


def is_loopback(host: str) -> bool:
    """True for a loopback address or the name localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or a one-line ConfigError (port in use, no such address)."""
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot bind {shown}:{port}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno in (98, 48, 10048) else exc.strerror
        hint = ": stop what runs there or give another --port" if "in use" in str(reason) else ""
        raise ConfigError(f"cannot listen on {shown}:{port}: {reason}{hint}") from exc
    sock.set_inheritable(True)
    return sock


def _users(db_url: str | None, *, create: bool = True) -> AuthStore:
    """The users and tokens of the store; commands that only read (list, remove, revoke) never create one."""
    from exwatch.fleet import open_existing_store, open_store
    from exwatch.web import require_web_extra

    require_web_extra()
    from exwatch.web import AuthStore

    store = open_store(resolve_db(db_url)) if create else open_existing_store(resolve_db(db_url))
    return AuthStore(store.engine)


@click.group(invoke_without_command=True)
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback needs a dashboard user (exwatch serve users add).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to bind.")
@click.option(
    "--certfile",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Serve HTTPS with this PEM certificate (chain); needs --keyfile.",
)
@click.option(
    "--keyfile", type=click.Path(path_type=Path, dir_okay=False), default=None, help="The certificate's key."
)
@click.option(
    "--session-hours",
    type=click.FloatRange(0.01, 24 * 30),
    default=12.0,
    show_default=True,
    help="A sign-in lasts this long, then the user signs in again.",
)
@click.option(
    "--login-attempts",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="Failed sign-ins per user name (and four times as many per client address) before a pause.",
)
@click.option(
    "--login-window",
    type=click.IntRange(1, 24 * 60),
    default=15,
    show_default=True,
    help="Minutes over which failed sign-ins are counted (and the longest pause).",
)
@click.option(
    "--secure-cookies",
    is_flag=True,
    help="Mark the session cookie Secure (automatic with --certfile; use behind a TLS proxy).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    db_url: str | None,
    host: str,
    port: int,
    certfile: Path | None,
    keyfile: Path | None,
    session_hours: float,
    login_attempts: int,
    login_window: int,
    secure_cookies: bool,
) -> None:
    """Serve the dashboard and the JSON API over the store (Ctrl-C stops it).

    The page (/) shows the headline, the per-wave table, the protected-share chart, the exposed servers
    with their fix and the servers compromised before they were protected; /hosts/ID shows one host.
    The API is under /api (summary, snapshots, hosts, hosts/ID, findings, health; OpenAPI at /api/openapi.json).

    Authentication: once a user exists (exwatch serve users add NAME), every page needs a sign-in and
    the API a session or a bearer token (exwatch serve token create). Without any user the dashboard
    is open, and so it binds only to loopback: any other --host is refused until a user exists.
    Needs the web extra: pip install 'exwatch[web]'.
    """
    if ctx.invoked_subcommand is not None:
        return
    from exwatch.web import create_app, require_web_extra

    require_web_extra()
    import uvicorn

    from exwatch.web import AuthSettings

    if (certfile is None) != (keyfile is None):
        raise InputError("--certfile and --keyfile go together")
    console = stderr_console()
    from exwatch.cli.readstore import store_url_option
    from exwatch.fleet import require_store

    url = require_store(store_url_option(db_url))  # no store: exit 2 "no store at PATH", nothing created
    loopback = is_loopback(host)
    settings = AuthSettings(
        required=None,
        session_lifetime=timedelta(hours=session_hours),
        secure_cookies=secure_cookies or certfile is not None,
        login_attempts=login_attempts,
        login_window=login_window * 60.0,
    )
    # On loopback only loopback Host headers are accepted, so a web page elsewhere cannot read the
    # API through DNS rebinding; bound elsewhere, the user has chosen to expose it (with users).
    allowed = [*LOOPBACK_NAMES, host] if loopback else None
    app = create_app(url, allowed_hosts=allowed, auth_settings=settings)
    config, sock, has_users = _listen(app, host, port, loopback, certfile, keyfile)
    if not loopback and certfile is None:
        click.echo(
            f"exwatch: warning: serving on {host} over plain HTTP: passwords and sessions cross the "
            "network in clear unless a TLS proxy is in front (or give --certfile/--keyfile)",
            err=True,
        )
    scheme = "https" if certfile else "http"
    bound_port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    mode = "sign-in required" if has_users else "open: no dashboard user yet"
    console.print(
        f"exwatch dashboard on {scheme}://{shown}:{bound_port}/ (store {mask_url(url)}, {mode}); "
        "Ctrl-C stops it",
        soft_wrap=True,
        highlight=False,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises the signal it caught
        pass
    finally:
        sock.close()


def _listen(
    app: Any, host: str, port: int, loopback: bool, certfile: Path | None, keyfile: Path | None
) -> tuple[Any, socket.socket, bool]:
    """The uvicorn config and the bound socket, and whether the store has users; the store is closed
    when anything here fails (no user off loopback, an unusable certificate, a port in use)."""
    import uvicorn

    from exwatch.web import AuthStore

    store = app.state.store
    try:
        has_users = AuthStore(store.engine).has_users()
        if not loopback and not has_users:
            raise ConfigError(
                f"refusing to serve on {host}, not loopback, without authentication: add a dashboard user "
                "first (exwatch serve users add NAME), or keep the default --host 127.0.0.1"
            )
        config = uvicorn.Config(
            app,
            log_level="warning" if verbosity() <= 0 else "info",
            access_log=verbosity() > 0,
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
            lifespan="on",
        )
        try:
            config.load()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use --certfile/--keyfile: {exc}") from exc
        sock = bind_socket(host, port)
    except BaseException:
        store.close()
        raise
    return config, sock, has_users


# -- users ------------------------------------------------------------------------------------------


@serve.group("users")
def users() -> None:
    """Dashboard users: add, list, remove (stored in the store, passwords hashed with Argon2id)."""


def _read_password(name: str) -> str:
    from exwatch.web import check_password

    env = os.environ.get(ENV_PASSWORD)
    if env is not None:
        return check_password(env)
    try:
        first = click.prompt(f"password for {name}", hide_input=True, err=True)
        check_password(first)
        second = click.prompt("again", hide_input=True, err=True)
    except click.Abort as exc:
        raise InputError(f"no password given for {name!r} (type it twice, or set {ENV_PASSWORD})") from exc
    if first != second:
        raise InputError("the two passwords differ; no user added")
    return str(first)


@users.command("add")
@click.argument("name")
@db_option
def users_add(name: str, db_url: str | None) -> None:
    """Add user NAME: the password is asked twice on the terminal, or read from EXWATCH_PASSWORD.

    At least 12 characters. Once a user exists, the dashboard asks everyone to sign in.
    """
    from exwatch.web import check_user_name

    check_user_name(name)
    auth = _users(db_url)
    password = _read_password(name)
    try:
        auth.add_user(name, password)
    finally:
        auth.engine.dispose()
    stderr_console().print(f"user {name} added; the dashboard now asks to sign in", highlight=False)


@users.command("list")
@db_option
@format_option("table", "json")
def users_list(db_url: str | None, fmt: str) -> None:
    """The dashboard users, with their live sessions."""
    auth = _users(db_url, create=False)
    try:
        rows = auth.list_users()
    finally:
        auth.engine.dispose()
    if fmt == "json":
        echo_json({"users": rows})
        return
    if not rows:
        stderr_console().print("no dashboard user: the dashboard is open (loopback only)", highlight=False)
    for row in rows:
        click.echo(f"{row['name']}\tcreated {row['created_at']}\t{row['sessions']} live session(s)")


@users.command("remove")
@click.argument("name")
@db_option
def users_remove(name: str, db_url: str | None) -> None:
    """Remove user NAME and end its sessions."""
    auth = _users(db_url, create=False)
    try:
        if not auth.remove_user(name):
            raise InputError(f"no dashboard user {name!r}")
        left = auth.has_users()
    finally:
        auth.engine.dispose()
    note = "" if left else "; no user is left: the dashboard is open again (loopback only)"
    stderr_console().print(f"user {name} removed{note}", highlight=False)


# -- tokens -----------------------------------------------------------------------------------------

DURATION = re.compile(r"^(\d{1,6})\s*([hdw])$", re.I)


def parse_expiry(text: str, now: datetime | None = None) -> datetime | None:
    """``never``, a duration (``12h``, ``30d``, ``8w``) or an ISO 8601 time; None for never."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "never":
        return None
    match = DURATION.match(value)
    if match:
        n, unit = int(match.group(1)), match.group(2).lower()
        delta = {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
        return now + delta
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(
            f"--expires {text!r}: give never, a duration (12h, 30d, 8w) or an ISO 8601 time"
        ) from exc
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= now:
        raise InputError(f"--expires {text!r} is in the past")
    return when


@serve.group("token")
def token() -> None:
    """API bearer tokens: create (shown once), list, revoke."""


@token.command("create")
@click.option("--name", default="api", show_default=True, help="What the token is for (shown in token list).")
@click.option(
    "--expires",
    default="90d",
    show_default=True,
    help="never, a duration (12h, 30d, 8w) or an ISO 8601 time.",
)
@click.option("--write", is_flag=True, help="Allow requests other than GET/HEAD (default: read-only).")
@db_option
def token_create(name: str, expires: str, write: bool, db_url: str | None) -> None:
    """Create an API token and print it once on stdout (only its SHA-256 is kept).

    Send it as "Authorization: Bearer TOKEN". Read-only unless --write.
    """
    when = parse_expiry(expires)
    auth = _users(db_url)
    try:
        secret = auth.create_token(name, expires=when, scope="write" if write else "read")
        has_users = auth.has_users()
    finally:
        auth.engine.dispose()
    click.echo(secret)
    err = stderr_console()
    until = when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else "never"
    err.print(
        f"token {name!r} ({'read-write' if write else 'read-only'}, expires {until}): shown once, keep it now",
        highlight=False,
    )
    if not has_users:
        err.print(
            "note: no dashboard user exists, so the dashboard and API are open on loopback and the token "
            "is not asked for yet (exwatch serve users add NAME)",
            highlight=False,
        )


@token.command("list")
@db_option
@format_option("table", "json")
def token_list(db_url: str | None, fmt: str) -> None:
    """The API tokens (never their secret): id, name, scope, expiry, last use."""
    auth = _users(db_url, create=False)
    try:
        rows = auth.list_tokens()
    finally:
        auth.engine.dispose()
    if fmt == "json":
        echo_json({"tokens": rows})
        return
    for row in rows:
        state = "expired" if row["expired"] else f"expires {row['expires_at'] or 'never'}"
        used = row["last_used_at"] or "never used"
        click.echo(f"{row['id']}\t{row['name']}\t{row['scope']}\t{state}\t{used}")


@token.command("revoke")
@click.argument("token_id", type=click.IntRange(1, 2**31 - 1))
@db_option
def token_revoke(token_id: int, db_url: str | None) -> None:
    """Revoke the token TOKEN_ID (from exwatch serve token list)."""
    auth = _users(db_url, create=False)
    try:
        if not auth.revoke_token(token_id):
            raise InputError(f"no API token {token_id}")
    finally:
        auth.engine.dispose()
    stderr_console().print(f"token {token_id} revoked", highlight=False)
