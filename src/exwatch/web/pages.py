"""The dashboard's HTML, rendered on the server from plain values; every stored text is escaped.

Hosts, builds, X-FEServer names, tags and log excerpts come from servers and logs an attacker may
control, so nothing from the store reaches the page unescaped; the only markup not built here is the
report's SVG chart (matplotlib escapes its text).  No script, and nothing fetched from the network.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

from exwatch.report.model import WAVE_ORDER, wave_name

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2327;background:#f6f7f7}
header{background:#1d2327;color:#fff;padding:.7em 1.5em;display:flex;gap:1.5em;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600} header span{color:#c3c4c7;font-size:.85em}
main{max-width:1200px;margin:0 auto;padding:1em 1.5em 3em}
h1{font-size:1.4em;margin:.6em 0} h2{font-size:1.15em;margin:1.6em 0 .4em}
.headline{font-size:1.15em;font-weight:600;background:#eeeeee;border-left:5px solid #8c8f94;padding:.7em 1em;border-radius:4px}
.headline.protected{background:#e7f5ea;border-color:#27ae60} .headline.exposed{background:#fbeaea;border-color:#c0392b}
.muted{color:#646970;font-size:.85em}
table{border-collapse:collapse;background:#fff;font-size:.85em;width:100%}
td,th{border:1px solid #dcdcde;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f1} td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.vulnerable td:first-child{border-left:4px solid #c0392b}
.state{display:inline-block;padding:0 .45em;border-radius:3px;font-size:.9em;color:#fff;background:#95a5a6}
.state.vulnerable{background:#c0392b} .state.patched{background:#27ae60} .state.mitigated{background:#d68910}
.state.not_affected{background:#aab7b8} .state.compromised{background:#8e44ad}
figure{margin:.5em 0;background:#fff;border:1px solid #dcdcde;padding:.5em}
figure svg{width:100%;max-width:960px;height:auto}
form.filters{display:flex;gap:.6em;flex-wrap:wrap;align-items:end;margin:.4em 0}
form.filters label{font-size:.8em;display:flex;flex-direction:column}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;white-space:pre-wrap;word-break:break-all}
.pager{margin:.4em 0} .pager a{margin-right:1em}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;background:#fff;padding:.7em;border:1px solid #dcdcde}
dt{font-weight:600}
"""

# The page's security policy: no script at all, styles only inline, images only inline.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def esc(value: Any) -> str:
    """Any value as escaped HTML text (None is empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _signed(value: float | None, unit: str, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:+.{digits}f}{unit}"


def _when(value: str | None, chars: int = 16) -> str:
    """An ISO time shortened for a table cell, with a space instead of the T."""
    return (value or "")[:chars].replace("T", " ")


def _in_wave_order(waves: Iterable[str]) -> list[str]:
    """Wave ids in the knowledge base's order (ProxyLogon first), unknown ones after, by name."""
    return sorted(waves, key=lambda w: (WAVE_ORDER.index(w) if w in WAVE_ORDER else len(WAVE_ORDER), w))


def _state(state: str | None) -> str:
    if not state:
        return ""
    return f"<span class='state {esc(state)}'>{esc(state.replace('_', ' '))}</span>"


def _host_link(host_id: int | None, label: Any = None) -> str:
    if host_id is None:
        return esc(label)
    return f"<a href='/hosts/{int(host_id)}'>{esc(label if label is not None else f'#{host_id}')}</a>"


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (), **attrs: str
) -> str:
    """A table of already-escaped cells."""
    extra = "".join(f" {k}='{esc(v)}'" for k, v in attrs.items())
    head = "".join(
        f"<th class='n'>{esc(h)}</th>" if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f"<td class='n'>{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f"<tr><td colspan='{len(headers)}' class='muted'>none</td></tr>")
    return f"<table{extra}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def layout(title: str, body: str, *, store: str) -> str:
    """The whole document around a page body."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        "<header><a href='/'>exwatch dashboard</a><a href='/api/openapi.json'>API</a>"
        f"<span>store {esc(store)} · read-only · no authentication</span></header>"
        f"<main>{body}</main></body></html>"
    )


# -- charts (matplotlib is not thread-safe, and a chart only changes with the snapshots) --------

_CHART_LOCK = threading.Lock()
_CHART_CACHE: dict[str, str] = {}


def share_chart(report: dict[str, Any]) -> str:
    """The report's protected-share chart (inline SVG), drawn once per distinct snapshot series."""
    from exwatch.report.html import chart_share

    key = repr([(s["scan"], s["time"], sorted(s["waves"].items())) for s in report["snapshots"]])
    with _CHART_LOCK:
        if key not in _CHART_CACHE:
            if len(_CHART_CACHE) > 32:
                _CHART_CACHE.clear()
            _CHART_CACHE[key] = chart_share(report)
        return _CHART_CACHE[key]


# -- the dashboard ------------------------------------------------------------------------------


def _wave_table(report: dict[str, Any]) -> str:
    snaps = report["snapshots"]
    if not snaps:
        return "<p class='muted'>No finished scan in the store yet.</p>"
    latest = snaps[-1]
    c7 = report.get("change_7d") or {}
    rows = []
    for wave in _in_wave_order(latest["waves"]):
        c = latest["waves"][wave]
        ch = (c7.get("waves") or {}).get(wave) or {}
        bounds = c.get("protected_bounds")
        rows.append(
            [
                esc(wave_name(wave)),
                esc(f"{c['hosts']:,}"),
                esc(f"{c['vulnerable']:,}"),
                esc(f"{c['patched']:,}"),
                esc(f"{c['mitigated']:,}"),
                esc(f"{c['unknown']:,}"),
                esc(f"{c['not_affected']:,}"),
                esc(f"{c['classified']:,}"),
                esc(_pct(c["protected_share"])),
                esc(f"{_pct(bounds[0])} – {_pct(bounds[1])}" if bounds else "n/a"),
                esc(_signed(ch.get("delta_pp"), " pp")),
                esc(_signed(ch.get("unprotected_rel_change"), "%", 100, 0)),
            ]
        )
    statuses = ", ".join(f"{esc(k.replace('_', ' '))}: {v:,}" for k, v in sorted(latest["statuses"].items()))
    against = f" Change against the fleet of {esc(c7['against_time'][:10])}." if c7 else ""
    stale = latest.get("stale") or 0
    return (
        f"<p class='muted'>Fleet picture at scan {esc(latest['scan'])} of {esc(_when(latest['time']))} UTC"
        f" (every known host's latest verdict) · hosts by status: {statuses or 'none'}"
        f" · stale (not re-seen within the max age, not counted): {stale:,}.{against}</p>"
        + _table(
            [
                "wave",
                "hosts",
                "vulnerable",
                "patched",
                "mitigated",
                "unknown",
                "not affected",
                "classified",
                "protected",
                "bounds (unknown)",
                "change 7d",
                "vulnerable count 7d",
            ],
            rows,
            numeric=range(1, 12),
            id="waves",
        )
    )


def _hosts_rows(items: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            _host_link(r["host_id"]),
            esc(r["address"]),
            esc(r["name"] or r["fe_server"]),
            esc(wave_name(r["wave"])),
            _state(r.get("state")),
            f"<code>{esc(r['build'])}</code>" if r["build"] else "",
            esc((r["exposed_since"] or "")[:10]),
            esc("" if r["exposed_days"] is None else f"{r['exposed_days']:g}"),
            esc(r["fix"]),
        ]
        for r in items
    ]


def _filters(params: dict[str, Any], waves: Sequence[str], states: Sequence[str]) -> str:
    def options(values: Sequence[str], chosen: Any, blank: str | None) -> str:
        out = [f"<option value=''>{esc(blank)}</option>"] if blank is not None else []
        for v in values:
            sel = " selected" if v == chosen else ""
            out.append(f"<option value='{esc(v)}'{sel}>{esc(wave_name(v) if v in waves else v)}</option>")
        return "".join(out)

    return (
        "<form class='filters' method='get' action='/'>"
        f"<label>state<select name='state'>{options(states, params.get('state') or 'vulnerable', None)}</select></label>"
        f"<label>wave<select name='wave'>{options(waves, params.get('wave'), 'all waves')}</select></label>"
        f"<label>tag<input name='tag' placeholder='country=NL' value='{esc(params.get('tag'))}'></label>"
        f"<label>search<input name='q' placeholder='address, name, build' value='{esc(params.get('q'))}'></label>"
        "<button type='submit'>show</button></form>"
    )


def _pager(page: dict[str, Any], params: dict[str, Any]) -> str:
    total, limit, offset = page["total"], page["limit"], page["offset"]
    shown = len(page["items"])
    keep = {k: v for k, v in params.items() if v not in (None, "") and k != "offset"}
    links = [f"<span class='muted'>{offset + 1 if shown else 0}–{offset + shown} of {total:,}</span>"]
    if offset > 0:
        links.insert(
            0, f"<a href='/?{esc(urlencode({**keep, 'offset': max(0, offset - limit)}))}'>previous</a>"
        )
    if offset + shown < total:
        links.append(f"<a href='/?{esc(urlencode({**keep, 'offset': offset + limit}))}'>next</a>")
    return f"<div class='pager'>{' '.join(links)}</div>"


def dashboard(
    report: dict[str, Any],
    page: dict[str, Any],
    *,
    params: dict[str, Any],
    waves: Sequence[str],
    states: Sequence[str],
    error: str | None = None,
) -> str:
    """The dashboard: headline, per-wave table, share chart, hosts in a state, compromised-before-protected."""
    parts = [
        "<h1>Exchange fleet exposure</h1>",
        f"<p class='headline {esc(report.get('headline_level') or 'unknown')}' id='headline'>"
        f"{esc(report['headline'])}</p>",
    ]
    parts.append("<h2>The fleet now, per wave</h2>")
    parts.append(_wave_table(report))
    if report["snapshots"]:
        parts.append(
            f"<h2>Protected share over time</h2><figure id='chart-share'>{share_chart(report)}</figure>"
        )
    state = page.get("state") or "vulnerable"
    title = (
        "Exposed servers, longest exposed first"
        if state == "vulnerable"
        else f"Servers {state.replace('_', ' ')}"
    )
    parts.append(f"<h2 id='hosts-title'>{esc(title)}</h2>")
    parts.append(_filters(params, waves, states))
    if error:
        parts.append(f"<p class='headline' style='background:#fbeaea;border-color:#c0392b'>{esc(error)}</p>")
    parts.append(
        _table(
            [
                "host",
                "address",
                "name / X-FEServer",
                "wave",
                "state",
                "build",
                "exposed since",
                "days",
                "fix",
            ],
            _hosts_rows(page["items"]),
            numeric=(7,),
            id="hosts",
        )
    )
    parts.append(_pager(page, params))
    parts.append("<h2>Compromised before protected</h2>")
    parts.append(
        "<p class='muted'>First hunt evidence (confirmed or likely) earlier than the end of the host's "
        "exposure window, or the host never seen protected.</p>"
    )
    parts.append(
        _table(
            ["host", "address", "name / X-FEServer", "wave", "first evidence", "protected at", "findings"],
            [
                [
                    _host_link(r["host_id"]),
                    esc(r["address"]),
                    esc(r["name"] or r["fe_server"]),
                    esc(wave_name(r["wave"])),
                    esc(_when(r["first_evidence"])),
                    esc(_when(r["protected_at"]) or "never"),
                    esc(r["findings"]),
                ]
                for r in report["compromised_before_protected"]
            ],
            numeric=(6,),
            id="compromised",
        )
    )
    parts.append(
        "<p class='muted'>Generated "
        f"{esc(_when(report['generated_at'], 19))} UTC. JSON: <a href='/api/summary'>/api/summary</a>, "
        "<a href='/api/hosts'>/api/hosts</a>, <a href='/api/snapshots'>/api/snapshots</a>, "
        "<a href='/api/findings'>/api/findings</a>.</p>"
    )
    return layout("exwatch dashboard", "".join(parts), store=report["store"])


# -- one host -----------------------------------------------------------------------------------


def _evidence(ev: dict[str, Any]) -> str:
    where = ev.get("file") or ""
    if ev.get("line") is not None:
        where += f":{ev['line']}"
    elif ev.get("record") is not None:
        where += f" record {ev['record']}"
    excerpt = ev.get("excerpt")
    out = f"<code>{esc(where)}</code>"
    if excerpt:
        out += f"<pre class='excerpt'>{esc(excerpt)}</pre>"
    return out


def host_page(doc: dict[str, Any], findings: dict[str, Any], *, store: str) -> str:
    """One host: identity, latest verdicts with fixes, snapshots, exposure windows, hunts, findings."""
    label = doc["name"] or doc["address"] or doc["fe_server"] or f"#{doc['host_id']}"
    parts = [f"<h1>Host #{esc(doc['host_id'])}: {esc(label)}</h1>"]
    tags = ", ".join(f"{k}={v}" for k, v in sorted(doc["tags"].items()))
    parts.append(
        "<dl>"
        f"<dt>address</dt><dd>{esc(doc['address'])}</dd>"
        f"<dt>DNS name</dt><dd>{esc(doc['name'])}</dd>"
        f"<dt>X-FEServer</dt><dd>{esc(doc['fe_server'])}</dd>"
        f"<dt>certificate</dt><dd>{esc(doc['cert'])}</dd>"
        f"<dt>first seen</dt><dd>{esc(_when(doc['first_seen']))}</dd>"
        f"<dt>tags</dt><dd>{esc(tags)}</dd></dl>"
    )
    parts.append("<h2>Latest verdict per wave</h2>")
    parts.append(
        _table(
            ["wave", "state", "reason", "fix"],
            [
                [esc(wave_name(w)), _state(v.get("state")), esc(v.get("reason")), esc(v.get("fix"))]
                for w, v in ((w, doc["verdicts"][w]) for w in _in_wave_order(doc["verdicts"]))
            ],
            id="verdicts",
        )
    )
    waves = _in_wave_order({w for s in doc["snapshots"] for w in s["waves"]})
    parts.append("<h2>Snapshots</h2>")
    parts.append(
        _table(
            [
                "scan",
                "time",
                "status",
                "address",
                "build",
                "build source",
                *[wave_name(w) for w in waves],
                "error",
            ],
            [
                [
                    esc(s["scan"]),
                    esc(_when(s["time"])),
                    esc(s["status"]),
                    esc(s["address"]),
                    f"<code>{esc(s['build'])}</code>" if s["build"] else "",
                    esc(s["build_source"]),
                    *[_state(s["waves"].get(w)) for w in waves],
                    esc(s["error"]),
                ]
                for s in doc["snapshots"]
            ],
            id="snapshots",
        )
    )
    parts.append("<h2>Exposure windows</h2>")
    parts.append(
        _table(
            ["wave", "first vulnerable", "first protected", "days"],
            [
                [
                    esc(wave_name(e["wave"])),
                    esc(_when(e["first_vulnerable"])),
                    esc(_when(e["first_protected"]) or "still exposed"),
                    esc(e["days"]),
                ]
                for e in doc["exposure"]
            ],
            numeric=(3,),
            id="exposure",
        )
    )
    parts.append("<h2>Hunts</h2>")
    parts.append(
        _table(
            ["hunt", "time", "verdict", "findings", "first finding"],
            [
                [
                    esc(hu["hunt"]),
                    esc(_when(hu["time"])),
                    _state(hu["verdict"]),
                    esc(hu["findings"]),
                    esc(_when(hu["first_finding"], 19)),
                ]
                for hu in doc["hunts"]
            ],
            numeric=(3,),
            id="hunts",
        )
    )
    shown = len(findings["items"])
    parts.append(f"<h2>Findings ({shown:,} of {findings['total']:,}, oldest first)</h2>")
    parts.append(
        _table(
            ["time", "rule", "wave", "CVE", "confidence", "title", "evidence"],
            [
                [
                    esc(_when(f["time"], 19)),
                    f"<code>{esc(f['rule'])}</code>",
                    esc(f["wave"]),
                    esc(f["cve"]),
                    esc(f["confidence"]),
                    esc(f["title"]),
                    _evidence(f["evidence"]),
                ]
                for f in findings["items"]
            ],
            id="findings",
        )
    )
    if findings["total"] > shown:
        parts.append(
            f"<p class='muted'>All findings: <a href='/api/findings?host=%23{int(doc['host_id'])}'>"
            f"/api/findings?host=%23{int(doc['host_id'])}</a></p>"
        )
    return layout(f"exwatch host #{doc['host_id']}", "".join(parts), store=store)


def not_found(message: str, *, store: str) -> str:
    """The page for an unknown host or path."""
    return layout(
        "not found", f"<h1>Not found</h1><p>{esc(message)}</p><p><a href='/'>dashboard</a></p>", store=store
    )
