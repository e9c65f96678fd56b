"""Fleet aggregates computed in SQL (GROUP BY over the store), returned as plain values."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, literal_column, or_, select

from exwatch.errors import InputError
from exwatch.fleet import picture as pic
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


DEFAULT_MAX_AGE = timedelta(days=30)


@dataclass
class Picture:
    """The fleet picture at one scan's time: every known host's latest verdict (not only that scan's).

    ``waves`` and ``statuses`` count the current hosts; ``stale`` counts hosts whose verdict is older
    than the max age (shown apart, out of the share); ``scan_statuses`` is what this scan itself saw,
    and ``scope`` the targets it was given.
    """

    scan_id: int
    time: datetime
    waves: dict[str, WaveCounts] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    stale: int = 0
    scan_statuses: dict[str, int] = field(default_factory=dict)
    scope: list[str] | None = None

    @property
    def hosts(self) -> int:
        return sum(self.statuses.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "scan": self.scan_id,
            "time": self.time.isoformat(),
            "hosts": self.hosts,
            "statuses": dict(sorted(self.statuses.items())),
            "stale": self.stale,
            "scan_statuses": dict(sorted(self.scan_statuses.items())),
            "scope": self.scope,
            "waves": {w: c.to_dict() for w, c in sorted(self.waves.items())},
        }


def scope_of(params_text: str | None) -> list[str] | None:
    """The targets a scan was given, from its stored parameters (None when it did not say)."""
    if not params_text:
        return None
    try:
        params = json.loads(params_text)
    except ValueError:
        return None
    targets = params.get("targets") if isinstance(params, dict) else None
    if targets is None:
        return None
    if isinstance(targets, str):
        return [targets]
    return [str(x) for x in targets]


def _is_stale(source_time: datetime | None, at: datetime, max_age: timedelta | None) -> bool:
    return max_age is not None and source_time is not None and source_time < at - max_age


def fleet_series(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tag: tuple[str, str] | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
) -> list[Picture]:
    """The fleet picture at every finished scan's time, in time order (exwatch.fleet.picture).

    Without a tag filter it is read from the per-scan picture summaries; with one it is computed from
    the observations of the tagged hosts (one set-based query per scan).
    """
    sc, ps, ss = t.scans, t.picture_summary, t.scan_summary
    conds: list[Any] = [pic.finished_scans()]
    if since is not None:
        conds.append(sc.c.started_at >= to_db(since))
    if until is not None:
        conds.append(sc.c.started_at <= to_db(until))
    with store.connect() as conn:
        scans = conn.execute(
            select(sc.c.id, sc.c.started_at, sc.c.params).where(*conds).order_by(sc.c.started_at, sc.c.id)
        ).all()
        if not scans:
            return []
        times = {
            int(i): from_db(w)
            for i, w in conn.execute(select(sc.c.id, sc.c.started_at).where(pic.finished_scans()))
        }
        result = {
            int(r.id): Picture(int(r.id), from_db(r.started_at) or datetime.min, scope=scope_of(r.params))
            for r in scans
        }
        ids = list(result)
        rows: list[tuple[int, str, str, int, int]] = []
        if tag is None:
            for chunk in _id_chunks(ids):
                rows += [
                    (int(a), str(b), str(c), int(d), int(e))
                    for a, b, c, d, e in conn.execute(
                        select(ps.c.scan_id, ps.c.wave, ps.c.state, ps.c.source_scan, ps.c.n).where(
                            ps.c.scan_id.in_(chunk)
                        )
                    )
                ]
        else:
            for scan_id in ids:
                rows += _tagged_picture_counts(conn, scan_id, result[scan_id].time, tag)
        for chunk in _id_chunks(ids):
            for scan_id, state, n in conn.execute(
                select(ss.c.scan_id, ss.c.state, ss.c.n).where(ss.c.scan_id.in_(chunk), ss.c.wave == "*")
            ):
                result[int(scan_id)].scan_statuses[str(state)] = int(n)
    per: dict[tuple[int, str], dict[str, int]] = {}
    stale_per: dict[tuple[int, str], int] = {}
    for scan_id, wave, state, source, n in rows:
        snap = result[scan_id]
        stale = _is_stale(times.get(source), snap.time, max_age)
        if wave == pic.HOST_STATUS:
            if stale:
                snap.stale += n
            else:
                snap.statuses[state] = snap.statuses.get(state, 0) + n
        elif stale:
            stale_per[(scan_id, wave)] = stale_per.get((scan_id, wave), 0) + n
        else:
            per.setdefault((scan_id, wave), {})
            per[(scan_id, wave)][state] = per[(scan_id, wave)].get(state, 0) + n
    for key in set(per) | set(stale_per):
        counts = counts_from(per.get(key, {}))
        result[key[0]].waves[key[1]] = WaveCounts(**{**counts.__dict__, "stale": stale_per.get(key, 0)})
    return list(result.values())


def _id_chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _tagged_picture_counts(
    conn: Connection, scan_id: int, when: datetime, tag: tuple[str, str]
) -> list[tuple[int, str, str, int, int]]:
    """The picture's counts at one scan for the hosts carrying a tag, from the observations."""
    tg, h = t.tags, t.hosts
    tagged = select(tg.c.host_id).where(
        tg.c.key == tag[0],
        tg.c.value == tag[1],
        tg.c.host_id.in_(select(h.c.id).where(h.c.merged_into.is_(None))),
    )
    folds = pic.picture_at(conn, to_db(when) or when, scan_id, hosts=tagged)
    counts: Counter[tuple[str, str, int]] = Counter()
    for fold in folds.values():
        source = int(fold.scan_id or 0)
        counts[(pic.HOST_STATUS, fold.status, source)] += 1
        for wave, state in fold.states().items():
            counts[(wave, state, source)] += 1
    return [(scan_id, w, st, src, n) for (w, st, src), n in counts.items()]


def picture_time(store: Store) -> datetime | None:
    """The time of the newest pictured scan: the time host_current describes."""
    sc = t.scans
    with store.connect() as conn:
        value = conn.execute(
            select(func.max(sc.c.started_at)).where(pic.finished_scans(), sc.c.pictured.is_not(None))
        ).scalar()
    return from_db(value)


def _current(at: datetime | None, max_age: timedelta | None) -> list[Any]:
    """Conditions on host_current (joined with hosts) for the hosts counted at ``at``: not retired,
    not merged away, not stale."""
    hc, h = t.host_current, t.hosts
    conds: list[Any] = [h.c.merged_into.is_(None)]
    if at is not None:
        conds.append(or_(h.c.retired_at.is_(None), h.c.retired_at > to_db(at)))
        if max_age is not None:
            conds.append(hc.c.seen_at >= to_db(at - max_age))
    return conds


def snapshots(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tag: tuple[str, str] | None = None,
) -> list[Snapshot]:
    """Every finished scan in time order with what that scan itself saw (from scan_summary, or grouped
    by tag): the scan's own counts, not the fleet picture (see fleet_series)."""
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
    store: Store,
    wave: str,
    *,
    by: str = "cu",
    tag: tuple[str, str] | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
) -> dict[str, WaveCounts]:
    """Counts of the current fleet picture per CU (``by="cu"``), per build (``by="build"``) or per value
    of a tag key (``by="tag:KEY"``) for one wave (stale and retired hosts left out)."""
    s, tg, hc, h = t.host_states, t.tags, t.host_current, t.hosts
    at = picture_time(store)
    conds = [s.c.wave == wave, *_current(at, max_age)]
    source: Any = hc.join(h, h.c.id == hc.c.host_id).join(s, s.c.host_id == hc.c.host_id)
    if tag is not None:
        f = tg.alias("f")
        source = source.join(f, and_(f.c.host_id == hc.c.host_id, f.c.key == tag[0], f.c.value == tag[1]))
    if by == "cu":
        group: Any = func.coalesce(hc.c.cu, "unknown build")
    elif by == "build":
        group = func.coalesce(hc.c.build, "unknown build")
    elif by.startswith("tag:"):
        g = tg.alias("g")
        source = source.outerjoin(g, and_(g.c.host_id == hc.c.host_id, g.c.key == by[4:]))
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


def tag_values(store: Store) -> dict[str, list[str]]:
    """Every tag key in the store with its values (for naming the valid ones after a typo)."""
    tg = t.tags
    out: dict[str, list[str]] = {}
    with store.connect() as conn:
        for key, value in conn.execute(
            select(tg.c.key, tg.c.value).distinct().order_by(tg.c.key, tg.c.value)
        ):
            out.setdefault(str(key), []).append(str(value))
    return out


def check_tag(store: Store, tag: tuple[str, str] | None) -> None:
    """An InputError naming the valid keys or values when no host carries the tag."""
    if tag is None:
        return
    known = tag_values(store)
    key, value = tag
    if key not in known:
        valid = ", ".join(sorted(known)) or "none (no host is tagged yet)"
        raise InputError(f"unknown tag key {key!r}: the store's tag keys are {valid}")
    if value not in known[key]:
        values = known[key]
        shown = ", ".join(values[:30]) + (f" (and {len(values) - 30} more)" if len(values) > 30 else "")
        raise InputError(f"no host has the tag {key}={value}: the values of {key!r} are {shown}")


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
    *,
    waves: list[str] | None = None,
    tag: tuple[str, str] | None = None,
    limit: int | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
) -> list[dict[str, Any]]:
    """Hosts vulnerable in the current fleet picture, longest exposed first, with their fix and the
    scan whose verdict it is (stale and retired hosts are left out)."""
    s, e, h, o, d, tg, hc = (
        t.host_states,
        t.host_exposure,
        t.hosts,
        t.observations,
        t.details,
        t.tags,
        t.host_current,
    )
    at = picture_time(store)
    conds = [s.c.state == "vulnerable", *_current(at, max_age)]
    if waves:
        conds.append(s.c.wave.in_(waves))
    # the observation of the service that gave the verdict (the lowest id if it answered twice)
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
        .outerjoin(e, and_(e.c.host_id == s.c.host_id, e.c.wave == s.c.wave))
        .outerjoin(o, o.c.id == verdict_obs)
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
            hc.c.build,
            hc.c.port,
            hc.c.cu,
            hc.c.conflict,
            hc.c.scan_id,
            hc.c.seen_at,
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
        rows = conn.execute(query).all()
    out: list[dict[str, Any]] = []
    for row in rows:
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
                "port": row.port,
                "conflict": bool(row.conflict),
                "scan": row.scan_id,
                "seen_at": iso(row.seen_at),
                "exposed_since": since.isoformat() if since else None,
                "exposed_days": round((at - since).total_seconds() / 86400, 2) if since and at else None,
                "fix": _fix_text(row.body, row.wave),
            }
        )
    return out


def count_in_state(
    store: Store, state: str, *, waves: list[str] | None = None, max_age: timedelta | None = DEFAULT_MAX_AGE
) -> int:
    """How many (host, wave) pairs of the current picture are in ``state``."""
    s, hc, h = t.host_states, t.host_current, t.hosts
    conds = [s.c.state == state, *_current(picture_time(store), max_age)]
    if waves:
        conds.append(s.c.wave.in_(waves))
    with store.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(hc.join(h, h.c.id == hc.c.host_id).join(s, s.c.host_id == hc.c.host_id))
                .where(*conds)
            ).scalar()
            or 0
        )


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
    """Hunt findings of confidence confirmed or likely across hosts, counted per hour (each one is one
    attempt's trace; findings left for review are not counted)."""
    f, tg = t.findings, t.tags
    if store.dialect == "postgresql":
        bucket: Any = func.date_trunc("hour", f.c.time)
    else:
        bucket = func.strftime("%Y-%m-%d %H:00:00", f.c.time)
    conds: list[Any] = [f.c.time.is_not(None), f.c.confidence.in_(EVIDENCE_CONFIDENCE)]
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


def resolve_host(store: Store, host: str) -> int:
    """The one host a user's word names (#id, address, DNS name, X-FEServer), else an InputError."""
    matches = store.find_hosts(host)
    if not matches:
        raise InputError(f"no host in the store matches {host!r}")
    if len(matches) > 1:
        raise InputError(f"{host!r} matches {len(matches)} hosts; use the host id (#N)")
    return matches[0]


def host_history(store: Store, host: str) -> dict[str, Any]:
    """One host across snapshots and hunts: identity, tags, its folded verdict in every scan that saw
    it (with each service's answer), exposure, hunts, and its current place in the fleet picture."""
    host_id = resolve_host(store, host)
    h, o, sc, tg, hu, f, sh, hc = (
        t.hosts,
        t.observations,
        t.scans,
        t.tags,
        t.hunts,
        t.findings,
        t.scan_hosts,
        t.host_current,
    )
    with store.connect() as conn:
        ident = conn.execute(select(h).where(h.c.id == host_id)).one()
        tags = dict(conn.execute(select(tg.c.key, tg.c.value).where(tg.c.host_id == host_id)).all())
        folded = conn.execute(
            select(sh, sc.c.started_at)
            .join(sc, sc.c.id == sh.c.scan_id)
            .where(sh.c.host_id == host_id)
            .order_by(sc.c.started_at, sh.c.scan_id)
        ).all()
        services: dict[int, list[dict[str, Any]]] = {}
        for row in conn.execute(
            select(o.c.scan_id, o.c.port, o.c.status, o.c.address, o.c.build, o.c.build_source, o.c.error)
            .where(o.c.host_id == host_id)
            .order_by(o.c.scan_id, o.c.port, o.c.id)
        ):
            services.setdefault(int(row.scan_id), []).append(
                {
                    "port": row.port,
                    "status": row.status,
                    "address": row.address,
                    "build": row.build,
                    "build_source": row.build_source,
                    "error": row.error,
                }
            )
        states: dict[int, dict[str, str]] = {}
        for row in _host_states(conn, host_id):
            states.setdefault(row.scan_id, {})[row.wave] = row.state
        current = conn.execute(select(hc).where(hc.c.host_id == host_id)).first()
        current_states = dict(
            conn.execute(
                select(t.host_states.c.wave, t.host_states.c.state).where(t.host_states.c.host_id == host_id)
            ).all()
        )
        hunts = conn.execute(
            select(hu.c.id, hu.c.started_at, hu.c.verdict, func.count(f.c.id), func.min(f.c.time))
            .outerjoin(f, f.c.hunt_id == hu.c.id)
            .where(hu.c.host_id == host_id)
            .group_by(hu.c.id, hu.c.started_at, hu.c.verdict)
            .order_by(hu.c.started_at)
        ).all()
    snapshots_out = []
    for row in folded:
        svc = services.get(int(row.scan_id), [])
        winner = next((x for x in svc if x["port"] == row.port), svc[0] if svc else {})
        snapshots_out.append(
            {
                "scan": row.scan_id,
                "time": iso(row.started_at),
                "status": row.status,
                "port": row.port,
                "address": winner.get("address"),
                "build": row.build,
                "build_source": winner.get("build_source"),
                "error": winner.get("error"),
                "conflict": bool(row.conflict),
                "services": svc,
                "waves": states.get(int(row.scan_id), {}),
            }
        )
    return {
        "host_id": host_id,
        "address": ident.address,
        "name": ident.name,
        "fe_server": ident.fe_server,
        "cert": ident.cert,
        "first_seen": iso(ident.first_seen),
        "retired_at": iso(ident.retired_at),
        "merged_into": ident.merged_into,
        "tags": tags,
        "current": None
        if current is None
        else {
            "scan": current.scan_id,
            "status": current.status,
            "port": current.port,
            "build": current.build,
            "conflict": bool(current.conflict),
            "seen_at": iso(current.seen_at),
            "waves": current_states,
        },
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
    store: Store,
    *,
    tag: tuple[str, str] | None = None,
    limit: int | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    include_retired: bool = True,
) -> list[dict[str, Any]]:
    """Known hosts with their place in the current fleet picture: folded status, the port and scan that
    gave it, build, when last seen, stale or retired, conflict, and tags."""
    h, tg, hc = t.hosts, t.tags, t.host_current
    at = picture_time(store)
    source: Any = h.outerjoin(hc, hc.c.host_id == h.c.id)
    conds: list[Any] = [h.c.merged_into.is_(None)]
    if tag is not None:
        conds.append(
            select(tg.c.host_id)
            .where(tg.c.host_id == h.c.id, tg.c.key == tag[0], tg.c.value == tag[1])
            .exists()
        )
    if not include_retired:
        conds.append(h.c.retired_at.is_(None))
    query = (
        select(
            h.c.id,
            h.c.address,
            h.c.name,
            h.c.fe_server,
            h.c.retired_at,
            hc.c.status,
            hc.c.port,
            hc.c.scan_id,
            hc.c.seen_at,
            hc.c.build,
            hc.c.conflict,
        )
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
    out = []
    for row in rows:
        last = from_db(row.seen_at)
        retired = from_db(row.retired_at)
        out.append(
            {
                "host_id": row.id,
                "address": row.address,
                "name": row.name,
                "fe_server": row.fe_server,
                "status": row.status,
                "port": row.port,
                "scan": row.scan_id,
                "build": row.build,
                "conflict": bool(row.conflict),
                "last_seen": last.isoformat() if last else None,
                "stale": bool(at and last and max_age is not None and last < at - max_age),
                "retired_at": retired.isoformat() if retired else None,
                "tags": all_tags.get(row.id, {}),
            }
        )
    return out


__all__ = [
    "STATES",
    "Snapshot",
    "attempts_per_hour",
    "DEFAULT_MAX_AGE",
    "Picture",
    "breakdown",
    "check_tag",
    "compromise",
    "count_in_state",
    "exposure_windows",
    "fleet_series",
    "host_history",
    "hosts_at_risk",
    "list_hosts",
    "parse_tag",
    "picture_time",
    "resolve_host",
    "snapshots",
    "tag_keys",
    "tag_values",
]
