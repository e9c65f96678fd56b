"""The FastAPI app: the read-only JSON API and the server-rendered dashboard over one store.

Every endpoint is a plain ``def``: FastAPI runs it in its thread pool, so the database work and the
chart drawing never block the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exwatch import __version__
from exwatch.errors import ExwatchError, InputError, StoreError
from exwatch.fleet import Store, open_store
from exwatch.fleet.database import check_store, damaged
from exwatch.fleet.metrics import STATES
from exwatch.fleet.rows import Listing
from exwatch.report.model import WAVE_ORDER
from exwatch.web import alerts, auth, data, pages

# The JSON edge: every endpoint answers an object (FastAPI's response model; the values are typed up to
# their ``to_dict``).
ApiDoc = dict[str, Any]
State = Literal["vulnerable", "patched", "mitigated", "unknown", "not_affected"]
Confidence = Literal["confirmed", "likely", "review"]
# Ids are 32-bit integers in the store (PostgreSQL INTEGER); larger numbers name nothing, and past 64 bits
# the SQLite driver cannot even bind them (OverflowError): such ids are 404, such offsets 422.
MAX_ID = 2**31 - 1
MAX_OFFSET = 2**31 - 1
Limit = Annotated[int, Query(ge=1, le=data.MAX_LIMIT, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Skip this many items.")]
HostId = Annotated[int, PathParam(description="The host's id (#N in the dashboard).")]
MAX_LOGIN_BODY = 8192
# How many rows the dashboard shows per page (the API pages with limit/offset).
PAGE_ROWS = 100
FINDINGS_ON_HOST_PAGE = 200

SECURITY_HEADERS = [
    (b"content-security-policy", pages.CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds the no-script content policy and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AllowedHosts:
    """Answers only requests whose Host header (without the port) is one of ``hosts``; others get a JSON 400."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = {h.lower().strip("[]") for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1").lower()
            name = raw[1 : raw.index("]")] if raw.startswith("[") and "]" in raw else raw.rsplit(":", 1)[0]
            if name not in self.hosts:
                response = JSONResponse(
                    {"detail": "this dashboard answers only on its loopback address"}, status_code=400
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


PUBLIC_PATHS = frozenset({"/login", "/api/health"})


class AuthGate:
    """Lets through only signed-in users (session cookie) and API tokens (``Authorization: Bearer``)
    when authentication is required; pages redirect to /login, the API answers 401.  A read token
    may only read (GET/HEAD); anything else needs a session or a write token."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        identity = await run_in_threadpool(self.gate.identify, request)
        path = scope["path"]
        if identity is not None and identity.kind == "token" and not path.startswith("/api/"):
            identity = None  # an API token opens the JSON API, not the pages
        scope.setdefault("state", {})["identity"] = identity
        required = self.gate.required
        if not required or path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        response: Response | None = None
        if identity is None:
            if path.startswith("/api/"):
                response = JSONResponse(
                    {"detail": "authentication required: a session or an API token (Authorization: Bearer)"},
                    status_code=401,
                    headers={"www-authenticate": 'Bearer realm="exwatch"'},
                )
            else:
                response = RedirectResponse(
                    auth.login_redirect(path, scope.get("query_string", b"").decode("latin-1")), 303
                )
        elif scope["method"] not in auth.SAFE_METHODS and not identity.can_write:
            response = JSONResponse({"detail": "this API token is read-only"}, status_code=403)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Gate:
    """Who a request is, and whether the dashboard asks at all (a user exists, or it is forced)."""

    def __init__(self, store: Store, settings: auth.AuthSettings) -> None:
        self.users = auth.AuthStore(store.engine)
        self.settings = settings
        self.limiter = settings.make_limiter()
        self._required = settings.required
        self._checked = 0.0
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        """Forced by the settings, else whether a user exists (re-read at most every few seconds, so a
        user added while the dashboard runs closes it)."""
        if self.settings.required is not None:
            return self.settings.required
        with self._lock:
            if self._required is None or time.monotonic() - self._checked > 5:
                try:
                    self._required = self.users.has_users()
                except (DBAPIError, StoreError):
                    self._required = True  # a store that cannot say: closed
                self._checked = time.monotonic()
            return bool(self._required)

    def identify(self, request: Request) -> auth.Identity | None:
        try:
            header = request.headers.get("authorization", "")
            if header[:7].lower() == "bearer ":
                return self.users.token(header[7:].strip())
            cookie = request.cookies.get(auth.SESSION_COOKIE)
            return self.users.session(cookie) if cookie else None
        except (DBAPIError, StoreError):
            return None


def create_app(
    store_url: str | None,
    *,
    allowed_hosts: Sequence[str] | None = None,
    auth_settings: auth.AuthSettings | None = None,
) -> FastAPI:
    """The dashboard and API over the store at ``store_url`` (opened, migrated and checked now).

    ``allowed_hosts``: the Host header values accepted (``exwatch serve`` passes the loopback names
    when bound to loopback, so that a web page elsewhere cannot reach the API by DNS rebinding).
    ``auth_settings``: sessions, cookies and login limits (default: authentication required as soon
    as a user exists in the store).  A damaged store is a StoreError here (SQLite quick_check).
    """
    store = open_store(store_url)
    try:
        check_store(store.engine, thorough=True)
    except StoreError:
        store.close()
        raise
    settings = auth_settings or auth.AuthSettings()
    gate = Gate(store, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="exwatch",
        version=__version__,
        description="Read-only API over the exwatch store: snapshots, exposed hosts, hunts. When a dashboard user exists, every endpoint but /api/health needs a session or a bearer token (exwatch serve token create).",
        # No Swagger page: it loads its script from a CDN, and nothing here is fetched from the network.
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.gate = gate
    app.state.store_suspect = False
    app.add_middleware(AuthGate, gate=gate)
    if allowed_hosts:
        app.add_middleware(AllowedHosts, hosts=list(allowed_hosts))
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(DBAPIError)
    def _database_error(request: Request, exc: DBAPIError) -> Any:
        # A damaged or unreachable store: 503, and the health check looks closer until it passes.
        app.state.store_suspect = True
        return _exwatch_error(request, damaged(store.url, exc))

    @app.exception_handler(ExwatchError)
    def _exwatch_error(request: Request, exc: ExwatchError) -> Any:
        if isinstance(exc, data.NotFound):
            status = 404
        elif isinstance(exc, InputError):
            status = 422
        elif isinstance(exc, StoreError):
            status = 503
        else:
            status = 500
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=status)
        page = pages.not_found(str(exc), store=_masked(store), identity=_identity(request))
        return HTMLResponse(page, status_code=status)

    register_auth(app, gate)
    register_api(app, store)
    register_pages(app, store)
    app.include_router(alerts.router)
    return app


def _identity(request: Request) -> auth.Identity | None:
    ident = request.scope.get("state", {}).get("identity")
    return ident if isinstance(ident, auth.Identity) else None


def register_auth(app: FastAPI, gate: Gate) -> None:
    """/login (the form and its post) and /logout."""
    settings = gate.settings

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(next: str = "/") -> Response:
        if not gate.required:
            return RedirectResponse("/", 303)
        return HTMLResponse(auth.login_page(next_path=auth.local_target(next)))

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            return HTMLResponse(auth.login_page(error="cross-site sign-in refused"), status_code=403)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_LOGIN_BODY):
            return HTMLResponse(auth.login_page(error="the form is too large"), status_code=413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return HTMLResponse(auth.login_page(error="the form is too large"), status_code=413)
        form = auth.parse_form(body)
        user = form.get("username", "")[:64]
        password = form.get("password", "")[: auth.MAX_PASSWORD]
        target = auth.local_target(form.get("next"))
        address = request.client.host if request.client else "unknown"
        wait = gate.limiter.retry_after(address, user)
        if wait:
            page = auth.login_page(
                next_path=target, user=user, error=f"too many failed sign-ins: try again in {wait} s"
            )
            return HTMLResponse(page, status_code=429, headers={"retry-after": str(wait)})
        user_id = await run_in_threadpool(gate.users.verify_password, user, password)
        if user_id is None:
            gate.limiter.failed(address, user)
            page = auth.login_page(next_path=target, user=user, error="wrong user name or password")
            return HTMLResponse(page, status_code=401)
        gate.limiter.succeeded(user)
        secret = await run_in_threadpool(gate.users.new_session, user_id, settings.session_lifetime)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            auth.SESSION_COOKIE,
            secret,
            max_age=int(settings.session_lifetime.total_seconds()),
            path="/",
            secure=settings.secure_cookies or request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        if not _same_origin(request):
            return JSONResponse({"detail": "cross-site sign-out refused"}, status_code=403)
        secret = request.cookies.get(auth.SESSION_COOKIE)
        if secret:
            gate.users.end_session(secret)
        response = RedirectResponse("/login" if gate.required else "/", 303)
        response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response


def _same_origin(request: Request) -> bool:
    """A form post from this site, or from no page at all (curl).

    Browsers say where a request comes from in Sec-Fetch-Site; with our no-referrer policy a same-site
    form post carries ``Origin: null``, so Origin is only compared when it names a site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def _masked(store: Store) -> str:
    from exwatch.config import mask_url

    return mask_url(store.url)


def register_api(app: FastAPI, store: Store) -> None:
    """The JSON endpoints under /api."""

    @app.get("/api/health", tags=["api"], responses={503: {"description": "the store is damaged or down"}})
    def api_health(request: Request) -> Any:
        """That the store answers a real query (one row of every table; SQLite's quick_check after an
        error): 200 with version, masked store URL, dialect and newest scan id, or 503 with the reason.
        Without a session or token (when authentication is on) only the status is shown."""
        try:
            check_store(store.engine, thorough=bool(app.state.store_suspect))
            doc = data.health(store)
        except StoreError as exc:
            app.state.store_suspect = True
            return JSONResponse({"status": "error", "detail": str(exc)}, status_code=503)
        except DBAPIError as exc:
            app.state.store_suspect = True
            return JSONResponse({"status": "error", "detail": str(damaged(store.url, exc))}, status_code=503)
        app.state.store_suspect = False
        if app.state.gate.required and _identity(request) is None:
            return {"status": doc["status"]}
        return doc

    @app.get("/api/summary", tags=["api"])
    def api_summary() -> ApiDoc:
        """The headline, the latest snapshot per wave, the 7-day change and the compromised-before-protected
        list: the figures of ``exwatch report --format json``."""
        return data.summary(store)

    @app.get("/api/snapshots", tags=["api"])
    def api_snapshots(
        tag: Annotated[str | None, Query(description="Only hosts with this tag, KEY=VALUE.")] = None,
    ) -> ApiDoc:
        """Every finished snapshot in time order with its per-wave counts and host-level statuses."""
        return {"snapshots": data.snapshot_series(store, tag=tag)}

    @app.get("/api/hosts", tags=["api"])
    def api_hosts(
        state: Annotated[State, Query(description="Per-wave state in the latest snapshot.")] = "vulnerable",
        wave: Annotated[Literal["proxylogon", "proxyshell", "proxynotshell"] | None, Query()] = None,
        tag: Annotated[str | None, Query(description="Only hosts with this tag, KEY=VALUE.")] = None,
        q: Annotated[
            str | None, Query(description="Substring of address, name, X-FEServer or build.")
        ] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> ApiDoc:
        """Hosts in a state in the latest snapshot (default: exposed hosts, longest exposed first, with the
        fix), one item per host and wave."""
        return data.hosts(
            store, state=state, wave=wave, tag=tag, text=q, limit=limit, offset=offset
        ).to_dict()

    @app.get("/api/hosts/{host_id}", tags=["api"])
    def api_host(host_id: HostId) -> ApiDoc:
        """One host across snapshots and hunts: identity, tags, states per snapshot, exposure windows,
        hunts, and the latest verdict per wave with its fix."""
        return data.host(store, _known_id(host_id)).to_dict()

    @app.get("/api/findings", tags=["api"])
    def api_findings(
        host: Annotated[str | None, Query(description="#id, address, DNS name or X-FEServer.")] = None,
        wave: str | None = None,
        confidence: Confidence | None = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> ApiDoc:
        """Hunt findings, oldest first, with their evidence (file, line or record, excerpt, sha256)."""
        if host and host.startswith("#") and host[1:].strip().isdigit():
            _known_id(int(host[1:]))
        found = data.findings(store, host=host, wave=wave, confidence=confidence, limit=limit, offset=offset)
        return data.findings_json(found)


def _known_id(host_id: int) -> int:
    """``host_id`` when it can name a row; a NotFound (404) when it cannot (negative, or past 32 bits)."""
    if not 1 <= host_id <= MAX_ID:
        raise data.NotFound(f"no host #{host_id} in the store")
    return host_id


def register_pages(app: FastAPI, store: Store) -> None:
    """The HTML pages: the dashboard and one page per host."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(
        request: Request,
        state: str = "vulnerable",
        wave: str | None = None,
        tag: str | None = None,
        q: str | None = None,
        offset: str | None = None,
    ) -> HTMLResponse:
        params = {"state": state, "wave": wave or None, "tag": tag or None, "q": q or None, "offset": offset}
        report = data.report(store)
        error = None
        try:
            start = int(offset or 0)
            if not 0 <= start <= MAX_OFFSET:
                raise InputError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")
            page = data.hosts(
                store,
                state=state,
                wave=wave or None,
                tag=tag or None,
                text=q,
                limit=PAGE_ROWS,
                offset=start,
            )
            status = 200
        except (InputError, ValueError) as exc:
            error = str(exc) if isinstance(exc, InputError) else f"not a number: offset={offset!r}"
            page = data.HostsPage("vulnerable", None, None, Listing(0, PAGE_ROWS, 0, ()))
            status = 422
        body = pages.dashboard(
            report,
            page,
            params=params,
            waves=WAVE_ORDER,
            states=STATES,
            error=error,
            identity=_identity(request),
        )
        return HTMLResponse(body, status_code=status)

    @app.get("/hosts/{host_id}", response_class=HTMLResponse, include_in_schema=False)
    def host_page(request: Request, host_id: HostId) -> HTMLResponse:
        doc = data.host(store, _known_id(host_id))
        found = data.findings(store, host_id=host_id, limit=FINDINGS_ON_HOST_PAGE)
        page = pages.host_page(doc, found, store=_masked(store), identity=_identity(request))
        return HTMLResponse(page)
