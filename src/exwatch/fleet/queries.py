"""Fleet aggregates computed in SQL (GROUP BY over the store), returned as plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, literal_column, select

from exwatch.errors import InputError
from exwatch.fleet import schema as t
from exwatch.fleet.metrics import STATES, WaveCounts, counts_from
from exwatch.fleet.store import PROTECTED, Store
from exwatch.fleet.timeutil import from_db, to_db

EVIDENCE_CONFIDENCE = ("confirmed", "likely")


def iso(value: Any) -> str | None:
    """A database time as ISO 8601 UTC text (None stays None)."""
    when = from_db(value)
    return when.isoformat() if when else None


@dataclass
class Snapshot:
    """One finished scan: its time, per-wave counts and host-level statuses."""

    scan_id: int
    time: datetime
    waves: dict[str, WaveCounts] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scan": self.scan_id,
            "time": self.time.isoformat(),
            "statuses": dict(self.statuses),
            "waves": {w: c.to_dict() for w, c in sorted(self.waves.items())},
        }


def parse_tag(text: str | None) -> tuple[str, str] | None:
    """``key=value`` as a pair (None stays None); anything else is an InputError."""
    if text is None:
        return None
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"a tag filter is KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def snapshots(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tag: tuple[str, str] | None = None,
) -> list[Snapshot]:
    """Every finished snapshot in time order with its counts (from scan_summary, or grouped by tag)."""
    sc, ss, s, o, tg = t.scans, t.scan_summary, t.observation_states, t.observations, t.tags
    conds: list[Any] = [sc.c.finished_at.is_not(None), sc.c.kind == "scan"]
    if since is not None:
        conds.append(sc.c.started_at >= to_db(since))
    if until is not None:
        conds.append(sc.c.started_at <= to_db(until))
    with store.connect() as conn:
        scans = conn.execute(
            select(sc.c.id, sc.c.started_at).where(*conds).order_by(sc.c.started_at, sc.c.id)
        ).all()
        result = {row.id: Snapshot(row.id, from_db(row.started_at) or datetime.min) for row in scans}
        if not result:
            return []
        ids = list(result)
        if tag is None:
            rows: list[Any] = list(
                conn.execute(
                    select(ss.c.scan_id, ss.c.wave, ss.c.state, ss.c.n).where(ss.c.scan_id.in_(ids))
                ).all()
            )
        else:
            tagged = and_(tg.c.host_id == s.c.host_id, tg.c.key == tag[0], tg.c.value == tag[1])
            rows = list(
                conn.execute(
                    select(s.c.scan_id, s.c.wave, s.c.state, func.count())
                    .select_from(s.join(tg, tagged))
                    .where(s.c.scan_id.in_(ids))
                    .group_by(s.c.scan_id, s.c.wave, s.c.state)
                ).all()
            )
            otag = and_(tg.c.host_id == o.c.host_id, tg.c.key == tag[0], tg.c.value == tag[1])
            rows += conn.execute(
                select(o.c.scan_id, literal_column("'*'"), o.c.status, func.count(o.c.host_id.distinct()))
                .select_from(o.join(tg, otag))
                .where(o.c.scan_id.in_(ids))
                .group_by(o.c.scan_id, o.c.status)
            ).all()
    per: dict[tuple[int, str], dict[str, int]] = {}
    for scan_id, wave, state, n in rows:
        if wave == "*":
            result[scan_id].statuses[state] = int(n)
        else:
            per.setdefault((scan_id, wave), {})[state] = int(n)
    for (scan_id, wave), states in per.items():
        result[scan_id].waves[wave] = counts_from(states)
    return list(result.values())


def breakdown(
    store: Store, scan_id: int, wave: str, *, by: str = "cu", tag: tuple[str, str] | None = None
) -> dict[str, WaveCounts]:
    """Counts per CU (``by="cu"``), per build (``by="build"``) or per value of a tag key (``by="tag:KEY"``)
    for one snapshot and wave."""
    s, tg = t.observation_states, t.tags
    conds = [s.c.scan_id == scan_id, s.c.wave == wave]
    source: Any = s
    if tag is not None:
        f = tg.alias("f")
        source = source.join(f, and_(f.c.host_id == s.c.host_id, f.c.key == tag[0], f.c.value == tag[1]))
    if by == "cu":
        group: Any = func.coalesce(s.c.cu, "unknown build")
    elif by == "build":
        o = t.observations
        source = source.join(o, and_(o.c.scan_id == s.c.scan_id, o.c.host_id == s.c.host_id))
        group = func.coalesce(o.c.build, "unknown build")
    elif by.startswith("tag:"):
        g = tg.alias("g")
        source = source.outerjoin(g, and_(g.c.host_id == s.c.host_id, g.c.key == by[4:]))
        group = func.coalesce(g.c.value, "(untagged)")
    else:
        raise InputError(f"unknown breakdown {by!r}: use cu, build or tag:KEY")
    with store.connect() as conn:
        rows = conn.execute(
            select(group.label("g"), s.c.state, func.count())
            .select_from(source)
            .where(*conds)
            .group_by(group, s.c.state)
        ).all()
    per: dict[str, dict[str, int]] = {}
    for g_value, state, n in rows:
        per.setdefault(str(g_value), {})[state] = int(n)
    return {k: counts_from(v) for k, v in sorted(per.items())}


def tag_keys(store: Store, wanted: tuple[str, ...]) -> list[str]:
    """The keys among ``wanted`` that some host carries (an index lookup each)."""
    tg = t.tags
    with store.connect() as conn:
        return [k for k in wanted if conn.execute(select(tg.c.key).where(tg.c.key == k).limit(1)).first()]


def _fix_text(detail: str | None, wave: str) -> str | None:
    if not detail:
        return None
    verdict = (json.loads(detail).get("waves") or {}).get(wave) or {}
    fix = verdict.get("fix") if isinstance(verdict, dict) else None
    if isinstance(fix, dict):
        if fix.get("text"):
            return str(fix["text"])
        parts = [*fix.get("security_update", []), fix.get("cumulative_update") or ""]
        return ", ".join(p for p in parts if p) or None
    return str(fix) if fix else None


def hosts_at_risk(
    store: Store,
    scan_id: int,
    *,
    waves: list[str] | None = None,
    tag: tuple[str, str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Hosts vulnerable in the snapshot, longest exposed first, with their fix."""
    s, e, h, o, d, tg, sc = (
        t.observation_states,
        t.host_exposure,
        t.hosts,
        t.observations,
        t.details,
        t.tags,
        t.scans,
    )
    conds = [s.c.scan_id == scan_id, s.c.state == "vulnerable"]
    if waves:
        conds.append(s.c.wave.in_(waves))
    source: Any = (
        s.join(h, h.c.id == s.c.host_id)
        .outerjoin(e, and_(e.c.host_id == s.c.host_id, e.c.wave == s.c.wave))
        .outerjoin(o, and_(o.c.scan_id == s.c.scan_id, o.c.host_id == s.c.host_id))
        .outerjoin(d, d.c.id == o.c.detail_id)
    )
    if tag is not None:
        source = source.join(tg, and_(tg.c.host_id == s.c.host_id, tg.c.key == tag[0], tg.c.value == tag[1]))
    query = (
        select(
            s.c.host_id,
            s.c.wave,
            h.c.address,
            h.c.name,
            h.c.fe_server,
            o.c.build,
            s.c.cu,
            e.c.first_vulnerable,
            d.c.body,
        )
        .select_from(source)
        .where(*conds)
        .order_by(e.c.first_vulnerable.asc().nulls_last(), s.c.host_id, s.c.wave)
    )
    if limit is not None:
        query = query.limit(limit)
    with store.connect() as conn:
        at = from_db(conn.execute(select(sc.c.started_at).where(sc.c.id == scan_id)).scalar())
        rows = conn.execute(query).all()
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for row in rows:
        if (row.host_id, row.wave) in seen:  # a host observed twice in one scan
            continue
        seen.add((row.host_id, row.wave))
        since = from_db(row.first_vulnerable)
        out.append(
            {
                "host_id": row.host_id,
                "address": row.address,
                "name": row.name,
                "fe_server": row.fe_server,
                "wave": row.wave,
                "build": row.build,
                "cu": row.cu,
                "exposed_since": since.isoformat() if since else None,
                "exposed_days": round((at - since).total_seconds() / 86400, 2) if since and at else None,
                "fix": _fix_text(row.body, row.wave),
            }
        )
    return out


def _host_states(conn: Connection, host_id: int, waves: list[str] | None = None) -> list[Any]:
    """(scan_id, started_at, finished_at, wave, state) of one host in every snapshot that saw it.

    The host's snapshots come from observations (index host_id, scan_id); the states are then looked
    up by their primary key (scan_id, wave, host_id) with explicit lists, so that no database scans
    the states table for one host.
    """
    o, s, sc, ss = t.observations, t.observation_states, t.scans, t.scan_summary
    scan_ids = sorted(
        {int(i) for i in conn.execute(select(o.c.scan_id).where(o.c.host_id == host_id)).scalars()}
    )
    if not scan_ids:
        return []
    if waves is None:
        waves = sorted(w for w in conn.execute(select(ss.c.wave).distinct()).scalars() if w != "*")
    if not waves:
        return []
    return list(
        conn.execute(
            select(s.c.scan_id, sc.c.started_at, sc.c.finished_at, s.c.wave, s.c.state)
            .join(sc, sc.c.id == s.c.scan_id)
            .where(s.c.scan_id.in_(scan_ids), s.c.wave.in_(waves), s.c.host_id == host_id)
        ).all()
    )


def _first_protected(conn: Connection, host_id: int, wave: str) -> datetime | None:
    """The first finished snapshot that saw the host patched or mitigated for the wave."""
    times = [
        row.started_at
        for row in _host_states(conn, host_id, [wave])
        if row.finished_at is not None and row.state in PROTECTED
    ]
    return from_db(min(times)) if times else None


def compromise(store: Store, *, tag: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Per host and wave with evidence: first evidence of exploitation, protection time, and the flag.

    First evidence = the earliest finding of confidence confirmed or likely.  Protected at = the end of
    the exposure window (host_exposure), or for a host never seen vulnerable, its first protected
    snapshot.  ``compromised_before_protected`` = evidence earlier than protection, or never protected.
    """
    f, e, h, tg = t.findings, t.host_exposure, t.hosts, t.tags
    with store.connect() as conn:
        source: Any = f.join(h, h.c.id == f.c.host_id).outerjoin(
            e, and_(e.c.host_id == f.c.host_id, e.c.wave == f.c.wave)
        )
        if tag is not None:
            source = source.join(
                tg, and_(tg.c.host_id == f.c.host_id, tg.c.key == tag[0], tg.c.value == tag[1])
            )
        rows = conn.execute(
            select(
                f.c.host_id,
                f.c.wave,
                h.c.address,
                h.c.name,
                h.c.fe_server,
                func.min(f.c.time).label("first_evidence"),
                func.count().label("findings"),
                func.min(e.c.first_vulnerable).label("first_vulnerable"),
                func.min(e.c.first_protected).label("window_end"),
            )
            .select_from(source)
            .where(
                f.c.confidence.in_(EVIDENCE_CONFIDENCE),
                f.c.time.is_not(None),
                # only the waves the scans judge (web shells, post-exploitation are not waves)
                f.c.wave.in_(select(t.scan_summary.c.wave).where(t.scan_summary.c.wave != "*").distinct()),
            )
            .group_by(f.c.host_id, f.c.wave, h.c.address, h.c.name, h.c.fe_server)
            .order_by(func.min(f.c.time), f.c.host_id)
        ).all()
    out = []
    for row in rows:
        evidence = from_db(row.first_evidence)
        if row.first_vulnerable is not None:
            protected = from_db(row.window_end)
        else:
            with store.connect() as conn:
                protected = _first_protected(conn, row.host_id, row.wave)
        before = evidence is not None and (protected is None or evidence < protected)
        out.append(
            {
                "host_id": row.host_id,
                "address": row.address,
                "name": row.name,
                "fe_server": row.fe_server,
                "wave": row.wave,
                "first_evidence": evidence.isoformat() if evidence else None,
                "findings": int(row.findings),
                "first_vulnerable": iso(row.first_vulnerable),
                "protected_at": protected.isoformat() if protected else None,
                "compromised_before_protected": before,
            }
        )
    return out


def exposure_windows(
    store: Store, *, wave: str | None = None, host_id: int | None = None
) -> list[dict[str, Any]]:
    """Exposure windows: first seen vulnerable to first seen protected after it (open when None)."""
    e = t.host_exposure
    conds: list[Any] = []
    if wave:
        conds.append(e.c.wave == wave)
    if host_id is not None:
        conds.append(e.c.host_id == host_id)
    with store.connect() as conn:
        rows = conn.execute(select(e).where(*conds).order_by(e.c.host_id, e.c.wave)).all()
    out = []
    for row in rows:
        start, end = from_db(row.first_vulnerable), from_db(row.first_protected)
        out.append(
            {
                "host_id": row.host_id,
                "wave": row.wave,
                "first_vulnerable": start.isoformat() if start else None,
                "first_protected": end.isoformat() if end else None,
                "days": round((end - start).total_seconds() / 86400, 3) if start and end else None,
            }
        )
    return out


def attempts_per_hour(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tag: tuple[str, str] | None = None,
) -> list[tuple[datetime, int]]:
    """Hunt findings across hosts counted per hour (every finding with a time is one attempt's trace)."""
    f, tg = t.findings, t.tags
    if store.dialect == "postgresql":
        bucket: Any = func.date_trunc("hour", f.c.time)
    else:
        bucket = func.strftime("%Y-%m-%d %H:00:00", f.c.time)
    conds: list[Any] = [f.c.time.is_not(None)]
    if since is not None:
        conds.append(f.c.time >= to_db(since))
    if until is not None:
        conds.append(f.c.time < to_db(until))
    source: Any = f
    if tag is not None:
        source = f.join(tg, and_(tg.c.host_id == f.c.host_id, tg.c.key == tag[0], tg.c.value == tag[1]))
    with store.connect() as conn:
        rows = conn.execute(
            select(bucket.label("hour"), func.count())
            .select_from(source)
            .where(*conds)
            .group_by(bucket)
            .order_by(bucket)
        ).all()
    return [(from_db(hour) or datetime.min, int(n)) for hour, n in rows]


def host_history(store: Store, host: str) -> dict[str, Any]:
    """One host across snapshots and hunts: identity, tags, per-snapshot states, exposure, hunts."""
    matches = store.find_hosts(host)
    if not matches:
        raise InputError(f"no host in the store matches {host!r}")
    if len(matches) > 1:
        raise InputError(f"{host!r} matches {len(matches)} hosts; use the host id (#N)")
    host_id = matches[0]
    h, o, sc, tg, hu, f = (
        t.hosts,
        t.observations,
        t.scans,
        t.tags,
        t.hunts,
        t.findings,
    )
    with store.connect() as conn:
        ident = conn.execute(select(h).where(h.c.id == host_id)).one()
        tags = dict(conn.execute(select(tg.c.key, tg.c.value).where(tg.c.host_id == host_id)).all())
        obs = conn.execute(
            select(
                o.c.scan_id, sc.c.started_at, o.c.status, o.c.address, o.c.build, o.c.build_source, o.c.error
            )
            .join(sc, sc.c.id == o.c.scan_id)
            .where(o.c.host_id == host_id)
            .order_by(sc.c.started_at, o.c.scan_id)
        ).all()
        # per-wave states by primary key, for this host's snapshots only
        states: dict[int, dict[str, str]] = {}
        for row in _host_states(conn, host_id):
            states.setdefault(row.scan_id, {})[row.wave] = row.state
        hunts = conn.execute(
            select(hu.c.id, hu.c.started_at, hu.c.verdict, func.count(f.c.id), func.min(f.c.time))
            .outerjoin(f, f.c.hunt_id == hu.c.id)
            .where(hu.c.host_id == host_id)
            .group_by(hu.c.id, hu.c.started_at, hu.c.verdict)
            .order_by(hu.c.started_at)
        ).all()
    snapshots_out = []
    seen_scans: set[int] = set()
    for row in obs:
        if row.scan_id in seen_scans:
            continue
        seen_scans.add(row.scan_id)
        when = from_db(row.started_at)
        snapshots_out.append(
            {
                "scan": row.scan_id,
                "time": when.isoformat() if when else None,
                "status": row.status,
                "address": row.address,
                "build": row.build,
                "build_source": row.build_source,
                "error": row.error,
                "waves": states.get(row.scan_id, {}),
            }
        )
    return {
        "host_id": host_id,
        "address": ident.address,
        "name": ident.name,
        "fe_server": ident.fe_server,
        "cert": ident.cert,
        "first_seen": iso(ident.first_seen),
        "tags": tags,
        "snapshots": snapshots_out,
        "exposure": exposure_windows(store, host_id=host_id),
        "hunts": [
            {
                "hunt": hid,
                "time": (from_db(started) or datetime.min).isoformat(),
                "verdict": verdict,
                "findings": int(n),
                "first_finding": iso(first),
            }
            for hid, started, verdict, n, first in hunts
        ],
    }


def list_hosts(
    store: Store, *, tag: tuple[str, str] | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Known hosts with their latest observation's status and build, and their tags."""
    h, o, tg, sc = t.hosts, t.observations, t.tags, t.scans
    latest = (
        select(o.c.host_id, func.max(o.c.scan_id).label("scan_id"))
        .where(o.c.host_id.is_not(None))
        .group_by(o.c.host_id)
    ).subquery()
    source: Any = (
        h.outerjoin(latest, latest.c.host_id == h.c.id)
        .outerjoin(o, and_(o.c.host_id == h.c.id, o.c.scan_id == latest.c.scan_id))
        .outerjoin(sc, sc.c.id == latest.c.scan_id)
    )
    conds: list[Any] = []
    if tag is not None:
        conds.append(
            select(tg.c.host_id)
            .where(tg.c.host_id == h.c.id, tg.c.key == tag[0], tg.c.value == tag[1])
            .exists()
        )
    query = (
        select(h.c.id, h.c.address, h.c.name, h.c.fe_server, o.c.status, o.c.build, sc.c.started_at)
        .select_from(source)
        .where(*conds)
        .order_by(h.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with store.connect() as conn:
        rows = conn.execute(query).all()
        all_tags: dict[int, dict[str, str]] = {}
        for host_id, key, value in conn.execute(select(tg.c.host_id, tg.c.key, tg.c.value)):
            all_tags.setdefault(host_id, {})[key] = value
    out, seen = [], set()
    for row in rows:
        if row.id in seen:
            continue
        seen.add(row.id)
        last = from_db(row.started_at)
        out.append(
            {
                "host_id": row.id,
                "address": row.address,
                "name": row.name,
                "fe_server": row.fe_server,
                "status": row.status,
                "build": row.build,
                "last_seen": last.isoformat() if last else None,
                "tags": all_tags.get(row.id, {}),
            }
        )
    return out


__all__ = [
    "STATES",
    "Snapshot",
    "attempts_per_hour",
    "breakdown",
    "compromise",
    "exposure_windows",
    "host_history",
    "hosts_at_risk",
    "list_hosts",
    "parse_tag",
    "snapshots",
    "tag_keys",
]
