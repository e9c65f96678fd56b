"""Scan and host lifecycle: list, show and delete scans; retire, merge and split hosts; undo.

Every host change is recorded in ``host_changes`` with what it moved (observation, hunt and finding
ids), so ``undo(change_id)`` puts it back exactly.  Everything that depends on the change (the
per-scan folds of the hosts concerned, the fleet picture from the first affected scan on, the exposure
windows) is recomputed in the same transaction.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypedDict, cast

from sqlalchemy import Connection, Row, Table, func, insert, select, update

from exwatch.errors import InputError
from exwatch.fleet import picture
from exwatch.fleet import queries as q
from exwatch.fleet import schema as t
from exwatch.fleet.jsontypes import JSONObject
from exwatch.fleet.rows import PictureDoc
from exwatch.fleet.store import Store, rebuild_exposure, refold
from exwatch.fleet.timeutil import from_db, now, to_db


# What the commands print (``scans`` and ``hosts``, as JSON or tables): the documents below.
class ScanEntry(TypedDict):
    """One scan in ``scans list``."""

    scan: int
    kind: str
    started_at: str | None
    finished_at: str | None
    finished: bool
    scope: list[str] | None
    services: int
    hosts: int


class PortCount(TypedDict):
    """Services of one port in one status, in ``scans show``."""

    port: int | None
    status: str
    services: int


class ScanDetail(ScanEntry):
    """One scan in ``scans show``: its entry, parameters, what it saw and the fleet picture then."""

    params: JSONObject
    statuses: dict[str, int]
    waves: dict[str, dict[str, int]]
    ports: list[PortCount]
    fleet_picture: PictureDoc | None


class ScanDeleted(TypedDict):
    """What ``scans delete`` removed and recomputed."""

    scan: int
    started_at: str | None
    services: int
    hosts: int
    hosts_removed: int
    pictures_rebuilt: int


class Retired(TypedDict):
    change: int
    host_id: int
    retired_at: str | None
    previous: str | None


class Merged(TypedDict):
    change: int
    host_id: int
    merged: int
    observations: int


class SplitOff(TypedDict):
    change: int
    host_id: int
    new_host_id: int
    observations: int


class ChangeEntry(TypedDict):
    """One recorded host change in ``hosts changes``."""

    change: int
    kind: str
    host_id: int
    other_id: int | None
    effective_at: str | None
    created_at: str | None
    undone_at: str | None
    observations: int


class Undone(TypedDict):
    change: int
    kind: str
    host_id: int
    other_id: int | None


def _scan_row(conn: Connection, scan_id: int) -> Row[Any]:
    row = conn.execute(select(t.scans).where(t.scans.c.id == scan_id)).first()
    if row is None:
        raise InputError(f"no scan {scan_id} in the store; `exwatch scans list` shows them")
    return row


def list_scans(store: Store, *, limit: int | None = None) -> list[ScanEntry]:
    """Every scan, newest first: time, state, scope (its targets), services and hosts it stored."""
    sc, o, sh = t.scans, t.observations, t.scan_hosts
    with store.connect() as conn:
        query = select(sc).order_by(sc.c.started_at.desc(), sc.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        scans = conn.execute(query).all()
        services: dict[int, int] = {
            int(k): int(n) for k, n in conn.execute(select(o.c.scan_id, func.count()).group_by(o.c.scan_id))
        }
        hosts: dict[int, int] = {
            int(k): int(n) for k, n in conn.execute(select(sh.c.scan_id, func.count()).group_by(sh.c.scan_id))
        }
    return [_scan_doc(row, services.get(row.id, 0), hosts.get(row.id, 0)) for row in scans]


def _scan_doc(row: Row[Any], services: int, hosts: int) -> ScanEntry:
    return {
        "scan": row.id,
        "kind": row.kind,
        "started_at": q.iso(row.started_at),
        "finished_at": q.iso(row.finished_at),
        "finished": row.finished_at is not None,
        "scope": q.scope_of(row.params),
        "services": int(services),
        "hosts": int(hosts),
    }


def show_scan(store: Store, scan_id: int) -> ScanDetail:
    """One scan: its parameters and scope, what it saw (per status and per wave), and the fleet picture
    at its time."""
    sc, o, sh, ss = t.scans, t.observations, t.scan_hosts, t.scan_summary
    with store.connect() as conn:
        row = _scan_row(conn, scan_id)
        services = conn.execute(select(func.count()).where(o.c.scan_id == scan_id)).scalar() or 0
        hosts = conn.execute(select(func.count()).where(sh.c.scan_id == scan_id)).scalar() or 0
        summary = conn.execute(select(ss.c.wave, ss.c.state, ss.c.n).where(ss.c.scan_id == scan_id)).all()
        ports = conn.execute(
            select(o.c.port, o.c.status, func.count())
            .where(o.c.scan_id == scan_id)
            .group_by(o.c.port, o.c.status)
            .order_by(o.c.port, o.c.status)
        ).all()
    del sc
    waves: dict[str, dict[str, int]] = {}
    for w, st, n in summary:
        if w != picture.HOST_STATUS:
            waves.setdefault(w, {})[st] = int(n)
    fleet = [p for p in q.fleet_series(store) if p.scan_id == scan_id]
    return {
        **_scan_doc(row, services, hosts),
        # free-form: the options the scan was started with (Store.start_scan), as stored
        "params": json.loads(row.params) if row.params else {},
        "statuses": {st: int(n) for w, st, n in summary if w == picture.HOST_STATUS},
        "waves": waves,
        "ports": [{"port": p, "status": st, "services": int(n)} for p, st, n in ports],
        "fleet_picture": cast(PictureDoc, fleet[0].to_dict()) if fleet else None,
    }


def delete_scan(store: Store, scan_id: int) -> ScanDeleted:
    """Delete one scan and everything stored from it; the fleet picture from its time on, the exposure
    windows and the hosts only it had seen are recomputed or removed."""
    sc, o, sh, s, ss, ps, h = (
        t.scans,
        t.observations,
        t.scan_hosts,
        t.observation_states,
        t.scan_summary,
        t.picture_summary,
        t.hosts,
    )
    with store._begin() as conn:
        row = _scan_row(conn, scan_id)
        hosts = [int(i) for i in conn.execute(select(sh.c.host_id).where(sh.c.scan_id == scan_id)).scalars()]
        services = conn.execute(o.delete().where(o.c.scan_id == scan_id)).rowcount
        for table in (s, sh, ss, ps):
            conn.execute(table.delete().where(table.c.scan_id == scan_id))
        conn.execute(sc.delete().where(sc.c.id == scan_id))
        # hosts no scan, hunt or change knows any more
        orphans = []
        for chunk in _chunks(hosts):
            seen = set(conn.execute(select(o.c.host_id).where(o.c.host_id.in_(chunk)).distinct()).scalars())
            hunted = set(
                conn.execute(select(t.hunts.c.host_id).where(t.hunts.c.host_id.in_(chunk))).scalars()
            ) | set(
                conn.execute(select(t.findings.c.host_id).where(t.findings.c.host_id.in_(chunk))).scalars()
            )
            changed = set(
                conn.execute(
                    select(t.host_changes.c.host_id).where(t.host_changes.c.host_id.in_(chunk))
                ).scalars()
            ) | set(
                conn.execute(
                    select(t.host_changes.c.other_id).where(t.host_changes.c.other_id.in_(chunk))
                ).scalars()
            )
            orphans += [i for i in chunk if i not in seen | hunted | changed]
        for chunk in _chunks(orphans):
            conn.execute(t.tags.delete().where(t.tags.c.host_id.in_(chunk)))
            conn.execute(t.host_exposure.delete().where(t.host_exposure.c.host_id.in_(chunk)))
            conn.execute(t.service_current.delete().where(t.service_current.c.host_id.in_(chunk)))
            conn.execute(t.host_current.delete().where(t.host_current.c.host_id.in_(chunk)))
            conn.execute(h.delete().where(h.c.id.in_(chunk)))
        rebuilt = picture.rebuild(conn, since=from_db(row.started_at))
        rebuild_exposure(conn)
    store.forget_identities()
    return {
        "scan": scan_id,
        "started_at": q.iso(row.started_at),
        "services": int(services or 0),
        "hosts": len(hosts),
        "hosts_removed": len(orphans),
        "pictures_rebuilt": rebuilt,
    }


class Identifiers(TypedDict):
    """A host's identifiers before a split (put back by its undo)."""

    address: str | None
    name: str | None
    fe_server: str | None
    cert: str | None


class ChangeData(TypedDict, total=False):
    """What a host change moved (``host_changes.data``), so that its undo puts it back: a retirement
    keeps the previous retirement time, a merge and a split the ids they moved."""

    previous: str | None
    observations: list[int]
    hunts: list[int]
    findings: list[int]
    scans: list[int]
    addresses: list[str]
    identity: Identifiers


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _record(
    conn: Connection,
    kind: str,
    host_id: int,
    other_id: int | None,
    at: datetime | None,
    data: ChangeData,
) -> int:
    return int(
        conn.execute(
            insert(t.host_changes)
            .values(
                kind=kind,
                host_id=host_id,
                other_id=other_id,
                effective_at=to_db(at),
                created_at=now(),
                data=json.dumps(data, default=str, sort_keys=True),
            )
            .returning(t.host_changes.c.id)
        ).scalar_one()
    )


def retire(store: Store, host: str, *, at: datetime | None = None) -> Retired:
    """Retire a host (decommissioned) from ``at``: from then on it leaves the fleet picture.

    The default is the time of the newest finished scan (now for a store without one), so that the
    current picture, which is the picture at that scan's time, leaves the host out at once.
    """
    host_id = q.resolve_host(store, host)
    when = to_db(at) or to_db(q.picture_time(store)) or now()
    h = t.hosts
    with store._begin() as conn:
        before = conn.execute(select(h.c.retired_at).where(h.c.id == host_id)).scalar()
        conn.execute(update(h).where(h.c.id == host_id).values(retired_at=when))
        change = _record(conn, "retire", host_id, None, when, {"previous": q.iso(before)})
        earliest = min(x for x in (when, to_db(before)) if x is not None)
        picture.rebuild(conn, since=earliest)
    return {"change": change, "host_id": host_id, "retired_at": q.iso(when), "previous": q.iso(before)}


def _move(conn: Connection, table: Table, ids: list[int], host_id: int) -> None:
    for chunk in _chunks(ids):
        conn.execute(update(table).where(table.c.id.in_(chunk)).values(host_id=host_id))


def _owned(conn: Connection, table: Table, host_id: int) -> list[int]:
    return sorted(
        int(i) for i in conn.execute(select(table.c.id).where(table.c.host_id == host_id)).scalars()
    )


def _scans_of(conn: Connection, obs_ids: list[int]) -> tuple[list[int], datetime | None]:
    o, sc = t.observations, t.scans
    scans: set[int] = set()
    first: datetime | None = None
    for chunk in _chunks(obs_ids):
        for scan_id, started in conn.execute(
            select(o.c.scan_id, sc.c.started_at).join(sc, sc.c.id == o.c.scan_id).where(o.c.id.in_(chunk))
        ):
            scans.add(int(scan_id))
            when = to_db(started)
            if when is not None and (first is None or when < first):
                first = when
    return sorted(scans), first


def _after_move(conn: Connection, scans: list[int], hosts: list[int], since: datetime | None) -> None:
    refold(conn, scans, hosts)
    picture.rebuild(conn, since=since)
    rebuild_exposure(conn)


def merge(store: Store, keep: str, gone: str) -> Merged:
    """Merge host ``gone`` into host ``keep`` (identity matching took one server for two): its
    observations, hunts and findings move to ``keep``; its identifiers will name ``keep`` from now on."""
    keep_id, gone_id = q.resolve_host(store, keep), q.resolve_host(store, gone)
    if keep_id == gone_id:
        raise InputError(f"{keep!r} and {gone!r} are the same host #{keep_id}")
    h, o = t.hosts, t.observations
    with store._begin() as conn:
        obs = _owned(conn, o, gone_id)
        hunts = _owned(conn, t.hunts, gone_id)
        findings = _owned(conn, t.findings, gone_id)
        scans, first = _scans_of(conn, obs)
        _move(conn, o, obs, keep_id)
        _move(conn, t.hunts, hunts, keep_id)
        _move(conn, t.findings, findings, keep_id)
        conn.execute(update(h).where(h.c.id == gone_id).values(merged_into=keep_id))
        for table in (t.scan_hosts, t.observation_states, t.service_current, t.host_current, t.host_exposure):
            conn.execute(table.delete().where(table.c.host_id == gone_id))
        data: ChangeData = {"observations": obs, "hunts": hunts, "findings": findings, "scans": scans}
        change = _record(conn, "merge", keep_id, gone_id, None, data)
        _after_move(conn, scans, [keep_id], first)
    store.forget_identities()
    return {"change": change, "host_id": keep_id, "merged": gone_id, "observations": len(obs)}


def split(store: Store, host: str, addresses: list[str]) -> SplitOff:
    """Split the observations of ``host`` made at ``addresses`` off into a new host (identity matching
    took two servers for one)."""
    if not addresses:
        raise InputError("hosts split needs at least one --address of the observations to split off")
    host_id = q.resolve_host(store, host)
    h, o = t.hosts, t.observations
    wanted = [a.strip().lower() for a in addresses]
    with store._begin() as conn:
        rows = conn.execute(
            select(o.c.id, o.c.address, o.c.time).where(o.c.host_id == host_id).order_by(o.c.id)
        ).all()
        moving = [int(r.id) for r in rows if (r.address or "").lower() in wanted]
        staying = [r for r in rows if (r.address or "").lower() not in wanted]
        if not moving:
            known = sorted({r.address for r in rows if r.address})
            raise InputError(
                f"host #{host_id} has no observation at {', '.join(addresses)}; its addresses are "
                f"{', '.join(known) or 'none'}"
            )
        if not staying:
            raise InputError(
                f"every observation of host #{host_id} is at {', '.join(addresses)}: nothing to split"
            )
        ident = conn.execute(select(h).where(h.c.id == host_id)).one()
        first_time = min((r.time for r in rows if r.id in set(moving) and r.time is not None), default=None)
        new_id = int(
            conn.execute(
                insert(h)
                .values(address=wanted[0], first_seen=first_time or ident.first_seen)
                .returning(h.c.id)
            ).scalar_one()
        )
        previous: Identifiers = {
            "address": ident.address,
            "name": ident.name,
            "fe_server": ident.fe_server,
            "cert": ident.cert,
        }
        if (ident.address or "").lower() in wanted:
            conn.execute(update(h).where(h.c.id == host_id).values(address=staying[-1].address))
        scans, first = _scans_of(conn, moving)
        _move(conn, o, moving, new_id)
        data: ChangeData = {"observations": moving, "scans": scans, "addresses": wanted, "identity": previous}
        change = _record(conn, "split", host_id, new_id, None, data)
        _after_move(conn, scans, [host_id, new_id], first)
    store.forget_identities()
    return {"change": change, "host_id": host_id, "new_host_id": new_id, "observations": len(moving)}


def list_changes(store: Store, *, host: str | None = None) -> list[ChangeEntry]:
    """The recorded host changes, newest first (optionally of one host)."""
    c = t.host_changes
    query = select(c).order_by(c.c.id.desc())
    if host is not None:
        host_id = q.resolve_host(store, host)
        query = query.where((c.c.host_id == host_id) | (c.c.other_id == host_id))
    with store.connect() as conn:
        rows = conn.execute(query).all()
    out: list[ChangeEntry] = []
    for r in rows:
        data: ChangeData = json.loads(r.data)
        out.append(
            {
                "change": r.id,
                "kind": r.kind,
                "host_id": r.host_id,
                "other_id": r.other_id,
                "effective_at": q.iso(r.effective_at),
                "created_at": q.iso(r.created_at),
                "undone_at": q.iso(r.undone_at),
                "observations": len(data.get("observations", [])),
            }
        )
    return out


def undo(store: Store, change_id: int) -> Undone:
    """Reverse one recorded change (a merge is split back, a split merged back, a retirement lifted)."""
    c, h, o = t.host_changes, t.hosts, t.observations
    with store._begin() as conn:
        row = conn.execute(select(c).where(c.c.id == change_id)).first()
        if row is None:
            raise InputError(f"no host change {change_id}; `exwatch hosts changes` lists them")
        if row.undone_at is not None:
            raise InputError(f"host change {change_id} was already undone at {q.iso(row.undone_at)}")
        later = conn.execute(
            select(func.count()).where(
                c.c.id > change_id,
                c.c.undone_at.is_(None),
                (c.c.host_id.in_([row.host_id, row.other_id]))
                | (c.c.other_id.in_([row.host_id, row.other_id])),
            )
        ).scalar()
        if later and row.kind != "retire":
            raise InputError("undo the later changes of these hosts first (`exwatch hosts changes`)")
        data: ChangeData = json.loads(row.data)
        if row.kind == "retire":
            previous = to_db(data.get("previous"))
            conn.execute(update(h).where(h.c.id == row.host_id).values(retired_at=previous))
            earliest = min(x for x in (to_db(row.effective_at), previous) if x is not None)
            picture.rebuild(conn, since=earliest)
        elif row.kind == "merge":
            gone = int(row.other_id)
            obs, first = data["observations"], None
            _move(conn, o, obs, gone)
            _move(conn, t.hunts, data["hunts"], gone)
            _move(conn, t.findings, data["findings"], gone)
            conn.execute(update(h).where(h.c.id == gone).values(merged_into=None))
            scans, first = _scans_of(conn, obs)
            _after_move(conn, scans, [int(row.host_id), gone], first)
        elif row.kind == "split":
            new_id = int(row.other_id)
            obs = data["observations"]
            _move(conn, o, obs, int(row.host_id))
            conn.execute(update(h).where(h.c.id == new_id).values(merged_into=int(row.host_id)))
            for table in (
                t.scan_hosts,
                t.observation_states,
                t.service_current,
                t.host_current,
                t.host_exposure,
            ):
                conn.execute(table.delete().where(table.c.host_id == new_id))
            ident = data.get("identity")
            conn.execute(update(h).where(h.c.id == row.host_id).values(**(dict(ident) if ident else {})))
            scans, first = _scans_of(conn, obs)
            _after_move(conn, scans, [int(row.host_id)], first)
        else:  # pragma: no cover - only the kinds above are recorded
            raise InputError(f"host change {change_id} of kind {row.kind!r} cannot be undone")
        conn.execute(update(c).where(c.c.id == change_id).values(undone_at=now()))
    store.forget_identities()
    return {"change": change_id, "kind": row.kind, "host_id": row.host_id, "other_id": row.other_id}
