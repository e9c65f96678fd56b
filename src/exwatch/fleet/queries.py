"""The fleet read API: every query over the store, returning frozen dataclasses (exwatch.fleet.rows).

Aggregates are SQL ``GROUP BY``s; the report, the web dashboard and the CLI read the store only
through these functions (no other module writes SQL over the fleet's tables for reading).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, literal_column, or_, select
from sqlalchemy.sql import FromClause, Select

from exwatch.errors import InputError
from exwatch.fleet import picture as pic
from exwatch.fleet import schema as t
from exwatch.fleet import tally
from exwatch.fleet.metrics import PROTECTED, STATES, WaveCounts, counts_from
from exwatch.fleet.rows import (
    JSON,
    Compromise,
    CurrentVerdict,
    ExposureWindow,
    FindingRow,
    HostHistory,
    HostRow,
    HostSnapshot,
    HostState,
    HuntSummary,
    Listing,
    Picture,
    Service,
    Snapshot,
    WaveVerdict,
)
from exwatch.fleet.store import Store
from exwatch.fleet.timeutil import from_db, to_db

EVIDENCE_CONFIDENCE = ("confirmed", "likely")
DEFAULT_MAX_AGE = timedelta(days=30)
Tag = tuple[str, str]


def iso(value: Any) -> str | None:
    """A database time as ISO 8601 UTC text (None stays None)."""
    when = from_db(value)
    return when.isoformat() if when else None


def parse_tag(text: str | None) -> Tag | None:
    """``key=value`` as a pair (None stays None); anything else is an InputError."""
    if text is None:
        return None
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"a tag filter is KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def scope_of(params_text: str | None) -> list[str] | None:
    """The targets a scan was given, from its stored parameters (None when it did not say): those of
    its command line, then each targets file as ``@PATH`` (a file's targets are not copied into the
    store; a scan of a 400,000-line file keeps its path)."""
    if not params_text:
        return None
    try:
        params = json.loads(params_text)
    except ValueError:
        return None
    if not isinstance(params, dict):
        return None
    targets = params.get("targets")
    options = params.get("options")
    files = options.get("targets_files") if isinstance(options, dict) else None
    if targets is None and not files:
        return None
    scope = [targets] if isinstance(targets, str) else [str(x) for x in targets or ()]
    return scope + [f"@{f}" for f in files or ()]


def _join_tag(source: Any, host_id: Any, tag: Tag | None, alias: str | None = None) -> Any:
    """``source`` joined with the tags table on the hosts carrying ``tag`` (unchanged for None): the
    one tag join of every filtered query."""
    if tag is None:
        return source
    tg = t.tags.alias(alias) if alias else t.tags
    return source.join(tg, and_(tg.c.host_id == host_id, tg.c.key == tag[0], tg.c.value == tag[1]))


def _id_chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _is_stale(source_time: datetime | None, at: datetime, max_age: timedelta | None) -> bool:
    return max_age is not None and source_time is not None and source_time < at - max_age


def _scan_window(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    sc = t.scans
    conds: list[ColumnElement[bool]] = []
    if since is not None:
        conds.append(sc.c.started_at >= to_db(since))
    if until is not None:
        conds.append(sc.c.started_at <= to_db(until))
    return conds


# -- the fleet picture over time -------------------------------------------------------------------

SeriesRow = tuple[int, str, str, int, int]  # scan, wave (or HOST_STATUS), state, source scan, hosts


def fleet_series(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tag: Tag | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
) -> list[Picture]:
    """The fleet picture at every finished scan's time, in time order (exwatch.fleet.picture).

    Without a tag filter it is read from the per-scan picture summaries; with one it is computed from
    the observations of the tagged hosts (one set-based query per scan).
    """
    sc, ss = t.scans, t.scan_summary
    with store.connect() as conn:
        scans = conn.execute(
            select(sc.c.id, sc.c.started_at, sc.c.params)
            .where(pic.finished_scans(), *_scan_window(since, until))
            .order_by(sc.c.started_at, sc.c.id)
        ).all()
        if not scans:
            return []
        times = {
            int(i): from_db(w)
            for i, w in conn.execute(select(sc.c.id, sc.c.started_at).where(pic.finished_scans()))
        }
        when = {int(r.id): from_db(r.started_at) or datetime.min for r in scans}
        rows = _series_rows(conn, when, tag)
        seen: dict[int, dict[str, int]] = {i: {} for i in when}
        for chunk in _id_chunks(list(when)):
            for scan_id, state, n in conn.execute(
                select(ss.c.scan_id, ss.c.state, ss.c.n).where(ss.c.scan_id.in_(chunk), ss.c.wave == "*")
            ):
                seen[int(scan_id)][str(state)] = int(n)
    pictures = _fold_series(rows, when, times, max_age)
    return [
        Picture(
            int(r.id),
            when[int(r.id)],
            waves=pictures[int(r.id)][0],
            statuses=pictures[int(r.id)][1],
            stale=pictures[int(r.id)][2],
            scan_statuses=seen[int(r.id)],
            scope=_tuple(scope_of(r.params)),
        )
        for r in scans
    ]


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _series_rows(conn: Connection, when: Mapping[int, datetime], tag: Tag | None) -> list[SeriesRow]:
    """The picture's counts at each scan, split by the scan each verdict comes from."""
    ps = t.picture_summary
    rows: list[SeriesRow] = []
    if tag is not None:
        return _tagged_series_rows(conn, when, tag)
    for chunk in _id_chunks(list(when)):
        rows += [
            (int(a), str(b), str(c), int(d), int(e))
            for a, b, c, d, e in conn.execute(
                select(ps.c.scan_id, ps.c.wave, ps.c.state, ps.c.source_scan, ps.c.n).where(
                    ps.c.scan_id.in_(chunk)
                )
            )
        ]
    return rows


PictureCounts = tuple[dict[str, WaveCounts], dict[str, int], int]  # waves, statuses, stale hosts


def _fold_series(
    rows: list[SeriesRow],
    when: Mapping[int, datetime],
    times: Mapping[int, datetime | None],
    max_age: timedelta | None,
) -> dict[int, PictureCounts]:
    """Per scan: the per-wave counts, the host statuses and the stale hosts (decided for ``max_age``)."""
    statuses: dict[int, dict[str, int]] = {i: {} for i in when}
    stale_hosts: Counter[int] = Counter()
    per: dict[tuple[int, str], Counter[str]] = {}
    stale_per: Counter[tuple[int, str]] = Counter()
    for scan_id, wave, state, source, n in rows:
        stale = _is_stale(times.get(source), when[scan_id], max_age)
        if wave == pic.HOST_STATUS:
            if stale:
                stale_hosts[scan_id] += n
            else:
                statuses[scan_id][state] = statuses[scan_id].get(state, 0) + n
        elif stale:
            stale_per[(scan_id, wave)] += n
        else:
            per.setdefault((scan_id, wave), Counter())[state] += n
    waves: dict[int, dict[str, WaveCounts]] = {i: {} for i in when}
    for key in set(per) | set(stale_per):
        counts = counts_from(dict(per.get(key, {})))
        waves[key[0]][key[1]] = WaveCounts(**{**counts.__dict__, "stale": stale_per.get(key, 0)})
    return {i: (waves[i], statuses[i], stale_hosts.get(i, 0)) for i in when}


def _tagged(tag: Tag) -> Select[Any]:
    tg, h = t.tags, t.hosts
    return select(tg.c.host_id).where(
        tg.c.key == tag[0],
        tg.c.value == tag[1],
        tg.c.host_id.in_(select(h.c.id).where(h.c.merged_into.is_(None))),
    )


def _tagged_series_rows(conn: Connection, when: Mapping[int, datetime], tag: Tag) -> list[SeriesRow]:
    """The picture's counts at each scan of ``when`` for the hosts carrying a tag, in one pass over
    their observations in time order: each scan's services replace the older ones of their (host,
    port), and only the hosts a scan touched (or that retire by its time) are folded again, as
    exwatch.fleet.picture steps the whole fleet's picture.  The same counts as ``picture_at`` for
    each scan (``_tagged_picture_counts``; tests/report/test_tally.py), without a window over every
    observation up to every scan (32 s a scan at 400,000 hosts x 30)."""
    o, sc, h = t.observations, t.scans, t.hosts
    rank = pic.rank_of(o)
    port = func.coalesce(o.c.port, 0)
    observed = (
        select(
            o.c.host_id,
            port.label("port"),
            o.c.scan_id,
            rank.label("rank"),
            pic.status_of_rank(rank, o.c.status).label("status"),
            sc.c.started_at.label("at"),
            o.c.build,
            o.c.cu,
            o.c.detail_id,
        )
        .select_from(o.join(sc, sc.c.id == o.c.scan_id))
        .where(pic.finished_scans(), o.c.host_id.is_not(None), o.c.host_id.in_(_tagged(tag)))
        # a scan's best observation of a service first (the order of picture._latest_services)
        .order_by(sc.c.started_at, sc.c.id, o.c.host_id, port, rank.desc(), o.c.id)
    )
    order = [
        (int(i), w)
        for i, w in conn.execute(
            select(sc.c.id, sc.c.started_at).where(pic.finished_scans()).order_by(sc.c.started_at, sc.c.id)
        )
    ]
    retiring = sorted(
        (w, int(i))
        for i, w in conn.execute(select(h.c.id, h.c.retired_at).where(h.c.retired_at.is_not(None)))
    )
    details = pic.DetailStates()
    services: dict[int, dict[int, Any]] = {}
    contributed: dict[int, list[tuple[str, str, int]]] = {}
    counts: Counter[tuple[str, str, int]] = Counter()
    retired: set[int] = set()
    stream = iter(conn.execution_options(yield_per=10_000).execute(observed))
    ahead = next(stream, None)
    rows: list[SeriesRow] = []
    next_retiring = 0
    for scan_id, started in order:
        touched: set[int] = set()
        batch: list[Any] = []
        while ahead is not None and int(ahead.scan_id) == scan_id:
            batch.append(ahead)
            ahead = next(stream, None)
        seen: set[tuple[int, int]] = set()
        for row in batch:
            key = (int(row.host_id), int(row.port))
            if key not in seen:  # the first of a service in the scan is its best
                seen.add(key)
                services.setdefault(key[0], {})[key[1]] = row
                touched.add(key[0])
        details.load(conn, {int(r.detail_id) for r in batch if r.detail_id is not None})
        while next_retiring < len(retiring) and retiring[next_retiring][0] <= started:
            retired.add(retiring[next_retiring][1])
            touched.add(retiring[next_retiring][1])
            next_retiring += 1
        for host_id in touched:
            counts.subtract(contributed.pop(host_id, []))
            if host_id in retired or host_id not in services:
                continue
            keys = _host_keys(host_id, services[host_id], details)
            counts.update(keys)
            contributed[host_id] = keys
        if scan_id in when:
            rows += [(scan_id, w, st, src, n) for (w, st, src), n in counts.items() if n > 0]
    return rows


def _host_keys(
    host_id: int, services: Mapping[int, Any], details: pic.DetailStates
) -> list[tuple[str, str, int]]:
    """The (wave, state, source scan) keys one host adds to the picture's counts, from its latest
    service rows (port -> row)."""
    if len(services) == 1:
        # one service folds into its own answer (hostfold.HostFold: its status, its states when it
        # is an Exchange answer), without a fold object per host and scan
        (row,) = services.values()
        source, status = int(row.scan_id), row.status or "exchange"
        keys = [(pic.HOST_STATUS, status, source)]
        if status == "exchange":
            keys += [(w, v["state"], source) for w, v in details.waves(row.detail_id).items()]
        return keys
    mine = [services[p] for p in sorted(services)]
    fold = pic.fold_services_rows(mine, details)[host_id]
    source = int(fold.scan_id or 0)
    keys = [(pic.HOST_STATUS, fold.status, source)]
    return keys + [(wave, state, source) for wave, state in fold.states().items()]


def _tagged_picture_counts(conn: Connection, scan_id: int, when: datetime, tag: Tag) -> list[SeriesRow]:
    """The picture's counts at one scan for the hosts carrying a tag, from the observations (the
    reference ``_tagged_series_rows`` is checked against)."""
    folds = pic.picture_at(conn, to_db(when) or when, scan_id, hosts=_tagged(tag))
    counts: Counter[tuple[str, str, int]] = Counter()
    for fold in folds.values():
        source = int(fold.scan_id or 0)
        counts[(pic.HOST_STATUS, fold.status, source)] += 1
        for wave, state in fold.states().items():
            counts[(wave, state, source)] += 1
    return [(scan_id, w, st, src, n) for (w, st, src), n in counts.items()]


def picture_time(store: Store) -> datetime | None:
    """The time of the newest pictured scan: the time host_current describes."""
    latest = latest_scan(store)
    return None if latest is None else latest[1]


def latest_scan(store: Store) -> tuple[int, datetime] | None:
    """The newest scan in the fleet picture and its time (the picture's time), or None."""
    sc = t.scans
    with store.connect() as conn:
        row = conn.execute(
            select(sc.c.id, sc.c.started_at)
            .where(pic.finished_scans(), sc.c.pictured.is_not(None))
            .order_by(sc.c.started_at.desc(), sc.c.id.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return int(row.id), from_db(row.started_at) or datetime.min


def _counted(at: datetime | None, max_age: timedelta | None) -> list[ColumnElement[bool]]:
    """Conditions on host_current for the hosts counted at ``at``: not merged away, not retired by
    ``at``, not stale.  The merged and retired hosts are read once as a set (one pass over hosts,
    usually empty) rather than every pictured host looked up in hosts."""
    hc, h = t.host_current, t.hosts
    gone: ColumnElement[bool] = h.c.merged_into.is_not(None)
    if at is not None:
        gone = or_(gone, h.c.retired_at <= to_db(at))
    conds: list[ColumnElement[bool]] = [hc.c.host_id.not_in(select(h.c.id).where(gone))]
    if at is not None and max_age is not None:
        conds.append(hc.c.seen_at >= to_db(at - max_age))
    return conds


def snapshots(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tag: Tag | None = None,
) -> list[Snapshot]:
    """Every finished scan in time order with what that scan itself saw (from scan_summary, or grouped
    by tag): the scan's own counts, not the fleet picture (see fleet_series)."""
    sc = t.scans
    with store.connect() as conn:
        scans = conn.execute(
            select(sc.c.id, sc.c.started_at)
            .where(sc.c.finished_at.is_not(None), sc.c.kind == "scan", *_scan_window(since, until))
            .order_by(sc.c.started_at, sc.c.id)
        ).all()
        if not scans:
            return []
        rows = _snapshot_rows(conn, [int(r.id) for r in scans], tag)
    statuses: dict[int, dict[str, int]] = {int(r.id): {} for r in scans}
    per: dict[tuple[int, str], dict[str, int]] = {}
    for scan_id, wave, state, n in rows:
        if wave == "*":
            statuses[scan_id][state] = int(n)
        else:
            per.setdefault((scan_id, wave), {})[state] = int(n)
    waves: dict[int, dict[str, WaveCounts]] = {i: {} for i in statuses}
    for (scan_id, wave), states in per.items():
        waves[scan_id][wave] = counts_from(states)
    return [
        Snapshot(int(r.id), from_db(r.started_at) or datetime.min, waves[int(r.id)], statuses[int(r.id)])
        for r in scans
    ]


def _snapshot_rows(conn: Connection, ids: list[int], tag: Tag | None) -> list[Any]:
    """(scan, wave or "*", state, count) of what each scan saw, of every host or of the tagged ones."""
    ss, s, o = t.scan_summary, t.observation_states, t.observations
    if tag is None:
        return list(
            conn.execute(
                select(ss.c.scan_id, ss.c.wave, ss.c.state, ss.c.n).where(ss.c.scan_id.in_(ids))
            ).all()
        )
    rows = list(
        conn.execute(
            select(s.c.scan_id, s.c.wave, s.c.state, func.count())
            .select_from(_join_tag(s, s.c.host_id, tag))
            .where(s.c.scan_id.in_(ids))
            .group_by(s.c.scan_id, s.c.wave, s.c.state)
        ).all()
    )
    rows += conn.execute(
        select(o.c.scan_id, literal_column("'*'"), o.c.status, func.count(o.c.host_id.distinct()))
        .select_from(_join_tag(o, o.c.host_id, tag))
        .where(o.c.scan_id.in_(ids))
        .group_by(o.c.scan_id, o.c.status)
    ).all()
    return rows


def breakdown(
    store: Store,
    wave: str,
    *,
    by: str = "cu",
    tag: Tag | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
) -> dict[str, WaveCounts]:
    """Counts of the current fleet picture per CU (``by="cu"``), per build (``by="build"``) or per value
    of a tag key (``by="tag:KEY"``) for one wave (stale and retired hosts left out)."""
    return breakdowns(store, wave, (by,), tag=tag, max_age=max_age)[by]


def breakdowns(
    store: Store,
    wave: str,
    by: Sequence[str],
    *,
    tag: Tag | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    tallied: bool = True,
) -> dict[str, dict[str, WaveCounts]]:
    """Several breakdowns of the current picture (each as ``breakdown`` gives it).

    Read from the store's tally of the picture (exwatch.fleet.tally: a few hundred rows) when it
    holds them and describes the store exactly (no tag filter, no unfinished scan); else, or with
    ``tallied=False``, in one pass over the picture: one GROUP BY over every asked grouping and the
    state, rolled up per grouping here."""
    if tallied and tag is None:
        with store.connect() as conn:
            counted = tally.read(conn, wave, by, max_age)
        if counted is not None:
            return {name: {k: counts_from(dict(v)) for k, v in sorted(counted[name].items())} for name in by}
    s, tg, hc = t.host_states, t.tags, t.host_current
    at = picture_time(store)
    conds = [s.c.wave == wave, *_counted(at, max_age)]
    source: Any = hc.join(s, s.c.host_id == hc.c.host_id)
    source = _join_tag(source, hc.c.host_id, tag, "f")
    groups: list[Any] = []
    for i, name in enumerate(by):
        if name == "cu":
            groups.append(func.coalesce(hc.c.cu, "unknown build"))
        elif name == "build":
            groups.append(func.coalesce(hc.c.build, "unknown build"))
        elif name.startswith("tag:"):
            g = tg.alias(f"g{i}")
            source = source.outerjoin(g, and_(g.c.host_id == hc.c.host_id, g.c.key == name[4:]))
            groups.append(func.coalesce(g.c.value, "(untagged)"))
        else:
            raise InputError(f"unknown breakdown {name!r}: use cu, build or tag:KEY")
    labelled = [g.label(f"g{i}") for i, g in enumerate(groups)]
    with store.connect() as conn:
        rows = conn.execute(
            select(*labelled, s.c.state, func.count())
            .select_from(source)
            .where(*conds)
            .group_by(*groups, s.c.state)
        ).all()
    per: dict[str, dict[str, Counter[str]]] = {name: {} for name in by}
    for row in rows:
        state, n = row[-2], int(row[-1])
        for name, value in zip(by, row[:-2], strict=True):
            per[name].setdefault(str(value), Counter())[state] += n
    return {name: {k: counts_from(dict(v)) for k, v in sorted(per[name].items())} for name in per}


# -- tags ------------------------------------------------------------------------------------------


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


def check_tag(store: Store, tag: Tag | None) -> None:
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


def _tags_of(conn: Connection, host_ids: Sequence[int] | None = None) -> dict[int, dict[str, str]]:
    """The tags of these hosts (of every host for None), per host."""
    tg = t.tags
    query = select(tg.c.host_id, tg.c.key, tg.c.value)
    if host_ids is not None:
        query = query.where(tg.c.host_id.in_(list(host_ids)))
    out: dict[int, dict[str, str]] = {}
    for host_id, key, value in conn.execute(query):
        out.setdefault(int(host_id), {})[key] = value
    return out


# -- hosts in a state of the current picture -------------------------------------------------------


@lru_cache(maxsize=4096)
def _fix_text(detail: str | None, wave: str) -> str | None:
    """The fix of one wave in a detail body (bodies repeat across hosts: each is parsed once)."""
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


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it literally anywhere (``%`` and ``_`` escaped)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _in_state(
    store: Store,
    state: str,
    waves: Sequence[str] | None,
    tag: Tag | None,
    text: str | None,
    max_age: timedelta | None,
) -> tuple[Select[Any], datetime | None]:
    """The query of the (host, wave) pairs of the current picture in ``state`` (unordered), for
    ``vulnerable`` with the start of the exposure window (``first_vulnerable``); and the picture's
    time.  The rest of a row (the host, the verdict's fix) is read for a page of pairs only."""
    s, e, h, hc = t.host_states, t.host_exposure, t.hosts, t.host_current
    at = picture_time(store)
    conds = [s.c.state == state, *_counted(at, max_age)]
    if waves:
        conds.append(s.c.wave.in_(list(waves)))
    source: FromClause = hc.join(s, s.c.host_id == hc.c.host_id)
    if text:
        source = source.join(h, h.c.id == hc.c.host_id)
        pattern = _like(text.strip().lower())
        columns = (h.c.address, h.c.name, h.c.fe_server, hc.c.build)
        conds.append(or_(*(func.lower(c).like(pattern, escape="\\") for c in columns)))
    source = _join_tag(source, s.c.host_id, tag)
    cols: list[Any] = [s.c.host_id, s.c.wave]
    if state == "vulnerable":
        source = source.outerjoin(e, and_(e.c.host_id == s.c.host_id, e.c.wave == s.c.wave))
        cols.append(e.c.first_vulnerable)
    return select(*cols).select_from(source).where(*conds), at


def _page_rows(conn: Connection, pairs: Select[Any], exposed: bool) -> tuple[list[Any], dict[int, str]]:
    """The rows of an ordered page of (host, wave) pairs: the host, its current verdict and the
    detail body id of the observation of the service that gave it (the lowest id if it answered
    twice), looked up for the page's pairs only; and those detail bodies, each read once (they repeat
    across hosts)."""
    o, d, h, hc = t.observations, t.details, t.hosts, t.host_current
    page = pairs.subquery("page")
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
    source = (
        page.join(hc, hc.c.host_id == page.c.host_id)
        .join(h, h.c.id == page.c.host_id)
        .outerjoin(o, o.c.id == verdict_obs)
    )
    since = page.c.first_vulnerable if exposed else literal_column("NULL")
    order = (since.asc().nulls_last(),) if exposed else ()
    query = (
        select(
            page.c.host_id,
            page.c.wave,
            h.c.address,
            h.c.name,
            h.c.fe_server,
            hc.c.build,
            hc.c.port,
            hc.c.cu,
            hc.c.conflict,
            hc.c.scan_id,
            hc.c.seen_at,
            since.label("first_vulnerable"),
            o.c.detail_id,
        )
        .select_from(source)
        .order_by(*order, page.c.host_id, page.c.wave)
    )
    rows = list(conn.execute(query).all())
    bodies: dict[int, str] = {}
    for chunk in _id_chunks(sorted({int(r.detail_id) for r in rows if r.detail_id is not None})):
        bodies.update(
            (int(i), str(b)) for i, b in conn.execute(select(d.c.id, d.c.body).where(d.c.id.in_(chunk)))
        )
    return rows, bodies


def hosts_in_state(
    store: Store,
    state: str,
    *,
    waves: Sequence[str] | None = None,
    tag: Tag | None = None,
    text: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
) -> list[HostState]:
    """The (host, wave) pairs in ``state`` in the current fleet picture (stale and retired hosts left
    out), each with its fix and the scan whose verdict it is.  Vulnerable ones come longest exposed
    first (with the start of their exposure window), others by host.  ``text``: a substring of the
    address, DNS name, X-FEServer or build (any case).

    The page is chosen over the pairs alone; only its rows are joined with their observation and
    detail body (20,000 vulnerable hosts of 400,000 cost a lookup each otherwise)."""
    if state not in STATES:
        raise InputError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
    s = t.host_states
    query, at = _in_state(store, state, waves, tag, text, max_age)
    exposed = state == "vulnerable"
    if exposed:
        first = query.selected_columns.first_vulnerable
        query = query.order_by(first.asc().nulls_last(), s.c.host_id, s.c.wave)
    else:
        query = query.order_by(s.c.host_id, s.c.wave)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    with store.connect() as conn:
        rows, bodies = _page_rows(conn, query, exposed)
    out = []
    for row in rows:
        since = from_db(row.first_vulnerable)
        out.append(
            HostState(
                host_id=row.host_id,
                address=row.address,
                name=row.name,
                fe_server=row.fe_server,
                wave=row.wave,
                state=state,
                build=row.build,
                cu=row.cu,
                port=row.port,
                conflict=bool(row.conflict),
                scan=row.scan_id,
                seen_at=from_db(row.seen_at),
                exposed_since=since,
                exposed_days=round((at - since).total_seconds() / 86400, 2) if since and at else None,
                fix=_fix_text(bodies.get(row.detail_id) if row.detail_id is not None else None, row.wave),
            )
        )
    return out


def hosts_at_risk(
    store: Store,
    *,
    waves: Sequence[str] | None = None,
    tag: Tag | None = None,
    limit: int | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
) -> list[HostState]:
    """Hosts vulnerable in the current fleet picture, longest exposed first, with their fix and the
    scan whose verdict it is (stale and retired hosts are left out)."""
    return hosts_in_state(store, "vulnerable", waves=waves, tag=tag, limit=limit, max_age=max_age)


def count_in_state(
    store: Store,
    state: str,
    *,
    waves: Sequence[str] | None = None,
    tag: Tag | None = None,
    text: str | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
) -> int:
    """How many (host, wave) pairs of the current picture are in ``state`` (the same filters as
    hosts_in_state)."""
    query, _ = _in_state(store, state, waves, tag, text, max_age)
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar() or 0)


def host_verdicts(store: Store, host_id: int) -> dict[str, WaveVerdict]:
    """The host's verdicts in the fleet picture per wave: the observation of the service that gave them
    (state, reason, fix)."""
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
    out: dict[str, WaveVerdict] = {}
    for wave, verdict in (json.loads(row.body).get("waves") or {}).items():
        if isinstance(verdict, dict):
            fix = _fix_text(row.body, wave)
            out[wave] = WaveVerdict(verdict.get("state"), verdict.get("reason"), fix, row.scan_id)
        else:
            out[wave] = WaveVerdict(verdict, None, None, row.scan_id)
    return out


# -- compromise, exposure, attempts ----------------------------------------------------------------


def _host_states(
    conn: Connection, host_id: int, waves: list[str] | None = None, *, scan_ids: list[int] | None = None
) -> list[Any]:
    """(scan_id, started_at, finished_at, wave, state) of one host in every snapshot that saw it (or
    in ``scan_ids``), from observation_states.

    The host's snapshots come from observations (index host_id, scan_id); the states are then looked
    up by their primary key (scan_id, wave, host_id) with explicit lists, so that no database scans
    the states table for one host.
    """
    o, s, sc, ss = t.observations, t.observation_states, t.scans, t.scan_summary
    if scan_ids is None:
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


def compromise(store: Store, *, tag: Tag | None = None) -> list[Compromise]:
    """Per host and wave with evidence: first evidence of exploitation, protection time, and the flag.

    First evidence = the earliest finding of confidence confirmed or likely.  Protected at = the end of
    the exposure window (host_exposure), or for a host never seen vulnerable, its first protected
    snapshot.  ``compromised_before_protected`` = evidence earlier than protection, or never protected.
    """
    f, e, h = t.findings, t.host_exposure, t.hosts
    source: Any = f.join(h, h.c.id == f.c.host_id).outerjoin(
        e, and_(e.c.host_id == f.c.host_id, e.c.wave == f.c.wave)
    )
    query = (
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
        .select_from(_join_tag(source, f.c.host_id, tag))
        .where(
            f.c.confidence.in_(EVIDENCE_CONFIDENCE),
            f.c.time.is_not(None),
            # only the waves the scans judge (web shells, post-exploitation are not waves)
            f.c.wave.in_(select(t.scan_summary.c.wave).where(t.scan_summary.c.wave != "*").distinct()),
        )
        .group_by(f.c.host_id, f.c.wave, h.c.address, h.c.name, h.c.fe_server)
        .order_by(func.min(f.c.time), f.c.host_id)
    )
    out = []
    with store.connect() as conn:
        for row in conn.execute(query).all():
            if row.first_vulnerable is not None:
                protected = from_db(row.window_end)
            else:
                protected = _first_protected(conn, row.host_id, row.wave)
            out.append(
                Compromise(
                    host_id=row.host_id,
                    address=row.address,
                    name=row.name,
                    fe_server=row.fe_server,
                    wave=row.wave,
                    first_evidence=from_db(row.first_evidence),
                    findings=int(row.findings),
                    first_vulnerable=from_db(row.first_vulnerable),
                    protected_at=protected,
                )
            )
    return out


def exposure_windows(
    store: Store, *, wave: str | None = None, host_id: int | None = None
) -> list[ExposureWindow]:
    """Exposure windows: first seen vulnerable to first seen protected after it (open when None)."""
    with store.connect() as conn:
        return _exposure(conn, wave=wave, host_id=host_id)


def _exposure(
    conn: Connection, *, wave: str | None = None, host_id: int | None = None
) -> list[ExposureWindow]:
    e = t.host_exposure
    conds: list[ColumnElement[bool]] = []
    if wave:
        conds.append(e.c.wave == wave)
    if host_id is not None:
        conds.append(e.c.host_id == host_id)
    rows = conn.execute(select(e).where(*conds).order_by(e.c.host_id, e.c.wave)).all()
    return [
        ExposureWindow(row.host_id, row.wave, from_db(row.first_vulnerable), from_db(row.first_protected))
        for row in rows
    ]


def attempts_per_hour(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tag: Tag | None = None,
) -> list[tuple[datetime, int]]:
    """Hunt findings of confidence confirmed or likely across hosts, counted per hour (each one is one
    attempt's trace; findings left for review are not counted)."""
    f = t.findings
    if store.dialect == "postgresql":
        bucket: Any = func.date_trunc("hour", f.c.time)
    else:
        bucket = func.strftime("%Y-%m-%d %H:00:00", f.c.time)
    conds: list[ColumnElement[bool]] = [f.c.time.is_not(None), f.c.confidence.in_(EVIDENCE_CONFIDENCE)]
    if since is not None:
        conds.append(f.c.time >= to_db(since))
    if until is not None:
        conds.append(f.c.time < to_db(until))
    with store.connect() as conn:
        rows = conn.execute(
            select(bucket.label("hour"), func.count())
            .select_from(_join_tag(f, f.c.host_id, tag))
            .where(*conds)
            .group_by(bucket)
            .order_by(bucket)
        ).all()
    return [(from_db(hour) or datetime.min, int(n)) for hour, n in rows]


# -- hosts -----------------------------------------------------------------------------------------


def resolve_host(store: Store, host: str) -> int:
    """The one host a user's word names (#id, address, DNS name, X-FEServer), else an InputError."""
    matches = store.find_hosts(host)
    if not matches:
        raise InputError(f"no host in the store matches {host!r}")
    if len(matches) > 1:
        raise InputError(f"{host!r} matches {len(matches)} hosts; use the host id (#N)")
    return matches[0]


def host_exists(store: Store, host_id: int) -> bool:
    """Whether the store holds a host with this id (merged-away hosts included)."""
    with store.connect() as conn:
        return conn.execute(select(t.hosts.c.id).where(t.hosts.c.id == host_id)).first() is not None


def host_history(store: Store, host: str) -> HostHistory:
    """One host across snapshots and hunts: identity, tags, its folded verdict in every scan that saw
    it (with each service's answer), exposure, hunts, and its current place in the fleet picture."""
    host_id = resolve_host(store, host)
    h, tg = t.hosts, t.tags
    with store.connect() as conn:
        ident = conn.execute(select(h).where(h.c.id == host_id)).one()
        tags = dict(conn.execute(select(tg.c.key, tg.c.value).where(tg.c.host_id == host_id)).all())
        snaps = _host_snapshots(conn, host_id)
        current = _current_verdict(conn, host_id)
        exposure = _exposure(conn, host_id=host_id)
        hunts = _host_hunts(conn, host_id)
    return HostHistory(
        host_id=host_id,
        address=ident.address,
        name=ident.name,
        fe_server=ident.fe_server,
        cert=ident.cert,
        first_seen=from_db(ident.first_seen),
        retired_at=from_db(ident.retired_at),
        merged_into=ident.merged_into,
        tags=tags,
        current=current,
        snapshots=snaps,
        exposure=tuple(exposure),
        hunts=hunts,
    )


def _host_snapshots(conn: Connection, host_id: int) -> tuple[HostSnapshot, ...]:
    """The host's fold in every scan that saw it, with each service's answer and the wave states."""
    o, sc, sh = t.observations, t.scans, t.scan_hosts
    folded = conn.execute(
        select(sh, sc.c.started_at)
        .join(sc, sc.c.id == sh.c.scan_id)
        .where(sh.c.host_id == host_id)
        .order_by(sc.c.started_at, sh.c.scan_id)
    ).all()
    services: dict[int, list[Service]] = {}
    answers: dict[int, list[tuple[str, int | None]]] = {}
    for row in conn.execute(
        select(
            o.c.scan_id,
            o.c.port,
            o.c.status,
            o.c.address,
            o.c.build,
            o.c.build_source,
            o.c.error,
            o.c.detail_id,
        )
        .where(o.c.host_id == host_id)
        .order_by(o.c.scan_id, o.c.port, o.c.id)
    ):
        services.setdefault(int(row.scan_id), []).append(
            Service(row.port, row.status, row.address, row.build, row.build_source, row.error)
        )
        answers.setdefault(int(row.scan_id), []).append((row.status, row.detail_id))
    states = _snapshot_states(conn, host_id, answers)
    return tuple(
        HostSnapshot(
            scan=row.scan_id,
            time=from_db(row.started_at),
            status=row.status,
            port=row.port,
            build=row.build,
            conflict=bool(row.conflict),
            services=tuple(services.get(int(row.scan_id), [])),
            waves=states.get(int(row.scan_id), {}),
        )
        for row in folded
    )


def _snapshot_states(
    conn: Connection, host_id: int, answers: Mapping[int, list[tuple[str, int | None]]]
) -> dict[int, dict[str, str]]:
    """The host's per-wave states in each scan that saw it (``answers``: per scan, the status and
    detail body of each of its services there).

    A scan where the host answered once folds into that answer (exwatch.fleet.picture.simple_folds):
    its states are its detail body's (detail_states: a few bodies, shared by every host and scan), no
    read of observation_states, whose rows of one host lie in as many places as it has scans (a cold
    read of each on PostgreSQL made one host's history take 100 ms and more at 400,000 x 30).  Scans
    with several services read their fold from observation_states."""
    ds = t.detail_states
    single = {scan: rows[0][1] for scan, rows in answers.items() if len(rows) == 1}
    details = sorted(
        {int(d) for scan, d in single.items() if d is not None and answers[scan][0][0] == "exchange"}
    )
    per_detail: dict[int, dict[str, str]] = {}
    for chunk in _id_chunks(details):
        for detail_id, wave, state in conn.execute(
            select(ds.c.detail_id, ds.c.wave, ds.c.state).where(ds.c.detail_id.in_(chunk))
        ):
            per_detail.setdefault(int(detail_id), {})[str(wave)] = str(state)
    states: dict[int, dict[str, str]] = {}
    for scan, detail_id in single.items():
        if answers[scan][0][0] == "exchange" and detail_id is not None and int(detail_id) in per_detail:
            states[scan] = dict(per_detail[int(detail_id)])
    several = sorted(scan for scan, rows in answers.items() if len(rows) > 1)
    if several:
        for row in _host_states(conn, host_id, scan_ids=several):
            states.setdefault(row.scan_id, {})[row.wave] = row.state
    return states


def _current_verdict(conn: Connection, host_id: int) -> CurrentVerdict | None:
    hc, hs = t.host_current, t.host_states
    current = conn.execute(select(hc).where(hc.c.host_id == host_id)).first()
    if current is None:
        return None
    waves = dict(conn.execute(select(hs.c.wave, hs.c.state).where(hs.c.host_id == host_id)).all())
    return CurrentVerdict(
        scan=current.scan_id,
        status=current.status,
        port=current.port,
        build=current.build,
        conflict=bool(current.conflict),
        seen_at=from_db(current.seen_at),
        waves=waves,
    )


def _host_hunts(conn: Connection, host_id: int) -> tuple[HuntSummary, ...]:
    hu, f = t.hunts, t.findings
    rows = conn.execute(
        select(hu.c.id, hu.c.started_at, hu.c.verdict, func.count(f.c.id), func.min(f.c.time))
        .outerjoin(f, f.c.hunt_id == hu.c.id)
        .where(hu.c.host_id == host_id)
        .group_by(hu.c.id, hu.c.started_at, hu.c.verdict)
        .order_by(hu.c.started_at)
    ).all()
    return tuple(
        HuntSummary(hid, from_db(started) or datetime.min, verdict, int(n), from_db(first))
        for hid, started, verdict, n, first in rows
    )


def list_hosts(
    store: Store,
    *,
    tag: Tag | None = None,
    limit: int | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    include_retired: bool = True,
) -> list[HostRow]:
    """Known hosts with their place in the current fleet picture: folded status, the port and scan that
    gave it, build, when last seen, stale or retired, conflict, and tags."""
    h, hc = t.hosts, t.host_current
    at = picture_time(store)
    conds: list[ColumnElement[bool]] = [h.c.merged_into.is_(None)]
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
        .select_from(_join_tag(h.outerjoin(hc, hc.c.host_id == h.c.id), h.c.id, tag))
        .where(*conds)
        .order_by(h.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with store.connect() as conn:
        rows = conn.execute(query).all()
        all_tags = _tags_of(conn)
    out = []
    for row in rows:
        last = from_db(row.seen_at)
        out.append(
            HostRow(
                host_id=row.id,
                address=row.address,
                name=row.name,
                fe_server=row.fe_server,
                status=row.status,
                port=row.port,
                scan=row.scan_id,
                build=row.build,
                conflict=bool(row.conflict),
                last_seen=last,
                stale=bool(at and last and max_age is not None and last < at - max_age),
                retired_at=from_db(row.retired_at),
                tags=all_tags.get(row.id, {}),
            )
        )
    return out


# -- findings --------------------------------------------------------------------------------------


def findings(
    store: Store,
    *,
    host: str | None = None,
    host_id: int | None = None,
    wave: str | None = None,
    confidence: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    offset: int = 0,
    nulls_last: bool = True,
) -> Listing[FindingRow]:
    """Hunt findings in time order (then by id), with the host each was linked to; filtered by host
    (#id, address, name, X-FEServer, or the name the hunt was given), wave, confidence and time.
    ``nulls_last``: findings without a time come last (else where the database puts them)."""
    f, h = t.findings, t.hosts
    conds: list[ColumnElement[bool]] = []
    if host_id is not None:
        conds.append(f.c.host_id == host_id)
    if host is not None and host.strip():
        word = host.strip().lower()
        ids = store.find_hosts(word)
        by_name = func.lower(f.c.host) == word
        conds.append(or_(f.c.host_id.in_(ids), by_name) if ids else by_name)
    if wave:
        conds.append(f.c.wave == wave)
    if confidence:
        conds.append(f.c.confidence == confidence)
    if since is not None:
        conds.append(f.c.time >= to_db(since))
    order = (f.c.time.asc().nulls_last() if nulls_last else f.c.time, f.c.id)
    query = (
        select(f, h.c.address, h.c.name.label("host_name"), h.c.fe_server)
        .outerjoin(h, h.c.id == f.c.host_id)
        .where(*conds)
        .order_by(*order)
        .offset(offset or None)
    )
    with store.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(f).where(*conds)).scalar() or 0)
        rows = conn.execute(query if limit is None else query.limit(limit)).all()
    items = tuple(_finding(r) for r in rows)
    return Listing(total, limit if limit is not None else total, offset, items)


def _finding(r: Any) -> FindingRow:
    evidence: Mapping[str, JSON] = json.loads(r.evidence) if r.evidence else {}
    return FindingRow(
        id=r.id,
        hunt=r.hunt_id,
        host_id=r.host_id,
        host=r.host,
        address=r.address,
        name=r.host_name,
        fe_server=r.fe_server,
        rule=r.rule,
        wave=r.wave,
        cve=r.cve,
        confidence=r.confidence,
        time=from_db(r.time),
        title=r.title,
        description=r.description,
        evidence=evidence,
    )


__all__ = [
    "DEFAULT_MAX_AGE",
    "EVIDENCE_CONFIDENCE",
    "STATES",
    "breakdown",
    "breakdowns",
    "check_tag",
    "compromise",
    "count_in_state",
    "exposure_windows",
    "findings",
    "fleet_series",
    "host_exists",
    "host_history",
    "host_verdicts",
    "hosts_at_risk",
    "hosts_in_state",
    "latest_scan",
    "list_hosts",
    "parse_tag",
    "picture_time",
    "resolve_host",
    "snapshots",
    "tag_keys",
    "tag_values",
]
