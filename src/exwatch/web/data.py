"""What the dashboard and the JSON API show, read from the store as plain JSON-ready values.

The figures come from the report model and the store's queries (``exwatch.report.model``,
``exwatch.fleet.queries``), so the web shows exactly the numbers of ``exwatch report --format json``;
only plain listings (hosts in one state, findings) are read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select

from exwatch import __version__
from exwatch.config import mask_url
from exwatch.errors import InputError
from exwatch.fleet import Store
from exwatch.fleet import queries as q
from exwatch.fleet import schema as t
from exwatch.fleet.metrics import STATES
from exwatch.report.model import WAVE_ORDER, ReportOptions, build_report

CONFIDENCES = ("confirmed", "likely", "review")
MAX_LIMIT = 1000


class NotFound(InputError):
    """A host (or another object) the store does not hold; the API answers 404."""


@dataclass(frozen=True)
class Page:
    """One page of a listing: ``limit`` items from ``offset`` on, out of ``total``."""

    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        return {**extra, "total": self.total, "limit": self.limit, "offset": self.offset, "items": self.items}


def check_paging(limit: int, offset: int) -> None:
    """Paging bounds (the API validates them too; the pages and library callers go through here)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise InputError(f"offset must be 0 or more, got {offset}")


def health(store: Store) -> dict[str, Any]:
    """That the store answers: its masked URL, dialect and newest scan."""
    return {
        "status": "ok",
        "version": __version__,
        "store": mask_url(store.url),
        "dialect": store.dialect,
        "latest_scan": store.latest_scan_id(),
    }


def report(store: Store, *, hosts_limit: int = 0) -> dict[str, Any]:
    """The report model (``exwatch report --format json``), with at most ``hosts_limit`` hosts at risk."""
    return build_report(store, ReportOptions(limit=hosts_limit))


def summary(store: Store) -> dict[str, Any]:
    """The headline, the latest snapshot per wave, the week-over-week change and the compromise list."""
    doc = report(store)
    snaps = doc["snapshots"]
    return {
        "generated_at": doc["generated_at"],
        "store": doc["store"],
        "headline": doc["headline"],
        "wave": doc["wave"],
        "snapshots": len(snaps),
        "latest": snaps[-1] if snaps else None,
        "change_7d": doc["change_7d"],
        "compromised_before_protected": doc["compromised_before_protected"],
        "attempts_fit": doc["attempts"]["fit"],
        "definitions": doc["definitions"],
    }


def snapshot_series(store: Store, *, tag: str | None = None) -> list[dict[str, Any]]:
    """The fleet picture at every finished scan's time with its per-wave counts (optionally of tagged
    hosts only): the report's series."""
    pair = q.parse_tag(tag)
    q.check_tag(store, pair)
    return [s.to_dict() for s in q.fleet_series(store, tag=pair)]


def _latest_finished(store: Store) -> tuple[int, str] | None:
    """The newest scan in the fleet picture (the picture's time is its time)."""
    sc = t.scans
    with store.connect() as conn:
        row = conn.execute(
            select(sc.c.id, sc.c.started_at)
            .where(sc.c.finished_at.is_not(None), sc.c.kind == "scan", sc.c.pictured.is_not(None))
            .order_by(sc.c.started_at.desc(), sc.c.id.desc())
            .limit(1)
        ).first()
    return None if row is None else (int(row.id), q.iso(row.started_at) or "")


def _matches(row: dict[str, Any], text: str) -> bool:
    fields = (row.get("address"), row.get("name"), row.get("fe_server"), row.get("build"))
    return any(text in str(v).lower() for v in fields if v)


def hosts(
    store: Store,
    *,
    state: str = "vulnerable",
    wave: str | None = None,
    tag: str | None = None,
    text: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
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
    latest = _latest_finished(store)
    if latest is None:
        return Page(0, limit, offset, []).to_dict(scan=None, time=None, state=state)
    scan_id, when = latest
    waves = [wave] if wave else None
    if state == "vulnerable":
        if needle is None and tag_pair is None:
            total = q.count_in_state(store, state, waves=waves)
            rows = q.hosts_at_risk(store, waves=waves, limit=offset + limit)
        else:
            rows = q.hosts_at_risk(store, waves=waves, tag=tag_pair)
            if needle is not None:
                rows = [r for r in rows if _matches(r, needle)]
            total = len(rows)
        items = [{**r, "state": state} for r in rows[offset : offset + limit]]
    else:
        total, items = _hosts_in_state(store, state, waves, tag_pair, needle, limit, offset)
    return Page(total, limit, offset, items).to_dict(scan=scan_id, time=when, state=state)


def _hosts_in_state(
    store: Store,
    state: str,
    waves: list[str] | None,
    tag: tuple[str, str] | None,
    needle: str | None,
    limit: int,
    offset: int,
) -> tuple[int, list[dict[str, Any]]]:
    s, h, o, d, tg, hc = (
        t.host_states,
        t.hosts,
        t.observations,
        t.details,
        t.tags,
        t.host_current,
    )
    # the observation of the service that gave the host its verdict
    verdict_obs = (
        select(func.min(o.c.id))
        .where(
            o.c.scan_id == hc.c.scan_id,
            o.c.host_id == hc.c.host_id,
            func.coalesce(o.c.port, 0) == func.coalesce(hc.c.port, 0),
        )
        .correlate(hc)
        .scalar_subquery()
    )
    source: Any = (
        hc.join(h, h.c.id == hc.c.host_id)
        .join(s, s.c.host_id == hc.c.host_id)
        .outerjoin(o, o.c.id == verdict_obs)
        .outerjoin(d, d.c.id == o.c.detail_id)
    )
    conds: list[Any] = [s.c.state == state, *q._current(q.picture_time(store), q.DEFAULT_MAX_AGE)]
    if waves:
        conds.append(s.c.wave.in_(waves))
    if tag is not None:
        source = source.join(tg, and_(tg.c.host_id == s.c.host_id, tg.c.key == tag[0], tg.c.value == tag[1]))
    if needle is not None:
        pattern = f"%{needle}%"
        conds.append(
            or_(*(func.lower(c).like(pattern) for c in (h.c.address, h.c.name, h.c.fe_server, hc.c.build)))
        )
    base = select(
        s.c.host_id, s.c.wave, h.c.address, h.c.name, h.c.fe_server, hc.c.build, hc.c.cu, hc.c.port, d.c.body
    ).select_from(source)
    with store.connect() as conn:
        total = int(
            conn.execute(select(func.count()).select_from(base.where(*conds).subquery())).scalar() or 0
        )
        rows = conn.execute(
            base.where(*conds).order_by(s.c.host_id, s.c.wave).limit(limit).offset(offset)
        ).all()
    items = [
        {
            "host_id": r.host_id,
            "address": r.address,
            "name": r.name,
            "fe_server": r.fe_server,
            "wave": r.wave,
            "build": r.build,
            "cu": r.cu,
            "port": r.port,
            "exposed_since": None,
            "exposed_days": None,
            "fix": q._fix_text(r.body, r.wave),
            "state": state,
        }
        for r in rows
    ]
    return total, items


def host(store: Store, host_id: int) -> dict[str, Any]:
    """One host across snapshots and hunts, with its latest per-wave verdicts (reason and fix)."""
    with store.connect() as conn:
        known = conn.execute(select(t.hosts.c.id).where(t.hosts.c.id == host_id)).first()
    if known is None:
        raise NotFound(f"no host #{host_id} in the store")
    doc = q.host_history(store, f"#{host_id}")
    doc["verdicts"] = _latest_verdicts(store, host_id)
    return doc


def _latest_verdicts(store: Store, host_id: int) -> dict[str, Any]:
    """The host's verdicts in the fleet picture: the observation of the service that gave them."""
    o, d, hc = t.observations, t.details, t.host_current
    with store.connect() as conn:
        row = conn.execute(
            select(o.c.scan_id, d.c.body)
            .join(hc, and_(hc.c.host_id == o.c.host_id, hc.c.scan_id == o.c.scan_id))
            .outerjoin(d, d.c.id == o.c.detail_id)
            .where(o.c.host_id == host_id, o.c.status == "exchange")
            .order_by((func.coalesce(o.c.port, 0) != func.coalesce(hc.c.port, 0)), o.c.id)
            .limit(1)
        ).first()
    if row is None or not row.body:
        return {}
    waves = json.loads(row.body).get("waves") or {}
    out: dict[str, Any] = {}
    for wave, verdict in waves.items():
        if isinstance(verdict, dict):
            out[wave] = {
                "state": verdict.get("state"),
                "reason": verdict.get("reason"),
                "fix": q._fix_text(row.body, wave),
                "scan": row.scan_id,
            }
        else:
            out[wave] = {"state": verdict, "reason": None, "fix": None, "scan": row.scan_id}
    return out


def findings(
    store: Store,
    *,
    host: str | None = None,
    host_id: int | None = None,
    wave: str | None = None,
    confidence: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Hunt findings in time order, filtered by host (#id, address, name, X-FEServer), wave, confidence."""
    check_paging(limit, offset)
    if confidence is not None and confidence not in CONFIDENCES:
        raise InputError(f"unknown confidence {confidence!r}: use one of {', '.join(CONFIDENCES)}")
    f, h = t.findings, t.hosts
    conds: list[Any] = []
    if host_id is not None:
        conds.append(f.c.host_id == host_id)
    if host is not None and host.strip():
        word = host.strip().lower()
        ids = store.find_hosts(word)
        conds.append(
            or_(f.c.host_id.in_(ids), func.lower(f.c.host) == word) if ids else func.lower(f.c.host) == word
        )
    if wave:
        conds.append(f.c.wave == wave)
    if confidence:
        conds.append(f.c.confidence == confidence)
    query = (
        select(f, h.c.address, h.c.name.label("host_name"), h.c.fe_server)
        .outerjoin(h, h.c.id == f.c.host_id)
        .where(*conds)
    )
    with store.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(f).where(*conds)).scalar() or 0)
        rows = conn.execute(
            query.order_by(f.c.time.asc().nulls_last(), f.c.id).limit(limit).offset(offset)
        ).all()
    items = [
        {
            "id": r.id,
            "hunt": r.hunt_id,
            "host_id": r.host_id,
            "host": r.host,
            "address": r.address,
            "name": r.host_name,
            "fe_server": r.fe_server,
            "rule": r.rule,
            "wave": r.wave,
            "cve": r.cve,
            "confidence": r.confidence,
            "time": q.iso(r.time),
            "title": r.title,
            "description": r.description,
            "evidence": json.loads(r.evidence) if r.evidence else {},
        }
        for r in rows
    ]
    return Page(total, limit, offset, items).to_dict()
