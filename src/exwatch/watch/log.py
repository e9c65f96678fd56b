"""The alert log in the store: a watch's detection state, its alerts, and their delivery per sink.

A round is recorded in one transaction: its alerts and the state after it.  Delivery is recorded per
(alert, sink) only once the sink accepted the alert or it was written to the sink's spool, so a watch
killed at any point sends on restart what it had not handed over, and never detects a change twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.exc import SQLAlchemyError

from exwatch.errors import InputError, StoreError
from exwatch.fleet import Store
from exwatch.fleet import schema as fleet_tables
from exwatch.fleet.timeutil import from_db, now, to_db
from exwatch.watch import tables as t
from exwatch.watch.model import KINDS, Alert, WatchState


class AlertItem(TypedDict, total=False):
    """One alert of :func:`list_alerts`: the JSON event (``Alert.to_dict``) with the time as stored,
    the alerted host's store id and the alert's row id (``seq``)."""

    kind: str
    time: str
    host: str
    address: str | None
    port: int | None
    wave: str | None
    state: str | None
    previous: str | None
    build: str | None
    fix: str | None
    scan: int
    watch: str
    detail: str | None
    id: str
    host_id: int | None
    seq: int


def has_tables(store: Store) -> bool:
    """Does the store hold the watch tables (migration 0006)?"""
    try:
        return bool(inspect(store.engine).has_table("watch_alerts"))
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the store: {exc}") from exc


class AlertLog:
    """The watch tables of one open store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        if not has_tables(store):  # open_store migrates: only a store newer than this code lacks them
            raise StoreError("the store has no watch tables (migration 0006)")

    def load_state(self, name: str) -> WatchState:
        """The detection state of the watch ``name`` (a fresh one if it never ran)."""
        with self.store.connect() as conn:
            text = conn.execute(select(t.watch_state.c.state).where(t.watch_state.c.name == name)).scalar()
        if text is None:
            return WatchState()
        state = json.loads(text)
        return WatchState.from_dict(state) if isinstance(state, dict) else WatchState()

    def _write_state(self, conn: Any, name: str, state: WatchState) -> None:
        body = json.dumps(state.to_dict(), sort_keys=True, default=str)
        done = conn.execute(
            update(t.watch_state).where(t.watch_state.c.name == name).values(state=body, updated_at=now())
        )
        if not done.rowcount:
            conn.execute(insert(t.watch_state).values(name=name, state=body, updated_at=now()))

    def save_state(self, name: str, state: WatchState) -> None:
        """Store the state alone (e.g. the sinks a watch registered)."""
        try:
            with self.store.engine.begin() as conn:
                self._write_state(conn, name, state)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write the watch state: {exc}") from exc

    def last_alert_id(self) -> int:
        """The newest alert id in the store (0 for none)."""
        with self.store.connect() as conn:
            return int(conn.execute(select(func.max(t.watch_alerts.c.id))).scalar() or 0)

    def commit_round(
        self,
        name: str,
        state: WatchState,
        alerts: Iterable[Alert],
        host_ids: Mapping[str, int] | None = None,
    ) -> list[int]:
        """Record one round: its alerts (each once) and the state after it, in one transaction."""
        ids: list[int] = []
        host_ids = host_ids or {}
        try:
            with self.store.engine.begin() as conn:
                for a in alerts:
                    exists = conn.execute(
                        select(t.watch_alerts.c.id).where(t.watch_alerts.c.alert_key == a.id)
                    ).scalar()
                    if exists is not None:
                        continue
                    new_id = conn.execute(
                        insert(t.watch_alerts)
                        .values(
                            watch=name,
                            alert_key=a.id,
                            kind=a.kind,
                            time=to_db(a.time),
                            host=a.host,
                            host_id=host_ids.get(a.host),
                            address=a.address,
                            port=a.port,
                            wave=a.wave,
                            state=a.state,
                            previous=a.previous,
                            build=a.build,
                            fix=a.fix,
                            scan_id=a.scan,
                            body=json.dumps(a.to_dict(), sort_keys=True, default=str),
                        )
                        .returning(t.watch_alerts.c.id)
                    ).scalar_one()
                    ids.append(int(new_id))
                self._write_state(conn, name, state)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record the watch round: {exc}") from exc
        return ids

    def pending(self, name: str, sink: str, since: int) -> list[tuple[int, Alert]]:
        """Alerts of watch ``name`` from id ``since`` on that were not handed to ``sink`` yet, oldest first."""
        a, d = t.watch_alerts, t.watch_deliveries
        delivered = select(d.c.alert_id).where(d.c.alert_id == a.c.id, d.c.sink == sink).exists()
        with self.store.connect() as conn:
            rows = conn.execute(
                select(a.c.id, a.c.body)
                .where(a.c.watch == name, a.c.id >= since, ~delivered)
                .order_by(a.c.id)
            ).all()
        return [(int(r.id), Alert.from_dict(json.loads(r.body))) for r in rows]

    def mark(self, sink: str, alert_ids: Iterable[int], how: str) -> None:
        """Record that ``sink`` took these alerts (``sent`` or ``spooled``)."""
        rows = [{"alert_id": i, "sink": sink, "how": how, "at": now()} for i in alert_ids]
        if not rows:
            return
        try:
            with self.store.engine.begin() as conn:
                conn.execute(insert(t.watch_deliveries), rows)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record the delivery of alerts: {exc}") from exc

    def deliveries(self, sink: str) -> dict[int, str]:
        """alert id -> how, for one sink (tests and diagnostics)."""
        d = t.watch_deliveries
        with self.store.connect() as conn:
            return {int(r.alert_id): str(r.how) for r in conn.execute(select(d).where(d.c.sink == sink))}


def list_alerts(
    store: Store,
    *,
    kind: str | None = None,
    wave: str | None = None,
    tag: tuple[str, str] | None = None,
    watch: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, object]:
    """Alerts newest first with the filters of /api/alerts, as its JSON body: ``{total, limit, offset,
    items}``, each item an :class:`AlertItem`."""
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown alert kind {kind!r} (known: {', '.join(KINDS)})")
    empty: dict[str, object] = {"total": 0, "limit": limit, "offset": offset, "items": []}
    if not has_tables(store):
        return empty
    a = t.watch_alerts
    conds = []
    if kind is not None:
        conds.append(a.c.kind == kind)
    if wave is not None:
        conds.append(a.c.wave == wave)
    if watch is not None:
        conds.append(a.c.watch == watch)
    if tag is not None:
        tg = fleet_tables.tags
        conds.append(
            select(tg.c.host_id)
            .where(tg.c.host_id == a.c.host_id, tg.c.key == tag[0], tg.c.value == tag[1])
            .exists()
        )
    with store.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(a).where(*conds)).scalar() or 0)
        rows = conn.execute(
            select(a).where(*conds).order_by(a.c.time.desc(), a.c.id.desc()).limit(limit).offset(offset)
        ).all()
    items: list[AlertItem] = []
    for r in rows:
        body: AlertItem = json.loads(r.body)
        if r.time is not None:  # the stored time, as the store gives it back (the body's otherwise)
            body["time"] = (from_db(r.time) or r.time).isoformat()
        body["host_id"] = r.host_id
        body["seq"] = int(r.id)
        items.append(body)
    return {"total": total, "limit": limit, "offset": offset, "items": items}
