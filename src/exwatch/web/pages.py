"""The dashboard's HTML, rendered on the server through Jinja2 templates with autoescape.

Hosts, builds, X-FEServer names, tags and log excerpts come from servers and logs an attacker may
control: every value reaches the page through a template, escaped; the only markup not written in
the templates (``exwatch/web/templates``) is the report's SVG chart (matplotlib escapes its text) and
the CSS.  No script, and nothing fetched from the network.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from exwatch.fleet.rows import FindingRow, Listing, Picture
from exwatch.report.model import WAVE_ORDER, Report, wave_name

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


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _signed(value: float | None, unit: str, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:+.{digits}f}{unit}"


def _when(value: datetime | str | None, chars: int = 16) -> str:
    """A time shortened for a table cell, with a space instead of the T."""
    text = value.isoformat() if isinstance(value, datetime) else (value or "")
    return text[:chars].replace("T", " ")


def _num(value: int) -> str:
    return f"{value:,}"


def _in_wave_order(waves: Iterable[str]) -> list[str]:
    """Wave ids in the knowledge base's order (ProxyLogon first), unknown ones after, by name."""
    return sorted(waves, key=lambda w: (WAVE_ORDER.index(w) if w in WAVE_ORDER else len(WAVE_ORDER), w))


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("exwatch.web", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        finalize=lambda value: "" if value is None else value,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, when=_when, num=_num, wave_name=wave_name)
    env.globals.update(signed=_signed, css=Markup(CSS))
    return env


ENV = _environment()


def render(template: str, **context: Any) -> str:
    """A template rendered with autoescape (``identity``: who is signed in, for the header)."""
    context.setdefault("identity", None)
    context["identity"] = (
        context["identity"] if getattr(context["identity"], "kind", None) == "session" else None
    )
    return ENV.get_template(template).render(**context)


# -- charts (matplotlib is not thread-safe, and a chart only changes with the snapshots) --------

_CHART_LOCK = threading.Lock()
_CHART_CACHE: dict[str, Markup] = {}


def share_chart(snapshots: Sequence[Picture]) -> Markup:
    """The report's protected-share chart (inline SVG), drawn once per distinct snapshot series."""
    from exwatch.report.html import chart_share

    key = repr([(s.scan_id, s.time, sorted(s.waves.items())) for s in snapshots])
    with _CHART_LOCK:
        if key not in _CHART_CACHE:
            if len(_CHART_CACHE) > 32:
                _CHART_CACHE.clear()
            _CHART_CACHE[key] = Markup(chart_share(snapshots))
        return _CHART_CACHE[key]


# -- the pages ----------------------------------------------------------------------------------


def dashboard(
    report: Report,
    page: Any,
    *,
    params: Mapping[str, str | None],
    waves: Sequence[str],
    states: Sequence[str],
    error: str | None = None,
    identity: Any = None,
) -> str:
    """The dashboard: headline, per-wave table, share chart, hosts in a state, compromised-before-protected."""
    latest = report.latest
    statuses = (
        ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in sorted(latest.statuses.items()))
        if latest
        else ""
    )
    listing = page.listing
    shown, total, limit, offset = len(listing.items), listing.total, listing.limit, listing.offset
    keep = {k: v for k, v in params.items() if v not in (None, "") and k != "offset"}
    state = page.state or "vulnerable"
    return render(
        "dashboard.html",
        title="exwatch dashboard",
        store=report.store,
        identity=identity,
        report=report,
        waves=_in_wave_order(latest.waves) if latest else [],
        statuses=statuses,
        chart=share_chart(report.snapshots) if latest else "",
        hosts_title="Exposed servers, longest exposed first"
        if state == "vulnerable"
        else f"Servers {state.replace('_', ' ')}",
        params={k: params.get(k) for k in ("wave", "tag", "q")},
        chosen_state=params.get("state") or "vulnerable",
        states=states,
        wave_choices=waves,
        message=error,
        page=page,
        first_shown=offset + 1 if shown else 0,
        last_shown=offset + shown,
        previous=urlencode({**keep, "offset": max(0, offset - limit)}) if offset > 0 else None,
        next=urlencode({**keep, "offset": offset + limit}) if offset + shown < total else None,
    )


def host_page(view: Any, findings: Listing[FindingRow], *, store: str, identity: Any = None) -> str:
    """One host: identity, latest verdicts with fixes, snapshots, exposure windows, hunts, findings."""
    history = view.history
    waves = _in_wave_order({w for s in history.snapshots for w in s.waves})
    return render(
        "host.html",
        title=f"exwatch host #{history.host_id}",
        store=store,
        identity=identity,
        view=view,
        findings=findings,
        tags=", ".join(f"{k}={v}" for k, v in sorted(history.tags.items())),
        verdict_waves=_in_wave_order(view.verdicts),
        snapshot_waves=waves,
        snapshot_wave_names=[wave_name(w) for w in waves],
    )


def not_found(message: str, *, store: str, identity: Any = None) -> str:
    """The page for an unknown host or path."""
    return render("not_found.html", title="not found", store=store, identity=identity, message=message)
