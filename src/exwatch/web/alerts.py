"""The alerts of ``exwatch watch`` in the dashboard: ``/alerts`` (HTML) and ``/api/alerts`` (JSON).

A router of its own over the app's store (``request.app.state.store``); filters: kind, wave and tag
(KEY=VALUE on the alerted host).  Every stored text is escaped (exwatch.web.pages.esc).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from exwatch.config import mask_url
from exwatch.errors import InputError
from exwatch.fleet.queries import parse_tag
from exwatch.watch.log import list_alerts
from exwatch.watch.model import KINDS
from exwatch.web.pages import esc, layout

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


def _options(values: list[str], chosen: str | None) -> str:
    opts = ["<option value=''>any</option>"]
    for v in values:
        sel = " selected" if v == chosen else ""
        opts.append(f"<option value='{esc(v)}'{sel}>{esc(v)}</option>")
    return "".join(opts)


def render(page: dict[str, Any], params: dict[str, Any], *, store: str, error: str | None = None) -> str:
    """The alerts page: filters, then one row per alert."""
    from exwatch.report.model import WAVE_ORDER

    rows = []
    for a in page["items"]:
        host = esc(a.get("host"))
        if a.get("host_id") is not None:
            host = f"<a href='/hosts/{int(a['host_id'])}'>{host}</a>"
        kind = str(a.get("kind") or "")
        change = f"{esc(a.get('previous') or '-')} → {esc(a.get('state') or '')}"
        rows.append(
            "<tr>"
            f"<td>{esc(str(a.get('time') or '')[:19].replace('T', ' '))}</td>"
            f"<td><span class='state {esc(KIND_CLASS.get(kind, ''))}'>{esc(kind.replace('_', ' '))}</span></td>"
            f"<td>{host}</td><td class='n'>{esc(a.get('port'))}</td><td>{esc(a.get('wave'))}</td>"
            f"<td>{change}</td><td>{esc(a.get('build'))}</td><td>{esc(a.get('fix'))}</td>"
            f"<td class='n'>{esc(a.get('scan'))}</td>"
            "</tr>"
        )
    if not rows:
        rows.append("<tr><td colspan='9' class='muted'>no alert</td></tr>")
    head = "".join(
        f"<th>{h}</th>" for h in ("time", "kind", "host", "port", "wave", "change", "build", "fix", "scan")
    )
    form = (
        "<form class='filters' method='get' action='/alerts'>"
        f"<label>kind<select name='kind'>{_options(list(KINDS), params.get('kind'))}</select></label>"
        f"<label>wave<select name='wave'>{_options(list(WAVE_ORDER), params.get('wave'))}</select></label>"
        f"<label>tag (KEY=VALUE)<input name='tag' value='{esc(params.get('tag') or '')}'></label>"
        "<button type='submit'>filter</button></form>"
    )
    pager = ""
    start, total = int(page["offset"]), int(page["total"])
    keep = {k: v for k, v in params.items() if v and k != "offset"}
    if start > 0:
        pager += (
            f"<a href='/alerts?{esc(urlencode({**keep, 'offset': max(0, start - PAGE_ROWS)}))}'>newer</a>"
        )
    if start + PAGE_ROWS < total:
        pager += f"<a href='/alerts?{esc(urlencode({**keep, 'offset': start + PAGE_ROWS}))}'>older</a>"
    body = (
        "<h1>Alerts</h1>"
        "<p class='muted'>One alert per change seen by <code>exwatch watch</code>: exposed, protection lost, "
        "protected, compromised, gone, back. JSON: <a href='/api/alerts'>/api/alerts</a>.</p>"
        + (
            f"<p class='headline' style='background:#fdecea;border-color:#c0392b'>{esc(error)}</p>"
            if error
            else ""
        )
        + form
        + f"<p class='muted'>{total} alert(s)</p>"
        + f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + f"<p class='pager'>{pager}</p>"
    )
    return layout("exwatch alerts", body, store=store)


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
    return HTMLResponse(render(page, params, store=mask_url(store.url), error=error), status_code=status)
