"""The alerts of ``exwatch watch`` in the dashboard: ``/alerts`` (HTML) and ``/api/alerts`` (JSON).

A router of its own over the app's store (``request.app.state.store``); filters: kind, wave and tag
(KEY=VALUE on the alerted host).  The page is the template ``alerts.html`` (autoescaped), in the
dashboard's layout with its signed-in header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from exwatch.config import mask_url
from exwatch.errors import InputError
from exwatch.fleet.queries import parse_tag
from exwatch.watch.log import list_alerts
from exwatch.watch.model import KINDS
from exwatch.web import pages

router = APIRouter()
PAGE_ROWS = 100
Kind = Literal["exposed", "protection_lost", "protected", "compromised", "gone", "back"]
KIND_CLASS = {
    "exposed": "vulnerable",
    "protection_lost": "vulnerable",
    "compromised": "compromised",
    "protected": "patched",
    "gone": "not_affected",
    "back": "mitigated",
}


@router.get("/api/alerts", tags=["api"])
def api_alerts(
    request: Request,
    kind: Annotated[Kind | None, Query(description="Only this kind of alert.")] = None,
    wave: Annotated[str | None, Query(description="Only alerts about this wave.")] = None,
    tag: Annotated[str | None, Query(description="Only alerts about hosts with this tag, KEY=VALUE.")] = None,
    watch: Annotated[str | None, Query(description="Only the alerts of this watch (its name).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Alerts raised by ``exwatch watch``, newest first: kind, time, host, address, port, wave, state,
    previous, build, fix, scan (and id, watch, host_id)."""
    return list_alerts(
        request.app.state.store,
        kind=kind,
        wave=wave or None,
        tag=parse_tag(tag or None),
        watch=watch or None,
        limit=limit,
        offset=offset,
    )


def render(
    page: Mapping[str, Any],
    params: Mapping[str, str | None],
    *,
    store: str,
    error: str | None = None,
    identity: Any = None,
) -> str:
    """The alerts page: filters, then one row per alert (the dashboard's layout and header)."""
    from exwatch.report.model import WAVE_ORDER

    start, total = int(page["offset"]), int(page["total"])
    keep = {k: v for k, v in params.items() if v and k != "offset"}
    return pages.render(
        "alerts.html",
        title="exwatch alerts",
        store=store,
        identity=identity,
        page=page,
        params=params,
        message=error,
        kinds=list(KINDS),
        wave_choices=list(WAVE_ORDER),
        kind_class=KIND_CLASS,
        newer=urlencode({**keep, "offset": max(0, start - PAGE_ROWS)}) if start > 0 else None,
        older=urlencode({**keep, "offset": start + PAGE_ROWS}) if start + PAGE_ROWS < total else None,
    )


@router.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
def alerts_page(
    request: Request,
    kind: str | None = None,
    wave: str | None = None,
    tag: str | None = None,
    offset: str | None = None,
) -> HTMLResponse:
    store = request.app.state.store
    params = {"kind": kind or None, "wave": wave or None, "tag": tag or None, "offset": offset}
    error = None
    status = 200
    try:
        page = list_alerts(
            store,
            kind=kind or None,
            wave=wave or None,
            tag=parse_tag(tag or None),
            limit=PAGE_ROWS,
            offset=int(offset or 0),
        )
    except (InputError, ValueError) as exc:
        error = str(exc) if isinstance(exc, InputError) else f"not a number: offset={offset!r}"
        page = {"total": 0, "limit": PAGE_ROWS, "offset": 0, "items": []}
        status = 422
    identity = request.scope.get("state", {}).get("identity")
    body = render(page, params, store=mask_url(store.url), error=error, identity=identity)
    return HTMLResponse(body, status_code=status)
