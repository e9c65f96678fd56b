"""The FastAPI app: the read-only JSON API and the server-rendered dashboard over one store.

Every endpoint is a plain ``def``: FastAPI runs it in its thread pool, so the database work and the
chart drawing never block the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exwatch import __version__
from exwatch.errors import ExwatchError, InputError, StoreError
from exwatch.fleet import Store, open_store
from exwatch.fleet.metrics import STATES
from exwatch.report.model import WAVE_ORDER
from exwatch.web import alerts, data, pages

State = Literal["vulnerable", "patched", "mitigated", "unknown", "not_affected"]
Confidence = Literal["confirmed", "likely", "review"]
Limit = Annotated[int, Query(ge=1, le=data.MAX_LIMIT, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, description="Skip this many items.")]
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


def create_app(store_url: str | None, *, allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The dashboard and API over the store at ``store_url`` (opened, and migrated, now).

    ``allowed_hosts``: the Host header values accepted (``exwatch serve`` passes the loopback names
    when bound to loopback, so that a web page elsewhere cannot reach the API by DNS rebinding).
    """
    store = open_store(store_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="exwatch",
        version=__version__,
        description="Read-only API over the exwatch store: snapshots, exposed hosts, hunts. No authentication.",
        # No Swagger page: it loads its script from a CDN, and nothing here is fetched from the network.
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.store = store
    if allowed_hosts:
        app.add_middleware(AllowedHosts, hosts=list(allowed_hosts))
    app.add_middleware(SecurityHeaders)

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
        return HTMLResponse(pages.not_found(str(exc), store=_masked(store)), status_code=status)

    register_api(app, store)
    register_pages(app, store)
    app.include_router(alerts.router)
    return app


def _masked(store: Store) -> str:
    from exwatch.config import mask_url

    return mask_url(store.url)


def register_api(app: FastAPI, store: Store) -> None:
    """The JSON endpoints under /api."""

    @app.get("/api/health", tags=["api"])
    def api_health() -> dict[str, Any]:
        """That the store answers: version, masked store URL, dialect and newest scan id."""
        return data.health(store)

    @app.get("/api/summary", tags=["api"])
    def api_summary() -> dict[str, Any]:
        """The headline, the latest snapshot per wave, the 7-day change and the compromised-before-protected
        list: the figures of ``exwatch report --format json``."""
        return data.summary(store)

    @app.get("/api/snapshots", tags=["api"])
    def api_snapshots(
        tag: Annotated[str | None, Query(description="Only hosts with this tag, KEY=VALUE.")] = None,
    ) -> dict[str, Any]:
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
    ) -> dict[str, Any]:
        """Hosts in a state in the latest snapshot (default: exposed hosts, longest exposed first, with the
        fix), one item per host and wave."""
        return data.hosts(store, state=state, wave=wave, tag=tag, text=q, limit=limit, offset=offset)

    @app.get("/api/hosts/{host_id}", tags=["api"])
    def api_host(host_id: int) -> dict[str, Any]:
        """One host across snapshots and hunts: identity, tags, states per snapshot, exposure windows,
        hunts, and the latest verdict per wave with its fix."""
        return data.host(store, host_id)

    @app.get("/api/findings", tags=["api"])
    def api_findings(
        host: Annotated[str | None, Query(description="#id, address, DNS name or X-FEServer.")] = None,
        wave: str | None = None,
        confidence: Confidence | None = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Hunt findings, oldest first, with their evidence (file, line or record, excerpt, sha256)."""
        return data.findings(store, host=host, wave=wave, confidence=confidence, limit=limit, offset=offset)


def register_pages(app: FastAPI, store: Store) -> None:
    """The HTML pages: the dashboard and one page per host."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(
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
            page = {"state": "vulnerable", "total": 0, "limit": PAGE_ROWS, "offset": 0, "items": []}
            status = 422
        body = pages.dashboard(report, page, params=params, waves=WAVE_ORDER, states=STATES, error=error)
        return HTMLResponse(body, status_code=status)

    @app.get("/hosts/{host_id}", response_class=HTMLResponse, include_in_schema=False)
    def host_page(host_id: int) -> HTMLResponse:
        doc = data.host(store, host_id)
        found = data.findings(store, host_id=host_id, limit=FINDINGS_ON_HOST_PAGE)
        return HTMLResponse(pages.host_page(doc, found, store=_masked(store)))
