"""The store: snapshots of scans, hunts and tags in SQLite or PostgreSQL, written in batches."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import marshal
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, TypedDict, TypeVar, cast

from sqlalchemy import Connection, Table, and_, func, insert, literal, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from exwatch.config import default_db_url, mask_url
from exwatch.errors import InputError, StoreError
from exwatch.fleet import picture
from exwatch.fleet import schema as t
from exwatch.fleet.database import engine_for, migrate, store_missing
from exwatch.fleet.hostfold import FoldKey, HostFold, StoredService, WaveState, cu_of
from exwatch.fleet.identity import HostIndex, Identity, identity_of
from exwatch.fleet.metrics import PROTECTED
from exwatch.fleet.timeutil import now, to_db
from exwatch.record import Observation, ProbeEntry, WaveEntry

BATCH = 5000
# SQLite pages of WAL between checkpoints during a bulk write (64 MB of 4 KB pages; SQLite's default: 1000).
BULK_CHECKPOINT_PAGES = 16384
# Detail bodies remembered by their marshal bytes at most (then forgotten and met again).
DETAIL_CACHE = 200_000
OBS_COLUMNS = (
    "scan_id",
    "host_id",
    "key",
    "target",
    "address",
    "port",
    "status",
    "error",
    "build",
    "cu",
    "build_source",
    "cu_only",
    "time",
    "detail_id",
)
STATE_COLUMNS = ("scan_id", "wave", "host_id", "state", "cu")
SCAN_HOST_COLUMNS = ("scan_id", "host_id", "status", "rank", "port", "build", "conflict")
HOST_COLUMNS = ("address", "name", "fe_server", "cert", "first_seen")
# Tables whose PostgreSQL planner statistics finish_scan keeps fresh.
ANALYZED = (
    "hosts",
    "scan_hosts",
    "host_current",
    "service_current",
    "picture_summary",
    "observations",
    "observation_states",
    "host_exposure",
    "scan_summary",
)
# What an observation says beyond its columns, stored once per distinct body.
DETAIL_KEYS = ("waves", "probes", "conflicts", "notes")

# A time as the driver takes it: SQLite text in SQLAlchemy's layout, a naive UTC datetime on PostgreSQL.
DbTime = str | datetime | None
# One row of the observations table, in OBS_COLUMNS order.
ObsRow = tuple[
    int, int | None, str, str, str | None, int, str, str | None, str | None, str | None,
    str | None, bool | None, DbTime, int | None,
]  # fmt: skip
# A host folded in SQL from its one service so far: status, port, build, cu_only, time, detail_id.
SimpleService = tuple[str, int, str | None, bool | None, str | None, int | None]


class Detail(TypedDict, total=False):
    """What an observation says beyond its columns (DETAIL_KEYS), stored as one JSON body in details."""

    waves: dict[str, WaveEntry]
    probes: dict[str, ProbeEntry]
    conflicts: list[str]
    notes: list[str]


@dataclass(slots=True)
class _Batch:
    """One batch of observations sorted for writing (Store._sort_batch)."""

    simple_rows: list[ObsRow] = field(default_factory=list)  # one-service hosts: folded in SQL
    other_rows: list[ObsRow] = field(default_factory=list)  # the rest: folded here (touched)
    tags: dict[tuple[int, str], str] = field(default_factory=dict)  # changed tags
    touched: dict[int, HostFold] = field(default_factory=dict)  # folds of the batch's other hosts
    reload: list[int] = field(default_factory=list)  # hosts whose services an earlier run stored


# check_circular=False: a record is plain JSON data (no cycles); the text is the same, written sooner.
_ENCODER = json.JSONEncoder(
    sort_keys=True, default=str, separators=(",", ":"), ensure_ascii=False, check_circular=False
)
dumps = _ENCODER.encode
Row = TypeVar("Row")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a bulk write: building a batch allocates hundreds of
    thousands of acyclic tuples and dicts, and with the host index alive every collection they trigger
    walks it again (a fifth of ingest time).  Reference counting still frees everything at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _chunks(rows: Sequence[Row], size: int = BATCH) -> Iterable[Sequence[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _detail_of(rec: Observation) -> Detail:
    """The record's DETAIL_KEYS that say something (the order of DETAIL_KEYS: a marshal key's order)."""
    detail: Detail = {}
    waves = rec.get("waves")
    if waves:
        detail["waves"] = waves
    probes = rec.get("probes")
    if probes:
        detail["probes"] = probes
    conflicts = rec.get("conflicts")
    if conflicts:
        detail["conflicts"] = conflicts
    notes = rec.get("notes")
    if notes:
        detail["notes"] = notes
    return detail


class ScanFolds(dict[int, HostFold]):
    """The folds of one scan's hosts in this process; ``stored``: hosts an earlier run had written."""

    def __init__(self, stored: set[int]) -> None:
        super().__init__()
        self.stored = stored
        self.written: dict[int, FoldKey] = {}
        # hosts folded in SQL from their one service: a later service of the host is folded with
        # this one in Python, as the record first came
        self.simple: dict[int, SimpleService] = {}


class Store:
    """One open store; use as a context manager or call close()."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)
        self.dialect = self.engine.dialect.name
        migrate(self.engine)
        with self._begin() as conn:
            picture.ensure(conn)
        self._lock = threading.RLock()
        self._index: HostIndex | None = None
        self._index_max_id = 0
        self._tags: dict[tuple[int, str], str] = {}
        self._details: dict[str, int] = {}
        self._detail_bodies: dict[str, int] = {}
        self._detail_keys: dict[bytes, int] = {}
        self._detail_states = picture.DetailStates()
        self._scan_hosts: dict[int, ScanFolds] = {}
        self._scan_times: dict[int, datetime] = {}

    def __repr__(self) -> str:
        return f"Store({mask_url(self.url)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    def forget_identities(self) -> None:
        """Drop the cached host index (after a merge or a split changed who is who)."""
        with self._lock:
            self._index = None
            self._index_max_id = 0

    # -- helpers -----------------------------------------------------------------------------

    def connect(self) -> Connection:
        """A connection for reading (callers use it as a context manager)."""
        try:
            return self.engine.connect()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot connect to the store {mask_url(self.url)}: {exc}") from exc

    def _begin(self) -> contextlib.AbstractContextManager[Connection]:
        try:
            return self.engine.begin()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write to the store {mask_url(self.url)}: {exc}") from exc

    def _host_index(self, conn: Connection) -> HostIndex:
        """The identity of every host, loaded once and topped up with hosts others added since."""
        if self._index is None:
            self._index = HostIndex()
            self._index_max_id = 0
            self._tags = {}
        h = t.hosts
        rows = conn.execute(
            select(h.c.id, h.c.address, h.c.name, h.c.fe_server, h.c.cert, h.c.merged_into)
            .where(h.c.id > self._index_max_id)
            .order_by(h.c.id)
        ).all()
        for row in rows:
            ident = Identity(row.address, row.name, row.fe_server, row.cert)
            if row.merged_into is not None:
                self._index.alias(int(row.merged_into), ident)
            else:
                self._index.put(row.id, ident)
            self._index_max_id = max(self._index_max_id, row.id)
        if rows:
            new_ids = {row.id for row in rows}
            low = min(new_ids)
            for tag in conn.execute(
                select(t.tags.c.host_id, t.tags.c.key, t.tags.c.value).where(t.tags.c.host_id >= low)
            ):
                self._tags[(tag.host_id, tag.key)] = tag.value
        return self._index

    # -- scans ---------------------------------------------------------------------------------

    def start_scan(
        self,
        params: dict[str, Any],  # free-form: each command's options, kept as JSON (str() for the rest)
        *,
        started_at: datetime | None = None,
        kind: str = "scan",
    ) -> int:
        """Open a snapshot and return its id; its time is ``started_at`` (default: now)."""
        started = to_db(started_at) or now()
        with self._begin() as conn:
            scan_id = conn.execute(
                insert(t.scans)
                .values(kind=kind, params=json.dumps(params, default=str, sort_keys=True), started_at=started)
                .returning(t.scans.c.id)
            ).scalar_one()
        self._scan_times[int(scan_id)] = started
        return int(scan_id)

    def _scan_time(self, conn: Connection, scan_id: int) -> datetime:
        if scan_id not in self._scan_times:
            started = conn.execute(select(t.scans.c.started_at).where(t.scans.c.id == scan_id)).scalar()
            if started is None:
                raise InputError(f"no scan {scan_id} in the store")
            self._scan_times[scan_id] = to_db(started) or now()
        return self._scan_times[scan_id]

    def scan_params(self, scan_id: int) -> dict[str, Any]:  # free-form: what start_scan was given
        """The parameters a scan was started with."""
        with self.connect() as conn:
            text = conn.execute(select(t.scans.c.params).where(t.scans.c.id == scan_id)).scalar()
        if text is None:
            raise InputError(f"no scan {scan_id} in the store")
        return dict(json.loads(text))

    def scan_done_keys(self, scan_id: int) -> set[str]:
        """The keys of the observations a scan has stored (what a resumed scan skips)."""
        with self.connect() as conn:
            return set(
                conn.execute(
                    select(t.observations.c.key).where(t.observations.c.scan_id == scan_id)
                ).scalars()
            )

    def latest_scan_id(self) -> int | None:
        """The newest scan (finished or not), or None for an empty store."""
        with self.connect() as conn:
            value = conn.execute(select(func.max(t.scans.c.id)).where(t.scans.c.kind == "scan")).scalar()
        return None if value is None else int(value)

    def add_observations(self, scan_id: int, records: Sequence[Observation]) -> None:
        """Store what a scan saw, in batches; hosts are matched across scans (exwatch.fleet.identity).

        Every (host, port) service record is kept; a host's services in one scan are folded into one
        verdict (scan_hosts, observation_states) with the precedence of exwatch.scan.fold: an Exchange
        answer outranks refused, timed-out or non-Exchange ports, and Exchange answers that disagree on
        the build set ``conflict`` and give each wave its most exposed state.

        A host with one service in the scan so far (the common case) is folded in SQL from its stored
        row (its verdict is that row's own: exwatch.fleet.picture.simple_folds); hosts with several
        are folded here (exwatch.fleet.hostfold).  The batch's references (scan, hosts, detail bodies)
        are checked once for the whole batch (the bulk tables have no foreign keys; on SQLite the
        other tables' keys are off during the batch).
        """
        if not records:
            return
        try:
            self._add_observations(scan_id, records)
        except BaseException:
            # ids of detail bodies (and folds) written in the rolled-back transaction may be reused
            self._forget_details()
            self._scan_hosts.pop(scan_id, None)
            raise

    def _forget_details(self) -> None:
        self._details.clear()
        self._detail_bodies.clear()
        self._detail_keys.clear()
        self._detail_states = picture.DetailStates()

    def _add_observations(self, scan_id: int, records: Sequence[Observation]) -> None:
        with self._lock, _gc_paused(), self._write_connection() as conn, conn.begin():
            if self.dialect == "postgresql":
                # Bulk load: the commit need not wait for the WAL flush (a crash can lose this batch,
                # never corrupt the store; a resumed scan stores it again).
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            scan_time = self._scan_time(conn, scan_id)
            index = self._host_index(conn)
            folds = self._scan_folds(conn, scan_id)
            host_ids = self._resolve_hosts(conn, records, index, scan_time)
            detail_ids = self._detail_ids(conn, records)
            batch = self._sort_batch(conn, scan_id, records, host_ids, detail_ids, folds, scan_time)
            try:
                self._write_batch(conn, scan_id, folds, batch)
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot store observations: {exc}") from exc

    def _sort_batch(
        self,
        conn: Connection,
        scan_id: int,
        records: Sequence[Observation],
        host_ids: list[int | None],
        detail_ids: list[int | None],
        folds: ScanFolds,
        scan_time: datetime,
    ) -> _Batch:
        """The batch's observation rows and changed tags; each host's services either left to SQL
        (a host's one service so far: ``simple_rows``) or folded here (``touched``)."""
        batch = _Batch()
        simple_rows, other_rows, tag_rows, touched = (
            batch.simple_rows,
            batch.other_rows,
            batch.tags,
            batch.touched,
        )
        record_time = self._record_time
        default_time = self._db_time(scan_time)
        known_tags = self._tags
        per_host = Counter(host_ids)
        stored = folds.stored
        simple = folds.simple
        for rec, host_id, detail_id in zip(records, host_ids, detail_ids, strict=True):
            build = rec.get("build")
            cu = cu_of(build)
            when = rec.get("time")
            status = rec.get("status") or "exchange"
            row: ObsRow = (
                scan_id,
                host_id,
                str(rec.get("key") or rec.get("target") or rec.get("address") or ""),
                rec.get("target"),
                rec.get("address"),
                rec.get("port"),
                status,
                rec.get("error"),
                build,
                cu,
                rec.get("build_source"),
                rec.get("cu_only"),
                record_time(when) if when else default_time,
                detail_id,
            )
            if host_id is None:
                other_rows.append(row)
                continue
            tags = rec.get("tags")
            if tags:
                for key, value in tags.items():
                    if known_tags.get((host_id, key)) != value:
                        tag_rows[(host_id, str(key))] = str(value)
            if (
                per_host[host_id] == 1
                and host_id not in simple
                and host_id not in stored
                and host_id not in folds
                # an empty build text ranks as "no build" here and as a build in SQL: fold it here
                and (build is None or build != "" or status != "exchange")
            ):
                simple_rows.append(row)
                simple[host_id] = (status, rec.get("port"), build, rec.get("cu_only"), when, detail_id)
                continue
            other_rows.append(row)
            fold = touched.get(host_id)
            if fold is None:
                fold = touched[host_id] = self._open_fold(conn, folds, host_id, batch.reload)
            fold.add(rec, cu)
        return batch

    def _open_fold(self, conn: Connection, folds: ScanFolds, host_id: int, reload: list[int]) -> HostFold:
        """The fold a host's next service in this scan goes into: this process's, else a new one (with
        the host's service stored earlier in SQL folded again, or the host put on ``reload`` when an
        earlier run of the scan stored its services)."""
        fold = folds.get(host_id)
        if fold is None:
            fold = HostFold()
            earlier = folds.simple.pop(host_id, None)
            if earlier is not None:
                # its one-service fold is stored: fold that service again, then this one
                folds.stored.add(host_id)
                self._add_earlier(conn, fold, earlier)
            elif host_id in folds.stored:
                reload.append(host_id)
        return fold

    def _write_batch(self, conn: Connection, scan_id: int, folds: ScanFolds, batch: _Batch) -> None:
        """Write a sorted batch: its observations, the folds of its hosts (in SQL for one-service
        hosts), its tags; then check its references once."""
        if batch.reload:
            self._reload_folds(conn, scan_id, batch.reload, batch.touched)
        simple_rows = batch.simple_rows
        ids = self._insert_with_ids(conn, t.observations, OBS_COLUMNS, simple_rows + batch.other_rows)
        if simple_rows:
            picture.simple_folds(conn, scan_id, ids[0], ids[len(simple_rows) - 1])
        self._write_folds(conn, scan_id, folds, batch.touched)
        if batch.tags:
            self._write_tags(conn, batch.tags)
        self._check_references(conn, scan_id, ids[0], ids[-1])

    def _add_earlier(self, conn: Connection, fold: HostFold, earlier: SimpleService) -> None:
        """Fold a service stored earlier in this scan as its record came (its states from its detail)."""
        status, port, build, cu_only, when, detail_id = earlier
        waves: dict[str, WaveState] = {}
        if detail_id is not None:
            self._detail_states.load(conn, {int(detail_id)})
            waves = self._detail_states.waves(detail_id)
        rec: StoredService = {
            "status": status,
            "port": port,
            "build": build,
            "cu_only": cu_only,
            "time": when,
            "waves": waves,
        }
        fold.add(rec, cu_of(build))

    @contextlib.contextmanager
    def _write_connection(self) -> Iterator[Connection]:
        """A connection for one bulk write; on SQLite with foreign keys off for its transaction (the
        batch is checked once instead: _check_references), on again before it goes back to the pool."""
        try:
            conn = self.engine.connect()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write to the store {mask_url(self.url)}: {exc}") from exc
        try:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                # the WAL is copied back into the file every 64 MB instead of every 4 MB: one
                # checkpoint (and fsync) per dozen batches, hot index pages written once for all
                conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={BULK_CHECKPOINT_PAGES}")
                conn.commit()  # a PRAGMA opens no SQLite transaction; end SQLAlchemy's own
            yield conn
        finally:
            try:
                if self.dialect == "sqlite":
                    conn.rollback()  # nothing is open after a commit; after an error, end it first
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")
            finally:
                conn.close()

    def _check_references(self, conn: Connection, scan_id: int, first: int, last: int) -> None:
        """What the foreign keys would check row by row, once for the batch of observations
        ``first``..``last``: its scan, hosts and detail bodies exist (another process may have
        deleted a scan or a host since this store cached it)."""
        if conn.execute(select(t.scans.c.id).where(t.scans.c.id == scan_id)).first() is None:
            raise StoreError(f"scan {scan_id} is no longer in the store; nothing of this batch was written")
        o, h, d = t.observations, t.hosts, t.details
        in_batch = (o.c.id >= first, o.c.id <= last)
        dangling = conn.execute(
            select(func.count())
            .select_from(o)
            .where(
                *in_batch,
                or_(
                    and_(o.c.host_id.is_not(None), ~select(h.c.id).where(h.c.id == o.c.host_id).exists()),
                    and_(
                        o.c.detail_id.is_not(None),
                        ~select(d.c.id).where(d.c.id == o.c.detail_id).exists(),
                    ),
                ),
            )
        ).scalar()
        if dangling:
            self.forget_identities()
            raise StoreError(
                f"{dangling} observations name a host or detail no longer in the store (changed by "
                "another process); nothing of this batch was written: retry"
            )

    def _scan_folds(self, conn: Connection, scan_id: int) -> ScanFolds:
        """This process's folds of the scan's hosts; hosts stored by an earlier run are reloaded on demand."""
        folds = self._scan_hosts.get(scan_id)
        if folds is None:
            folds = ScanFolds(
                set(
                    conn.execute(
                        select(t.scan_hosts.c.host_id).where(t.scan_hosts.c.scan_id == scan_id)
                    ).scalars()
                )
            )
            self._scan_hosts[scan_id] = folds
        return folds

    def _reload_folds(
        self, conn: Connection, scan_id: int, host_ids: list[int], touched: dict[int, HostFold]
    ) -> None:
        """Fold again the services an earlier run of this scan stored for these hosts (a resumed scan)."""
        o, d = t.observations, t.details
        for chunk in _chunks(host_ids, 900):
            rows = conn.execute(
                select(o.c.host_id, o.c.status, o.c.port, o.c.build, o.c.cu_only, o.c.time, d.c.body)
                .outerjoin(d, d.c.id == o.c.detail_id)
                .where(o.c.scan_id == scan_id, o.c.host_id.in_(list(chunk)))
            ).all()
            for row in rows:
                body: Detail = json.loads(row.body) if row.body else {}
                rec: StoredService = {
                    "status": row.status,
                    "port": row.port,
                    "build": row.build,
                    "cu_only": row.cu_only,
                    "time": str(row.time) if row.time is not None else None,
                    "waves": body.get("waves") or {},
                }
                touched[row.host_id].add(rec, cu_of(row.build))

    def _write_folds(
        self, conn: Connection, scan_id: int, folds: ScanFolds, touched: dict[int, HostFold]
    ) -> None:
        """Write the (scan, host) folds that changed: scan_hosts and the per-wave observation_states."""
        new_hosts: list[tuple[int, int, str, int, int | None, str | None, bool]] = []
        new_states: list[tuple[int, str, int, str, str | None]] = []
        changed: list[int] = []
        for host_id, fold in touched.items():
            written = folds.written.get(host_id)
            now_key = fold.key()
            if written == now_key:
                continue
            if written is not None or host_id in folds.stored:
                changed.append(host_id)
            folds.written[host_id] = now_key
            folds[host_id] = fold
            new_hosts.append((scan_id, host_id, fold.status, fold.rank, fold.port, fold.build, fold.conflict))
            for wave, state in fold.states().items():
                new_states.append((scan_id, wave, host_id, state, fold.cu))
        for chunk in _chunks(changed, 900):
            ids = list(chunk)
            conn.execute(
                t.scan_hosts.delete().where(
                    t.scan_hosts.c.scan_id == scan_id, t.scan_hosts.c.host_id.in_(ids)
                )
            )
            conn.execute(
                t.observation_states.delete().where(
                    t.observation_states.c.scan_id == scan_id, t.observation_states.c.host_id.in_(ids)
                )
            )
        self._bulk(conn, "scan_hosts", SCAN_HOST_COLUMNS, new_hosts)
        self._bulk(conn, "observation_states", STATE_COLUMNS, new_states)

    def _record_time(self, value: str | datetime) -> DbTime:
        """A record's time for the driver; the common ``...T..+00:00`` text is converted without parsing."""
        if (
            self.dialect == "sqlite"
            and isinstance(value, str)
            and len(value) in (25, 32)
            and value[10] == "T"
            and value.endswith("+00:00")
        ):
            return f"{value[:10]} {value[11:19]}.{value[20:26] if len(value) == 32 else '000000'}"
        return self._db_time(to_db(value))

    def _first_seen(self, value: str | None, scan_time: datetime) -> DbTime:
        """A new host's first_seen for the driver: its record's time, else the scan's."""
        if value is None or value == "":
            return self._db_time(scan_time)
        return self._record_time(value)

    def _db_time(self, when: datetime | None) -> DbTime:
        """A naive UTC time as the driver takes it (SQLite: SQLAlchemy's own text layout, so that
        times written here and through Core compare as text)."""
        if when is None or self.dialect == "postgresql":
            return when
        return when.strftime("%Y-%m-%d %H:%M:%S.%f")

    def _bulk(
        self, conn: Connection, table: str, columns: tuple[str, ...], rows: Sequence[tuple[object, ...]]
    ) -> None:
        """Insert many rows fast: COPY on PostgreSQL, one executemany per batch on SQLite."""
        if not rows:
            return
        cols = ", ".join(columns)
        if self.dialect == "postgresql":
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"
        for chunk in _chunks(rows):
            conn.exec_driver_sql(sql, list(chunk))

    def _resolve_hosts(
        self, conn: Connection, records: Sequence[Observation], index: HostIndex, scan_time: datetime
    ) -> list[int | None]:
        """Host ids for the records: known hosts matched, new Exchange hosts inserted."""
        result: list[int | None] = []
        fresh = HostIndex()
        pending_idents: list[Identity] = []
        pending_positions: list[list[int]] = []
        changed: dict[int, Identity] = {}
        for position, rec in enumerate(records):
            ident = identity_of(rec)
            host_id = index.match(ident)
            if host_id is None:
                # A new host only for an Exchange server: a dead address is not a server.
                if (rec.get("status") or "exchange") != "exchange":
                    result.append(None)
                    continue
                # Two records of one new server in the same batch become one host.
                slot = fresh.match(ident)
                if slot is None:
                    slot = len(pending_idents)
                    pending_idents.append(ident)
                    pending_positions.append([])
                    fresh.put(slot, ident)
                pending_positions[slot].append(position)
                result.append(None)
                continue
            result.append(host_id)
            if ident != index.hosts[host_id] and (rec.get("status") or "exchange") == "exchange":
                merged = index.hosts[host_id].merged(ident)
                if merged != index.hosts[host_id]:
                    changed[host_id] = merged
                    index.put(host_id, merged)
        # A refused or non-Exchange port of a server first seen in this batch belongs to that server.
        for position, rec in enumerate(records):
            if result[position] is None and (rec.get("status") or "exchange") != "exchange":
                slot = fresh.match(identity_of(rec))
                if slot is not None:
                    pending_positions[slot].append(position)
        if pending_idents:
            rows = [
                (
                    i.address,
                    i.name,
                    i.fe_server,
                    i.cert,
                    self._first_seen(records[positions[0]].get("time"), scan_time),
                )
                for i, positions in zip(pending_idents, pending_positions, strict=True)
            ]
            new_ids = self._insert_with_ids(conn, t.hosts, HOST_COLUMNS, rows)
            for ident, positions, host_id in zip(pending_idents, pending_positions, new_ids, strict=True):
                index.put(host_id, ident)
                self._index_max_id = max(self._index_max_id, host_id)
                for position in positions:
                    result[position] = host_id
        for host_id, ident in changed.items():
            conn.execute(
                update(t.hosts)
                .where(t.hosts.c.id == host_id)
                .values(address=ident.address, name=ident.name, fe_server=ident.fe_server, cert=ident.cert)
            )
        return result

    def _insert_with_ids(
        self, conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[object, ...]]
    ) -> list[int]:
        """Insert rows (without their id) and return the new ids in order.

        PostgreSQL: ids drawn from the table's sequence first, then COPY.  SQLite: inserting the first row
        takes the database's write lock until commit; no other writer
        can take ids meanwhile, so the next ones follow on.
        """
        if not rows:
            return []
        name = table.name
        if self.dialect == "postgresql":
            ids = [
                int(i)
                for i in conn.execute(
                    text(
                        f"SELECT nextval(pg_get_serial_sequence('{name}', 'id')) FROM generate_series(1, :n)"
                    ),
                    {"n": len(rows)},
                ).scalars()
            ]
            self._bulk(conn, name, ("id", *columns), [(i, *r) for i, r in zip(ids, rows, strict=True)])
            return ids
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})", tuple(rows[0]))
        first = conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
        top = conn.execute(select(func.max(table.c.id))).scalar_one()
        if top != first:  # pragma: no cover - only if another writer slipped in before our lock
            raise StoreError(f"the {name} table changed while adding rows; retry")
        ids = [int(first) + i for i in range(len(rows))]
        self._bulk(conn, name, ("id", *columns), [(i, *r) for i, r in zip(ids[1:], rows[1:], strict=True)])
        return ids

    def _detail_ids(self, conn: Connection, records: Sequence[Observation]) -> list[int | None]:
        """Ids of the deduplicated detail bodies (per-wave reasons and fixes, probe outcomes, notes).

        Bodies seen before are looked up by their text (no digest computed again)."""
        by_body = self._detail_bodies
        result: list[int | None] = []
        missing: dict[str, str] = {}  # digest -> body, for bodies this store has not met yet
        pending: list[tuple[int, str]] = []  # (position, body) waiting for an id
        by_key = self._detail_keys
        if len(by_key) > DETAIL_CACHE:
            by_key.clear()
        keyed: list[tuple[int, bytes]] = []  # (position, marshal key) of bodies met in this batch
        for rec in records:
            detail = _detail_of(rec)
            if not detail:
                result.append(None)
                continue
            # A body seen before is known by its marshal bytes (a third of the cost of its JSON text;
            # equal bytes mean equal content, equal content in another key order only misses).
            try:
                mkey: bytes = marshal.dumps(cast(dict[str, object], detail))
            except ValueError:  # a value marshal does not know (a date, ...): by its JSON text
                pass
            else:
                detail_id = by_key.get(mkey)
                if detail_id is not None:
                    result.append(detail_id)
                    continue
                keyed.append((len(result), mkey))
            body = dumps(detail)
            detail_id = by_body.get(body)
            if detail_id is None:
                digest = hashlib.sha1(body.encode()).hexdigest()
                detail_id = self._details.get(digest)
                if detail_id is None:
                    missing[digest] = body
                    pending.append((len(result), body))
                else:
                    by_body[body] = detail_id
            result.append(detail_id)
        if not pending:
            return self._keep_keys(result, keyed)
        known = conn.execute(
            select(t.details.c.digest, t.details.c.id).where(t.details.c.digest.in_(list(missing)))
        ).all()
        for digest, detail_id in known:
            self._details[digest] = detail_id
            by_body[missing.pop(digest)] = detail_id
        if missing:
            items = list(missing.items())
            ids = self._insert_with_ids(conn, t.details, ("digest", "body"), items)
            for (digest, body), detail_id in zip(items, ids, strict=True):
                self._details[digest] = detail_id
                by_body[body] = detail_id
            picture.add_detail_states(conn, [(i, body) for (_, body), i in zip(items, ids, strict=True)])
        for position, body in pending:
            result[position] = by_body[body]
        return self._keep_keys(result, keyed)

    def _keep_keys(self, result: list[int | None], keyed: list[tuple[int, bytes]]) -> list[int | None]:
        for position, mkey in keyed:
            detail_id = result[position]
            if detail_id is not None:
                self._detail_keys[mkey] = detail_id
        return result

    def _write_tags(self, conn: Connection, rows: dict[tuple[int, str], str]) -> None:
        """Upsert tags: one plain executemany on SQLite; on PostgreSQL, many rows are copied into a
        temporary table first and upserted with one statement (an executemany of upserts is a round
        trip per row)."""
        upsert = " ON CONFLICT (host_id, key) DO UPDATE SET value = excluded.value"
        items = [(h, k, v) for (h, k), v in rows.items()]
        if self.dialect == "postgresql" and len(items) > 100:
            conn.exec_driver_sql(
                "CREATE TEMPORARY TABLE IF NOT EXISTS tags_in (host_id integer, key text, value text) "
                "ON COMMIT DELETE ROWS"
            )
            self._bulk(conn, "tags_in", ("host_id", "key", "value"), items)
            conn.exec_driver_sql(
                "INSERT INTO tags (host_id, key, value) SELECT host_id, key, value FROM tags_in" + upsert
            )
            conn.exec_driver_sql("TRUNCATE tags_in")
        else:
            mark = "%s" if self.dialect == "postgresql" else "?"
            sql = f"INSERT INTO tags (host_id, key, value) VALUES ({mark}, {mark}, {mark})" + upsert
            for chunk in _chunks(items):
                conn.exec_driver_sql(sql, list(chunk))
        self._tags.update(rows)

    def finish_scan(self, scan_id: int, *, finished_at: datetime | None = None) -> None:
        """Close a snapshot: record its end and fill its summary counts (one GROUP BY each), then move
        the exposure windows and the fleet picture on.  Every row it writes is derived from rows of
        the store (foreign keys off on SQLite, as for add_observations; it deletes no parent row)."""
        s = t.observation_states
        with self._lock, self._write_connection() as conn, conn.begin():
            self._scan_time(conn, scan_id)
            conn.execute(
                update(t.scans).where(t.scans.c.id == scan_id).values(finished_at=to_db(finished_at) or now())
            )
            conn.execute(t.scan_summary.delete().where(t.scan_summary.c.scan_id == scan_id))
            conn.execute(
                insert(t.scan_summary).from_select(
                    ["scan_id", "wave", "state", "n"],
                    select(s.c.scan_id, s.c.wave, s.c.state, func.count())
                    .where(s.c.scan_id == scan_id)
                    .group_by(s.c.scan_id, s.c.wave, s.c.state),
                )
            )
            # Host-level counts under the wave "*": hosts per folded status; targets that match no
            # host count once per address.
            picture.attach_unmatched(conn, scan_id)
            counts = picture.host_status_counts(conn, scan_id)
            if counts:
                conn.execute(
                    insert(t.scan_summary),
                    [{"scan_id": scan_id, "wave": "*", "state": st, "n": n} for st, n in counts],
                )
            self._update_exposure(conn, scan_id)
            picture.after_finish(conn, scan_id)
        self._scan_hosts.pop(scan_id, None)
        self._refresh_statistics()

    def _refresh_statistics(self) -> None:
        """Fresh planner statistics after a snapshot: without them PostgreSQL plans the report's joins
        over tables it believes empty (nested loops over millions of rows)."""
        try:
            if self.dialect == "postgresql":
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    # only tables whose statistics are missing or that changed by a fifth since
                    # (a full ANALYZE after every snapshot costs seconds at 400,000 hosts)
                    stale = (
                        conn.exec_driver_sql(
                            "SELECT c.relname FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
                            "WHERE s.schemaname = current_schema() AND c.relname = ANY(%(names)s) AND (s.last_analyze IS NULL AND "
                            "s.last_autoanalyze IS NULL OR s.n_mod_since_analyze > 0.2 * GREATEST(c.reltuples, 1000))",
                            {"names": list(ANALYZED)},
                        )
                        .scalars()
                        .all()
                    )
                    for table in stale:
                        conn.exec_driver_sql(f"ANALYZE {table}")
            else:
                with self.engine.connect() as conn:
                    # sampled statistics (about 1,000 rows per index): a full ANALYZE of a table of
                    # millions of states would stall the scan for seconds
                    conn.exec_driver_sql("PRAGMA analysis_limit=1000")
                    conn.exec_driver_sql("PRAGMA optimize")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot refresh the store's statistics: {exc}") from exc

    def _update_exposure(self, conn: Connection, scan_id: int) -> None:
        """Move the exposure windows on with this snapshot, or rebuild them if it is out of time order."""
        sc, s, e = t.scans, t.observation_states, t.host_exposure
        when = self._scan_time(conn, scan_id)
        later = conn.execute(
            select(func.count())
            .select_from(sc)
            .where(sc.c.finished_at.is_not(None), sc.c.started_at > when, sc.c.id != scan_id)
        ).scalar()
        if later:
            rebuild_exposure(conn)
            return
        protected_here = (
            select(s.c.host_id)
            .where(
                s.c.scan_id == scan_id,
                s.c.wave == e.c.wave,
                s.c.host_id == e.c.host_id,
                s.c.state.in_(PROTECTED),
            )
            .exists()
        )
        conn.execute(
            update(e).where(e.c.first_protected.is_(None), protected_here).values(first_protected=when)
        )
        known = select(e.c.host_id).where(e.c.host_id == s.c.host_id, e.c.wave == s.c.wave).exists()
        conn.execute(
            insert(e).from_select(
                ["host_id", "wave", "first_vulnerable"],
                select(s.c.host_id, s.c.wave, literal(when, t.scans.c.started_at.type)).where(
                    s.c.scan_id == scan_id, s.c.state == "vulnerable", ~known
                ),
            )
        )

    # -- hunts and tags ------------------------------------------------------------------------

    def find_hosts(self, text: str) -> list[int]:
        """Hosts a user's word names: an id (``#12``), an address, a DNS name or an X-FEServer (indexed)."""
        word = text.strip().lower()
        h = t.hosts
        with self.connect() as conn:
            if word.lstrip("#").isdigit():
                found = conn.execute(select(h.c.id).where(h.c.id == int(word.lstrip("#")))).scalars().all()
                if found:
                    return [int(i) for i in found]
            ids: set[int] = set()
            for column in (h.c.address, h.c.name, h.c.fe_server):
                # a host merged into another one is that other host now
                ids.update(
                    conn.execute(
                        select(func.coalesce(h.c.merged_into, h.c.id)).where(column == word)
                    ).scalars()
                )
        return sorted(int(i) for i in ids)

    def add_hunt(
        self,
        host: str,
        *,
        verdict: str,
        coverage: Mapping[str, object],
        findings: Sequence[Mapping[str, object]],
        started_at: datetime | None = None,
        errors: Sequence[Mapping[str, object]] | None = None,
    ) -> int:
        """Store one hunt of one host with its findings; the host is matched by name, address or X-FEServer.

        ``coverage``, each finding and each error are JSON documents (``to_dict`` of exwatch.hunt.model's
        Coverage, Finding and HuntError): a finding's fields fill the columns, its evidence is kept as
        JSON."""
        matches = self.find_hosts(host)
        host_id = matches[0] if len(matches) == 1 else None
        with self._begin() as conn:
            hunt_id = conn.execute(
                insert(t.hunts)
                .values(
                    host=host,
                    host_id=host_id,
                    verdict=verdict,
                    coverage=json.dumps(coverage, default=str, sort_keys=True),
                    errors=json.dumps(errors or [], default=str),
                    started_at=to_db(started_at) or now(),
                )
                .returning(t.hunts.c.id)
            ).scalar_one()
            rows = [
                {
                    "hunt_id": hunt_id,
                    "host_id": host_id,
                    "host": f.get("host") or host,
                    "rule": str(f.get("rule") or "unknown"),
                    "wave": f.get("wave"),
                    "cve": f.get("cve"),
                    "confidence": f.get("confidence"),
                    "time": to_db(f.get("time")),
                    "title": f.get("title"),
                    "description": f.get("description"),
                    "evidence": json.dumps(f.get("evidence") or {}, default=str, sort_keys=True),
                }
                for f in findings
            ]
            for chunk in _chunks(rows):
                conn.execute(insert(t.findings), list(chunk))
        return int(hunt_id)

    def tag_host(self, host: str, key: str, value: str) -> int:
        """Set a tag (organisation, country, network, ...) on the one host ``host`` names; returns its id."""
        if not key.strip():
            raise InputError("a tag needs a key: KEY=VALUE")
        matches = self.find_hosts(host)
        if not matches:
            raise InputError(f"no host in the store matches {host!r}")
        if len(matches) > 1:
            raise InputError(f"{host!r} matches {len(matches)} hosts; use the host id (#N)")
        with self._lock, self._begin() as conn:
            self._write_tags(conn, {(matches[0], key.strip()): value})
        return matches[0]


def refold(conn: Connection, scan_ids: Iterable[int], host_ids: Iterable[int]) -> None:
    """Fold again, from their stored service observations, these hosts in these scans (after a merge
    or a split moved observations between hosts): scan_hosts and observation_states are rewritten."""
    o, d, sh, s = t.observations, t.details, t.scan_hosts, t.observation_states
    scans, hosts = sorted(set(scan_ids)), sorted(set(host_ids))
    if not scans or not hosts:
        return
    conn.execute(sh.delete().where(sh.c.scan_id.in_(scans), sh.c.host_id.in_(hosts)))
    conn.execute(s.delete().where(s.c.scan_id.in_(scans), s.c.host_id.in_(hosts)))
    folds: dict[tuple[int, int], HostFold] = {}
    bodies: dict[int, Detail] = {}
    rows = conn.execute(
        select(
            o.c.scan_id, o.c.host_id, o.c.status, o.c.port, o.c.build, o.c.cu_only, o.c.time, o.c.detail_id
        )
        .where(o.c.scan_id.in_(scans), o.c.host_id.in_(hosts))
        .order_by(o.c.id)
    ).all()
    wanted = {r.detail_id for r in rows if r.detail_id is not None}
    for chunk in _chunks(sorted(wanted), 900):
        for detail_id, raw in conn.execute(select(d.c.id, d.c.body).where(d.c.id.in_(list(chunk)))):
            bodies[int(detail_id)] = json.loads(raw)
    for row in rows:
        body: Detail = bodies.get(row.detail_id, {}) if row.detail_id is not None else {}
        rec: StoredService = {
            "status": row.status,
            "port": row.port,
            "build": row.build,
            "cu_only": row.cu_only,
            "time": str(row.time) if row.time is not None else None,
            "waves": body.get("waves") or {},
        }
        folds.setdefault((int(row.scan_id), int(row.host_id)), HostFold()).add(rec, cu_of(row.build))
    host_rows = []
    state_rows = []
    for (scan_id, host_id), fold in folds.items():
        host_rows.append(
            {
                "scan_id": scan_id,
                "host_id": host_id,
                "status": fold.status,
                "rank": fold.rank,
                "port": fold.port,
                "build": fold.build,
                "conflict": fold.conflict,
            }
        )
        for wave, state in fold.states().items():
            state_rows.append(
                {"scan_id": scan_id, "wave": wave, "host_id": host_id, "state": state, "cu": fold.cu}
            )
    if host_rows:
        conn.execute(insert(sh), host_rows)
    if state_rows:
        conn.execute(insert(s), state_rows)


def rebuild_exposure(conn: Connection) -> None:
    """Recompute every exposure window from all finished snapshots (two GROUP BY passes)."""
    sc, s, e = t.scans, t.observation_states, t.host_exposure
    conn.execute(e.delete())
    finished = sc.c.finished_at.is_not(None)
    conn.execute(
        insert(e).from_select(
            ["host_id", "wave", "first_vulnerable"],
            select(s.c.host_id, s.c.wave, func.min(sc.c.started_at))
            .join(sc, sc.c.id == s.c.scan_id)
            .where(finished, s.c.state == "vulnerable")
            .group_by(s.c.host_id, s.c.wave),
        )
    )
    first_protected = (
        select(func.min(sc.c.started_at))
        .select_from(s.join(sc, sc.c.id == s.c.scan_id))
        .where(
            finished,
            s.c.host_id == e.c.host_id,
            s.c.wave == e.c.wave,
            s.c.state.in_(PROTECTED),
            sc.c.started_at > e.c.first_vulnerable,
        )
        .scalar_subquery()
    )
    conn.execute(update(e).values(first_protected=first_protected))


def require_store(url: str | None = None) -> str:
    """The URL of an existing store, or an InputError (exit 2) saying there is none; nothing is created.

    For the commands that only read (report, hosts, scans, serve): ``None`` means EXWATCH_DB or the
    SQLite file in the data directory, looked up without creating that directory.
    """
    url = url or default_db_url(create=False)
    where = store_missing(url)
    if where is not None:
        raise InputError(f"no store at {where}; run exwatch scan first")
    return url


def open_existing_store(url: str | None = None) -> Store:
    """Open a store that must already exist (require_store), for commands that only read."""
    return Store(require_store(url))


def open_store(url: str | None = None, *, profile: str = "write") -> Store:
    """Open (and migrate) the store at ``url``; None means EXWATCH_DB or the SQLite file in the data dir.

    ``profile`` (exwatch.fleet.profiles): ``write`` creates a missing store, ``existing`` and ``read``
    need one (``read`` connections only read), ``scan`` is the scan's writer."""
    from exwatch.fleet.profiles import apply_profile, must_exist

    store = Store(require_store(url)) if must_exist(profile) else Store(url or default_db_url())
    try:
        apply_profile(store.engine, profile)
    except BaseException:
        store.close()
        raise
    return store
