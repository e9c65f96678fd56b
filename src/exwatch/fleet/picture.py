"""The fleet picture: every known host's latest observation at or before a time, per service, folded.

DESIGN.md defines it: at time T, each (host, port) service contributes its latest observation from a
finished scan at or before T; a host's services are folded with the precedence of exwatch.scan.fold
(an Exchange answer with an exact build outranks one with only the CU, which outranks a non-Exchange
answer, which outranks refused, timed-out and unreachable ports; the newest wins between equal ranks).
The host's per-wave states are those of the scan whose service won (that scan's own fold of the host).
Retired hosts leave the picture from their retirement time; a host whose verdict comes from a scan older
than ``max_age`` before T is *stale*: shown, counted apart, left out of the share (decided at read time).

The picture is kept incrementally so that the report never replays history:

- ``service_current`` and ``host_current`` hold the picture as of the newest pictured scan;
- ``picture_summary`` holds, for every pictured scan S, the picture's counts at S's time per wave and
  state, split by the scan each host's verdict comes from (so stale can be decided for any max age).

finish_scan moves it on by one scan (only the hosts that scan touched are folded again).  A scan that
arrives out of time order, a deleted scan, a retirement, a merge or a split rebuild it from the first
scan they affect: the state before that scan is taken with one set-based query (window functions,
SQLite >= 3.25 and PostgreSQL), then the later scans are stepped through again.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    union,
    update,
)

from exwatch.fleet import schema as t
from exwatch.fleet import tally
from exwatch.fleet.hostfold import WAVE_STATES, HostFold, StoredService, WaveState, cu_of
from exwatch.fleet.timeutil import to_db

HOST_STATUS = "*"


def rank_of(o: Any) -> Any:
    """The SQL rank of an observation row (the same as exwatch.scan.fold.service_rank)."""
    return case(
        (
            and_(
                o.c.status == "exchange",
                o.c.build.is_not(None),
                or_(o.c.cu_only.is_(None), o.c.cu_only == false()),
            ),
            4,
        ),
        (o.c.status == "exchange", 3),
        (o.c.status == "not_exchange", 2),
        else_=1,
    )


def status_of_rank(rank: Any, fallback: Any) -> Any:
    """The status a folded rank stands for (rank 1 keeps the observation's own status)."""
    return case((rank >= 3, "exchange"), (rank == 2, "not_exchange"), else_=fallback)


def _upsert(conn: Connection, table: Any) -> Any:
    # The dialect's insert imported here: loading the PostgreSQL dialect costs about 20 ms of CPU,
    # which a SQLite store (every `exwatch scan` by default) never needs.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def finished_scans() -> Any:
    """The condition for scans that belong in the picture."""
    sc = t.scans
    return and_(sc.c.finished_at.is_not(None), sc.c.kind == "scan")


def _before_or_at(when: datetime, scan_id: int) -> Any:
    sc = t.scans
    return or_(sc.c.started_at < when, and_(sc.c.started_at == when, sc.c.id <= scan_id))


def attach_unmatched(conn: Connection, scan_id: int) -> None:
    """Give observations stored without a host (a refused port of a server created later in the same
    scan) the host of this scan that has their address."""
    o, h, sh = t.observations, t.hosts, t.scan_hosts
    match = (
        select(func.min(h.c.id))
        .select_from(h.join(sh, sh.c.host_id == h.c.id))
        .where(sh.c.scan_id == scan_id, h.c.address == func.lower(o.c.address))
        .scalar_subquery()
    )
    conn.execute(
        update(o)
        .where(o.c.scan_id == scan_id, o.c.host_id.is_(None), o.c.address.is_not(None))
        .values(host_id=match)
    )


def host_status_counts(conn: Connection, scan_id: int) -> list[tuple[str, int]]:
    """Hosts per folded status in one scan; targets that match no host count once per address."""
    sh, o = t.scan_hosts, t.observations
    hosts = conn.execute(
        select(sh.c.status, func.count()).where(sh.c.scan_id == scan_id).group_by(sh.c.status)
    ).all()
    per_address = (
        select(
            func.max(rank_of(o)).label("rank"),
            func.min(o.c.status).label("status"),
        )
        .where(o.c.scan_id == scan_id, o.c.host_id.is_(None))
        .group_by(func.coalesce(o.c.address, o.c.key))
        .subquery()
    )
    status = status_of_rank(per_address.c.rank, per_address.c.status)
    targets = conn.execute(select(status, func.count()).group_by(status)).all()
    total: Counter[str] = Counter()
    for name, n in [*hosts, *targets]:
        total[str(name)] += int(n)
    return sorted(total.items())


def simple_folds(conn: Connection, scan_id: int, first: int, last: int) -> None:
    """The folds of hosts that have one service in the scan: observations ``first``..``last`` (each
    the only one of its host so far).  One service folds into its own answer (exwatch.fleet.hostfold:
    its status, rank, port and build, no conflict, and its per-wave states when it is an Exchange
    answer), so both tables are filled in SQL from the stored rows, with no Python per row."""
    o, ds = t.observations, t.detail_states
    in_range = (o.c.scan_id == scan_id, o.c.id >= first, o.c.id <= last, o.c.host_id.is_not(None))
    conn.execute(
        insert(t.scan_hosts).from_select(
            ["scan_id", "host_id", "status", "rank", "port", "build", "conflict"],
            select(o.c.scan_id, o.c.host_id, o.c.status, rank_of(o), o.c.port, o.c.build, false()).where(
                *in_range
            ),
        )
    )
    conn.execute(
        insert(t.observation_states).from_select(
            ["scan_id", "wave", "host_id", "state", "cu"],
            select(o.c.scan_id, ds.c.wave, o.c.host_id, ds.c.state, o.c.cu)
            .select_from(o.join(ds, ds.c.detail_id == o.c.detail_id))
            .where(*in_range, o.c.status == "exchange"),
        )
    )


# -- moving the picture on ------------------------------------------------------------------------


def _contributions(conn: Connection, touched: Any, retired_after: datetime | None) -> Counter[Any]:
    """Counts of the current picture's (host_current, host_states) hosts among ``touched`` (None: all
    of them), per wave, state and source scan, leaving out hosts retired at or before
    ``retired_after`` (None: keep all)."""
    hc, hs, h = t.host_current, t.host_states, t.hosts
    keep: list[Any] = [] if touched is None else [hc.c.host_id.in_(touched)]
    base: Any = hc
    # the hosts table only for the retired filter, and only when a host is retired at all (a join of
    # every state row with its host costs a second per 400,000 hosts)
    if retired_after is not None and _any_retired(conn):
        keep.append(or_(h.c.retired_at.is_(None), h.c.retired_at > retired_after))
        base = hc.join(h, h.c.id == hc.c.host_id)
    out: Counter[Any] = Counter()
    rows: list[Any] = list(
        conn.execute(
            select(hs.c.wave, hs.c.state, hc.c.scan_id, func.count())
            .select_from(base.join(hs, hs.c.host_id == hc.c.host_id))
            .where(*keep)
            .group_by(hs.c.wave, hs.c.state, hc.c.scan_id)
        ).all()
    )
    rows += conn.execute(
        select(literal(HOST_STATUS), hc.c.status, hc.c.scan_id, func.count())
        .select_from(base)
        .where(*keep)
        .group_by(hc.c.status, hc.c.scan_id)
    ).all()
    for wave, state, source, n in rows:
        out[(wave, state, int(source))] += int(n)
    return out


def _any_retired(conn: Connection) -> bool:
    h = t.hosts
    return conn.execute(select(h.c.id).where(h.c.retired_at.is_not(None)).limit(1)).first() is not None


class DetailStates:
    """Per-wave states of detail bodies, read once per id (bodies are few: they repeat across hosts)."""

    def __init__(self) -> None:
        self._states: dict[int, dict[str, WaveState]] = {}

    def load(self, conn: Connection, ids: set[int]) -> None:
        ds = t.detail_states
        missing = sorted(i for i in ids if i not in self._states)
        for start in range(0, len(missing), 900):
            chunk = missing[start : start + 900]
            for i in chunk:
                self._states[i] = {}
            for detail_id, wave, state in conn.execute(
                select(ds.c.detail_id, ds.c.wave, ds.c.state).where(ds.c.detail_id.in_(chunk))
            ):
                self._states[int(detail_id)][str(wave)] = {"state": str(state)}

    def waves(self, detail_id: int | None) -> dict[str, WaveState]:
        return {} if detail_id is None else self._states.get(int(detail_id), {})


def fold_services_rows(rows: Any, details: DetailStates) -> dict[int, HostFold]:
    """Fold service rows (host_id, port, scan_id, rank, status, build, detail_id, at) per host."""
    folds: dict[int, HostFold] = {}
    for row in rows:
        rec: StoredService = {
            "status": row.status,
            "port": row.port or None,
            "build": row.build,
            # the stored rank says whether the build was exact (4) or only the CU (3)
            "cu_only": row.rank == 3 and row.build is not None,
            "time": str(to_db(row.at)),
            "waves": details.waves(row.detail_id),
        }
        fold = folds.get(row.host_id)
        if fold is None:
            fold = folds[row.host_id] = HostFold()
            fold.scan_id = None
        before = (fold.rank, fold.when, fold.port)
        fold.add(rec, cu_of(row.build))
        if (fold.rank, fold.when, fold.port) != before:
            fold.scan_id = int(row.scan_id)
    return folds


def _refold_hosts(conn: Connection, hosts: Any) -> None:
    """host_current and host_states of these hosts from their services' latest observations
    (service_current), folded as a scan's services are (exwatch.fleet.hostfold).

    A host with one service (the common case) is copied in SQL; hosts with several are folded here.
    """
    sv, hc, hs, ds = t.service_current, t.host_current, t.host_states, t.detail_states
    for table in (hc, hs):
        if conn.dialect.name == "sqlite" and _covers(conn, table, hosts):
            # every row goes: SQLite drops the table's pages at once instead of row by row (a scan of
            # the whole fleet); PostgreSQL deletes row by row either way (TRUNCATE would lock readers out)
            conn.execute(table.delete())
        else:
            conn.execute(table.delete().where(table.c.host_id.in_(hosts)))
    counts = (
        select(sv.c.host_id, func.count().label("n"))
        .where(sv.c.host_id.in_(hosts))
        .group_by(sv.c.host_id)
        .subquery()
    )
    single = select(counts.c.host_id).where(counts.c.n == 1)
    conn.execute(
        insert(hc).from_select(
            list(HC_COLUMNS),
            select(
                sv.c.host_id,
                sv.c.scan_id,
                sv.c.status,
                sv.c.rank,
                func.nullif(sv.c.port, 0),
                sv.c.at,
                sv.c.build,
                sv.c.cu,
                false(),
            ).where(sv.c.host_id.in_(single)),
        )
    )
    conn.execute(
        insert(hs).from_select(
            ["host_id", "wave", "state"],
            select(sv.c.host_id, ds.c.wave, ds.c.state)
            .select_from(sv.join(ds, ds.c.detail_id == sv.c.detail_id))
            .where(sv.c.host_id.in_(single), sv.c.rank >= 3),
        )
    )
    several = select(counts.c.host_id).where(counts.c.n > 1)
    rows = conn.execute(select(sv).where(sv.c.host_id.in_(several)).order_by(sv.c.host_id, sv.c.port)).all()
    if not rows:
        return
    details = DetailStates()
    details.load(conn, {int(r.detail_id) for r in rows if r.detail_id is not None})
    folds = fold_services_rows(rows, details)
    at: dict[tuple[int, int], Any] = {(int(r.host_id), int(r.scan_id)): r.at for r in rows}
    current: list[tuple[Any, ...]] = []
    states: list[tuple[Any, ...]] = []
    for host_id, fold in folds.items():
        scan = int(fold.scan_id or 0)
        current.append(
            (
                host_id,
                scan,
                fold.status,
                fold.rank,
                fold.port,
                at[(host_id, scan)],
                fold.build,
                fold.cu,
                fold.conflict,
            )
        )
        states += [(host_id, w, st) for w, st in fold.states().items()]
    bulk(conn, "host_current", HC_COLUMNS, current)
    bulk(conn, "host_states", ("host_id", "wave", "state"), states)


def _covers(conn: Connection, table: Any, hosts: Any) -> bool:
    """Whether every row of ``table`` (host_current or host_states) is of one of ``hosts``."""
    outside = select(table.c.host_id).where(table.c.host_id.not_in(hosts)).limit(1)
    return conn.execute(outside).first() is None


HC_COLUMNS = ("host_id", "scan_id", "status", "rank", "port", "seen_at", "build", "cu", "conflict")


def bulk(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Insert many plain rows: COPY on PostgreSQL, one executemany per 5,000 on SQLite."""
    if not rows:
        return
    cols = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"
    # times in SQLAlchemy's own SQLite text layout, so that they compare as text with its parameters
    times = [i for i, v in enumerate(rows[0]) if isinstance(v, datetime)]
    if times:
        rows = [
            tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in row)
            for row in rows
        ]
    for start in range(0, len(rows), 5000):
        conn.exec_driver_sql(sql, rows[start : start + 5000])


def add_detail_states(conn: Connection, bodies: list[tuple[int, str]]) -> None:
    """Index the per-wave states of new detail bodies (detail_states)."""
    rows = []
    for detail_id, body in bodies:
        waves = (json.loads(body) if body else {}).get("waves") or {}
        for wave, verdict in waves.items():
            state = verdict.get("state") if isinstance(verdict, dict) else verdict
            if state in WAVE_STATES:
                rows.append({"detail_id": detail_id, "wave": wave, "state": state})
    if rows:
        conn.execute(insert(t.detail_states), rows)


def _step(conn: Connection, scan_id: int, when: datetime, prev: tuple[int, datetime] | None) -> None:
    """Move the picture from the previous pictured scan ``prev`` to ``scan_id`` (at ``when``).

    The counts at ``when`` are the previous counts with the touched hosts' old contributions taken
    out and their new ones put in; when the scan saw at least half the picture's hosts, they are
    counted afresh over the whole picture instead (one pass rather than two over most of it)."""
    h, sv, ps, sh, hc = t.hosts, t.service_current, t.picture_summary, t.scan_hosts, t.host_current
    prev_when = prev[1] if prev else None
    # the hosts this scan observed: its folds (one per host with a stored observation)
    observed = select(sh.c.host_id).where(sh.c.scan_id == scan_id)
    retiring = select(h.c.id).where(h.c.retired_at <= when)
    if prev_when is not None:
        retiring = retiring.where(h.c.retired_at > prev_when)
    touched = union(observed, retiring).subquery()
    touched_ids = select(touched.c[0])
    afresh = prev is None
    if not afresh:
        seen = conn.execute(select(func.count()).select_from(sh).where(sh.c.scan_id == scan_id)).scalar() or 0
        pictured = conn.execute(select(func.count()).select_from(hc)).scalar() or 0
        afresh = 2 * int(seen) >= int(pictured)
    before: Counter[Any] = Counter() if afresh else _contributions(conn, touched_ids, prev_when)
    # each service of this scan: its best observation replaces the service's older one
    best = _latest_services(select_scan=scan_id)
    rows = select(
        best.c.host_id,
        best.c.port,
        best.c.scan_id,
        best.c.rank,
        best.c.status,
        best.c.at,
        best.c.build,
        best.c.cu,
        best.c.detail_id,
    ).where(best.c.rn == 1)
    cols = ["host_id", "port", "scan_id", "rank", "status", "at", "build", "cu", "detail_id"]
    stmt = _upsert(conn, sv).from_select(cols, rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[sv.c.host_id, sv.c.port],
        set_={c: getattr(stmt.excluded, c) for c in cols[2:]},
    )
    conn.execute(stmt)
    _refold_hosts(conn, observed)
    summary: Counter[Any] = Counter()
    if afresh:
        summary.update(_contributions(conn, None, when))
    else:
        assert prev is not None
        after = _contributions(conn, touched_ids, when)
        for wave, state, source, n in conn.execute(
            select(ps.c.wave, ps.c.state, ps.c.source_scan, ps.c.n).where(ps.c.scan_id == prev[0])
        ):
            summary[(wave, state, int(source))] += int(n)
        summary.subtract(before)
        summary.update(after)
    conn.execute(ps.delete().where(ps.c.scan_id == scan_id))
    values = [
        {"scan_id": scan_id, "wave": w, "state": st, "source_scan": src, "n": n}
        for (w, st, src), n in sorted(summary.items())
        if n > 0
    ]
    if values:
        conn.execute(insert(ps), values)
    conn.execute(update(t.scans).where(t.scans.c.id == scan_id).values(pictured=true()))


def _pictured_before(conn: Connection, when: datetime, scan_id: int) -> tuple[int, datetime] | None:
    sc = t.scans
    row = conn.execute(
        select(sc.c.id, sc.c.started_at)
        .where(finished_scans(), sc.c.pictured == true())
        .where(or_(sc.c.started_at < when, and_(sc.c.started_at == when, sc.c.id < scan_id)))
        .order_by(sc.c.started_at.desc(), sc.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else (int(row.id), to_db(row.started_at) or when)


def after_finish(conn: Connection, scan_id: int) -> None:
    """Bring the picture up to a scan that has just finished: one step if it is the newest, else a
    rebuild from it."""
    sc = t.scans
    row = conn.execute(select(sc.c.started_at, sc.c.kind).where(sc.c.id == scan_id)).one()
    if row.kind != "scan":
        tally.refresh(conn)  # not in the picture, but it may have written its hosts' tags
        return
    when = to_db(row.started_at)
    assert when is not None
    later = conn.execute(
        select(func.count())
        .select_from(sc)
        .where(
            sc.c.pictured == true(),
            sc.c.id != scan_id,
            or_(sc.c.started_at > when, and_(sc.c.started_at == when, sc.c.id > scan_id)),
        )
    ).scalar()
    unpictured_before = conn.execute(
        select(func.count())
        .select_from(sc)
        .where(
            finished_scans(),
            or_(sc.c.pictured.is_(None), sc.c.pictured == false()),
            sc.c.id != scan_id,
            or_(sc.c.started_at < when, and_(sc.c.started_at == when, sc.c.id < scan_id)),
        )
    ).scalar()
    already = conn.execute(select(sc.c.pictured).where(sc.c.id == scan_id)).scalar()
    if unpictured_before:
        rebuild(conn)
        return
    if later or already:
        rebuild(conn, since=when)
        return
    _step(conn, scan_id, when, _pictured_before(conn, when, scan_id))
    tally.refresh(conn)


def rebuild(conn: Connection, since: datetime | None = None) -> int:
    """Rebuild the picture of every finished scan from ``since`` on (None: all); returns how many."""
    sc, ps, sv, hc = t.scans, t.picture_summary, t.service_current, t.host_current
    order = (sc.c.started_at, sc.c.id)
    scans = [
        (int(r.id), to_db(r.started_at))
        for r in conn.execute(select(sc.c.id, sc.c.started_at).where(finished_scans()).order_by(*order))
    ]
    if since is not None:
        since = to_db(since)
    first = next((i for i, (_, when) in enumerate(scans) if since is None or (when and when >= since)), None)
    # scans no longer finished or pictured past the start are cleared
    redo = scans[first:] if first is not None else []
    kept = scans[:first] if first is not None else scans
    keep_ids = [i for i, _ in kept]
    conn.execute(ps.delete().where(~ps.c.scan_id.in_(keep_ids) if keep_ids else true()))
    conn.execute(update(sc).where(~sc.c.id.in_(keep_ids) if keep_ids else true()).values(pictured=null()))
    conn.execute(sv.delete())
    conn.execute(hc.delete())
    prev = kept[-1] if kept else None
    if prev is not None:
        pid, pwhen = prev
        assert pwhen is not None
        _seed(conn, pid, pwhen)
    for scan_id, when in redo:
        assert when is not None
        _step(conn, scan_id, when, (prev[0], prev[1]) if prev else None)  # type: ignore[arg-type]
        prev = (scan_id, when)
    tally.refresh(conn)
    return len(redo)


def _latest_services(
    *, select_scan: int | None = None, until: tuple[datetime, int] | None = None, hosts: Any = None
) -> Any:
    """A subquery of service observations ranked newest first per (host, port) (``rn`` = 1 is the
    latest): of one scan (``select_scan``) or of every finished scan up to ``until`` (time, scan id)."""
    o, sc = t.observations, t.scans
    rank = rank_of(o)
    port = func.coalesce(o.c.port, 0)
    conds: list[Any] = [o.c.host_id.is_not(None)]
    if select_scan is not None:
        conds.append(o.c.scan_id == select_scan)
    else:
        conds.append(finished_scans())
        if until is not None:
            conds.append(_before_or_at(*until))
    if hosts is not None:
        conds.append(o.c.host_id.in_(hosts))
    return (
        select(
            o.c.host_id,
            port.label("port"),
            o.c.scan_id,
            rank.label("rank"),
            status_of_rank(rank, o.c.status).label("status"),
            sc.c.started_at.label("at"),
            o.c.build,
            o.c.cu,
            o.c.detail_id,
            func.row_number()
            .over(
                partition_by=(o.c.host_id, port),
                order_by=(sc.c.started_at.desc(), sc.c.id.desc(), rank.desc(), o.c.id),
            )
            .label("rn"),
        )
        .select_from(o.join(sc, sc.c.id == o.c.scan_id))
        .where(*conds)
        .subquery()
    )


def _seed(conn: Connection, scan_id: int, when: datetime) -> None:
    """service_current and host_current as of one scan, in one set-based pass over the observations."""
    sv = t.service_current
    latest = _latest_services(until=(when, scan_id))
    cols = ["host_id", "port", "scan_id", "rank", "status", "at", "build", "cu", "detail_id"]
    conn.execute(insert(sv).from_select(cols, select(*(latest.c[c] for c in cols)).where(latest.c.rn == 1)))
    _refold_hosts(conn, select(sv.c.host_id).distinct())


def ensure(conn: Connection) -> bool:
    """Build the picture of finished scans that have none (a store from before the picture existed)."""
    sc, d, ds = t.scans, t.details, t.detail_states
    if (
        conn.execute(select(d.c.id).limit(1)).first()
        and not conn.execute(select(ds.c.detail_id).limit(1)).first()
    ):
        add_detail_states(conn, [(int(i), str(b)) for i, b in conn.execute(select(d.c.id, d.c.body))])
    missing = conn.execute(
        select(func.min(sc.c.started_at)).where(
            finished_scans(), or_(sc.c.pictured.is_(None), sc.c.pictured == false())
        )
    ).scalar()
    if missing is None:
        tally.ensure(conn)
        return False
    rebuild(conn)
    return True


def picture_at(conn: Connection, when: datetime, scan_id: int, *, hosts: Any = None) -> dict[int, HostFold]:
    """The fleet picture at one scan (its time ``when``), computed from the observations alone: every
    host's latest services folded (for filtered series and checks; retired hosts left out).
    Each fold carries ``scan_id`` (the scan whose service won) and ``when`` (that scan's time)."""
    h = t.hosts
    latest = _latest_services(until=(when, scan_id), hosts=hosts)
    rows = conn.execute(
        select(latest).where(latest.c.rn == 1).order_by(latest.c.host_id, latest.c.port)
    ).all()
    details = DetailStates()
    details.load(conn, {int(r.detail_id) for r in rows if r.detail_id is not None})
    folds = fold_services_rows(rows, details)
    retired = {int(i) for i in conn.execute(select(h.c.id).where(h.c.retired_at <= to_db(when))).scalars()}
    return {k: v for k, v in folds.items() if k not in retired}
