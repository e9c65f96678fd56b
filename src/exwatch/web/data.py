"""What the dashboard and the JSON API show, read through the fleet read API (``exwatch.fleet``).

The figures come from the report model (``exwatch.report.model``), so the web shows exactly the
numbers of ``exwatch report --format json``; the listings (hosts in one state, one host, findings)
are the read API's.  Nothing here writes SQL: the values are typed up to the JSON edge
(``to_dict``) or the templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from exwatch import __version__
from exwatch.config import mask_url
from exwatch.errors import InputError
from exwatch.fleet import queries as q
from exwatch.fleet.jsontypes import JSON, JSONObject
from exwatch.fleet.metrics import STATES
from exwatch.fleet.rows import FindingRow, HostHistory, HostState, Listing, WaveVerdict
from exwatch.fleet.store import Store
from exwatch.report.model import WAVE_ORDER, Report, ReportOptions, build_report

CONFIDENCES = ("confirmed", "likely", "review")
MAX_LIMIT = 1000


class NotFound(InputError):
    """A host (or another object) the store does not hold; the API answers 404."""


def check_paging(limit: int, offset: int) -> None:
    """Paging bounds (the API validates them too; the pages and library callers go through here)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise InputError(f"offset must be 0 or more, got {offset}")


def _page(listing: Listing[HostState] | Listing[FindingRow], items: list[JSON]) -> JSONObject:
    return {"total": listing.total, "limit": listing.limit, "offset": listing.offset, "items": items}


def health(store: Store) -> JSONObject:
    """That the store answers: its masked URL, dialect and newest scan."""
    return {
        "status": "ok",
        "version": __version__,
        "store": mask_url(store.url),
        "dialect": store.dialect,
        "latest_scan": store.latest_scan_id(),
    }


def report(store: Store, *, hosts_limit: int = 0) -> Report:
    """The report model (``exwatch report --format json``), with at most ``hosts_limit`` hosts at risk."""
    return build_report(store, ReportOptions(limit=hosts_limit))


def summary(store: Store) -> JSONObject:
    """The headline, the latest snapshot per wave, the week-over-week change and the compromise list."""
    doc = report(store)
    latest = doc.latest
    return {
        "generated_at": doc.generated_at.isoformat(),
        "store": doc.store,
        "headline": doc.headline,
        "wave": doc.wave,
        "snapshots": len(doc.snapshots),
        "latest": latest.to_dict() if latest else None,
        "change_7d": doc.change_7d.to_dict() if doc.change_7d else None,
        "compromised_before_protected": [c.to_dict() for c in doc.compromised_before_protected],
        "attempts_fit": doc.attempts.fit.to_dict() if doc.attempts.fit else None,
        "definitions": dict(doc.definitions),
    }


def snapshot_series(store: Store, *, tag: str | None = None) -> list[JSON]:
    """The fleet picture at every finished scan's time with its per-wave counts (optionally of tagged
    hosts only): the report's series."""
    pair = q.parse_tag(tag)
    q.check_tag(store, pair)
    return [s.to_dict() for s in q.fleet_series(store, tag=pair)]


@dataclass(frozen=True)
class HostsPage:
    """Hosts in one state in the current fleet picture, one page of them, and the picture's scan."""

    state: str
    scan: int | None
    time: datetime | None
    listing: Listing[HostState]

    def to_dict(self) -> JSONObject:
        return {
            "scan": self.scan,
            "time": self.time.isoformat() if self.time else None,
            "state": self.state,
            **_page(self.listing, [host_item(h) for h in self.listing.items]),
        }


def host_item(host: HostState) -> JSONObject:
    """A host of ``/api/hosts``: a vulnerable one as the report's host at risk, others without the
    exposure's scan and conflict."""
    if host.state == "vulnerable":
        return {**host.to_dict(), "state": host.state}
    full = host.to_dict()
    keys = ("host_id", "address", "name", "fe_server", "wave", "build", "cu", "port")
    return {
        **{k: full[k] for k in keys},
        "exposed_since": None,
        "exposed_days": None,
        "fix": host.fix,
        "state": host.state,
    }


def hosts(
    store: Store,
    *,
    state: str = "vulnerable",
    wave: str | None = None,
    tag: str | None = None,
    text: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> HostsPage:
    """Hosts in ``state`` for a wave in the current fleet picture (every known host's latest verdict,
    stale and retired hosts left out), one row per host and wave.

    ``vulnerable`` (the default) is the report's list of hosts at risk, longest exposed first, with the
    fix; other states are listed by host id.  ``text`` filters on address, name, X-FEServer or build.
    """
    check_paging(limit, offset)
    if state not in STATES:
        raise InputError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
    if wave is not None and wave not in WAVE_ORDER:
        raise InputError(f"unknown wave {wave!r}: use one of {', '.join(WAVE_ORDER)}")
    tag_pair = q.parse_tag(tag)
    needle = (text or "").strip().lower() or None
    latest = q.latest_scan(store)
    if latest is None:
        return HostsPage(state, None, None, Listing(0, limit, offset, ()))
    waves = [wave] if wave else None
    total = q.count_in_state(store, state, waves=waves, tag=tag_pair, text=needle)
    rows = q.hosts_in_state(store, state, waves=waves, tag=tag_pair, text=needle, limit=limit, offset=offset)
    return HostsPage(state, latest[0], latest[1], Listing(total, limit, offset, tuple(rows)))


@dataclass(frozen=True)
class HostView:
    """One host across snapshots and hunts, with its verdicts in the fleet picture (reason and fix)."""

    history: HostHistory
    verdicts: Mapping[str, WaveVerdict]

    def to_dict(self) -> JSONObject:
        return {**self.history.to_dict(), "verdicts": {w: v.to_dict() for w, v in self.verdicts.items()}}


def host(store: Store, host_id: int) -> HostView:
    """One host across snapshots and hunts, with its latest per-wave verdicts (reason and fix)."""
    if not q.host_exists(store, host_id):
        raise NotFound(f"no host #{host_id} in the store")
    return HostView(q.host_history(store, f"#{host_id}"), q.host_verdicts(store, host_id))


def findings(
    store: Store,
    *,
    host: str | None = None,
    host_id: int | None = None,
    wave: str | None = None,
    confidence: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Listing[FindingRow]:
    """Hunt findings in time order, filtered by host (#id, address, name, X-FEServer), wave, confidence."""
    check_paging(limit, offset)
    if confidence is not None and confidence not in CONFIDENCES:
        raise InputError(f"unknown confidence {confidence!r}: use one of {', '.join(CONFIDENCES)}")
    return q.findings(
        store, host=host, host_id=host_id, wave=wave, confidence=confidence, limit=limit, offset=offset
    )


def findings_json(listing: Listing[FindingRow]) -> JSONObject:
    """A page of findings as ``/api/findings`` answers it."""
    return _page(listing, [f.to_dict() for f in listing.items])
