"""The current fleet picture counted per CU, build and report tag, kept as the picture moves.

The report's breakdowns (per CU, per build, per value of the tag keys ``TAG_KEYS``) of its headline
wave were each a pass over every pictured host: at 400,000 hosts half a second each, two thirds of
the report.  The table ``picture_tally`` holds their counts for the newest pictured scan and the
headline wave (the first wave, in the knowledge base's order, with a classified host in the picture:
the report's own choice), per state, breakdown, group and the time of the host's verdict
(``host_current.seen_at``, copied as it is stored), so that stale is decided at read time for any
``--max-age`` with the very comparison the exact query makes.  Merged-away hosts and hosts retired
by the picture's time are left out, as the exact query does.

It is counted afresh in one grouped pass over the wave's states (the pass one report made; it moves
from every report to every finished scan) whenever the picture or the tags can have changed: at the
end of every ``finish_scan`` (of any kind: a scan writes its hosts' tags), of every rebuild (a
deleted scan, a retirement, a merge, a split, an undo), and on open when it does not describe the
store (a store from before revision 0008).

It is used (``read``) only when it answers exactly: no tag filter, only breakdowns and the wave it
holds, its marker row names the newest pictured scan and the newest scan of any kind, and no scan is
unfinished (a running or killed scan has written tags that the picture does not have yet).
Otherwise the caller computes the breakdowns from the picture (exwatch.fleet.queries.breakdowns,
``tallied=False``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, literal, or_, select, union_all

from exwatch.fleet import schema as t
from exwatch.fleet.timeutil import from_db, to_db

# The tag keys the report breaks the picture down by (exwatch.report.model._breakdowns).
TAG_KEYS = ("organisation", "country", "network")
BREAKDOWNS = ("cu", "build", *(f"tag:{k}" for k in TAG_KEYS))
MARK = "*"  # the marker row's breakdown, group and state (its wave the tallied one); n: the newest scan id
CLASSIFIED = ("vulnerable", "patched", "mitigated")
UNKNOWN_BUILD = "unknown build"
UNTAGGED = "(untagged)"


def _latest(conn: Connection) -> tuple[int, Any] | None:
    """The newest pictured scan and its stored time (as exwatch.fleet.queries.latest_scan)."""
    sc = t.scans
    row = conn.execute(
        select(sc.c.id, sc.c.started_at)
        .where(sc.c.finished_at.is_not(None), sc.c.kind == "scan", sc.c.pictured.is_not(None))
        .order_by(sc.c.started_at.desc(), sc.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else (int(row.id), row.started_at)


def headline_wave(conn: Connection, scan_id: int) -> str | None:
    """The first wave, in the knowledge base's order (then by name), with a classified host in the
    picture at ``scan_id`` (picture_summary): the wave the report heads with unless stale hosts or
    --wave say otherwise."""
    ps = t.picture_summary
    waves = set(
        conn.execute(
            select(ps.c.wave)
            .where(ps.c.scan_id == scan_id, ps.c.wave != MARK, ps.c.state.in_(CLASSIFIED), ps.c.n > 0)
            .distinct()
        ).scalars()
    )
    if not waves:
        return None
    from exwatch.kb import WAVES

    order = [w.id for w in WAVES]
    return min(waves, key=lambda w: (order.index(w) if w in order else len(order), w))


def _newest_scan(conn: Connection) -> int:
    return int(conn.execute(select(func.max(t.scans.c.id))).scalar() or 0)


def group_columns(conn: Connection) -> tuple[Any, list[Any]]:
    """The picture's join (host_current, host_states, one outer join with tags per key) and the group
    expression of every breakdown in ``BREAKDOWNS``, as the exact query writes them; a key no host
    carries is no join but its constant (every host is untagged there: a lookup per host saved)."""
    hc, hs, tg = t.host_current, t.host_states, t.tags
    source: Any = hc.join(hs, hs.c.host_id == hc.c.host_id)
    groups: list[Any] = [func.coalesce(hc.c.cu, UNKNOWN_BUILD), func.coalesce(hc.c.build, UNKNOWN_BUILD)]
    for i, key in enumerate(TAG_KEYS):
        if conn.execute(select(tg.c.key).where(tg.c.key == key).limit(1)).first() is None:
            groups.append(literal(UNTAGGED))
            continue
        g = tg.alias(f"t{i}")
        source = source.outerjoin(g, and_(g.c.host_id == hc.c.host_id, g.c.key == key))
        groups.append(func.coalesce(g.c.value, UNTAGGED))
    return source, groups


def refresh(conn: Connection) -> None:
    """Count the current picture of the headline wave afresh into picture_tally (one grouped pass over
    its hosts, rolled up per breakdown in SQL so that every stored value is copied as it is)."""
    pt, hc, hs, h = t.picture_tally, t.host_current, t.host_states, t.hosts
    conn.execute(pt.delete())
    latest = _latest(conn)
    if latest is None:
        return
    scan_id, started = latest
    at = from_db(started)
    assert at is not None
    wave = headline_wave(conn, scan_id)
    if wave is None:
        return
    if conn.dialect.name == "postgresql":
        # the grouped sort in memory (the default 4 MB spills it to disk: three times slower)
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    gone = select(h.c.id).where(or_(h.c.merged_into.is_not(None), h.c.retired_at <= to_db(at)))
    source, groups = group_columns(conn)
    labels = [f"g{i}" for i in range(len(groups))]
    base = (
        select(
            hs.c.state,
            hc.c.seen_at,
            *(g.label(name) for g, name in zip(groups, labels, strict=True)),
            func.count().label("n"),
        )
        .select_from(source)
        .where(hs.c.wave == wave, hc.c.host_id.not_in(gone))
        .group_by(hs.c.state, hc.c.seen_at, *groups)
        .cte("base")
    )
    parts = [
        select(
            literal(scan_id),
            literal(wave),
            literal(name),
            base.c[label],
            base.c.state,
            base.c.seen_at,
            func.sum(base.c.n),
        ).group_by(base.c[label], base.c.state, base.c.seen_at)
        for name, label in zip(BREAKDOWNS, labels, strict=True)
    ]
    columns = ["scan_id", "wave", "breakdown", "grp", "state", "seen_at", "n"]
    conn.execute(insert(pt).from_select(columns, union_all(*parts)))
    conn.execute(
        insert(pt).values(
            scan_id=scan_id,
            wave=wave,
            breakdown=MARK,
            grp=MARK,
            state=MARK,
            seen_at=to_db(at),
            n=_newest_scan(conn),
        )
    )


def _covers(conn: Connection, wave: str | None = None) -> tuple[int, datetime] | None:
    """The newest pictured scan and its time when the tally describes the store exactly (and holds
    ``wave``, when given), else None."""
    pt, sc = t.picture_tally, t.scans
    latest = _latest(conn)
    if latest is None:
        return None
    mark = conn.execute(
        select(pt.c.scan_id, pt.c.wave, pt.c.n).where(pt.c.breakdown == MARK).limit(1)
    ).first()
    if mark is None or int(mark.scan_id) != latest[0] or int(mark.n) != _newest_scan(conn):
        return None
    if wave is not None and mark.wave != wave:
        return None
    if conn.execute(select(sc.c.id).where(sc.c.finished_at.is_(None)).limit(1)).first() is not None:
        return None
    at = from_db(latest[1])
    return None if at is None else (latest[0], at)


def ensure(conn: Connection) -> None:
    """Count the tally afresh when it does not describe the store (a store from before it existed,
    or written by a process that stopped half-way: its transaction would have rolled back)."""
    pt = t.picture_tally
    if _latest(conn) is None:
        if conn.execute(select(pt.c.scan_id).limit(1)).first() is not None:
            conn.execute(pt.delete())
        return
    unfinished = conn.execute(select(t.scans.c.id).where(t.scans.c.finished_at.is_(None)).limit(1)).first()
    if unfinished is None and _covers(conn) is None:
        refresh(conn)


def read(
    conn: Connection, wave: str, by: Sequence[str], max_age: timedelta | None
) -> dict[str, dict[str, Counter[str]]] | None:
    """Per breakdown in ``by``: per group, the counts per state of the current picture's hosts for
    ``wave`` (stale ones left out), from the tally; None when the tally cannot answer exactly."""
    if any(name not in BREAKDOWNS for name in by):
        return None
    covered = _covers(conn, wave)
    if covered is None:
        return None
    scan_id, at = covered
    pt = t.picture_tally
    conds: list[Any] = [pt.c.scan_id == scan_id, pt.c.wave == wave, pt.c.breakdown.in_(list(by))]
    if max_age is not None:
        conds.append(pt.c.seen_at >= to_db(at - max_age))
    per: dict[str, dict[str, Counter[str]]] = {name: {} for name in by}
    for name, group, state, n in conn.execute(
        select(pt.c.breakdown, pt.c.grp, pt.c.state, func.sum(pt.c.n))
        .where(*conds)
        .group_by(pt.c.breakdown, pt.c.grp, pt.c.state)
    ):
        per[str(name)].setdefault(str(group), Counter())[str(state)] += int(n)
    return per


__all__ = ["BREAKDOWNS", "TAG_KEYS", "ensure", "read", "refresh"]
