"""The store in its own process, so that writing it never takes the scanning process's CPU or GIL.

:class:`ProcessSink` is a :class:`~exwatch.scan.sink.Sink` whose calls go over a pipe to a child process
that holds the real :class:`~exwatch.scan.sink.StoreSink`. ``add`` is one-way (the pipe's buffer and the
:class:`~exwatch.scan.run.StoreWriter`'s bounded queue are the back-pressure); the other calls wait for
the answer, so a damaged store is still refused before a request is sent, and ``finish`` comes after
every record is stored. The scanning process never imports SQLAlchemy: the child does it, on the other
core, while the scanner loads its own modules.

The child is forked (see :func:`_context`); from a threaded process, from a fork server that has the
store's modules loaded, so a second scan in the same process (``exwatch watch``, the tests) starts it
in milliseconds. It ignores SIGINT: a Ctrl-C stops the scan, and the child still stores what finished.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from exwatch.errors import StoreError
from exwatch.record import Observation
from exwatch.scan.sink import ScanParams, ScanTotals

_PRELOAD = ["exwatch.scan.sink", "exwatch.fleet", "exwatch.fleet.queries"]
_SERVER: Any = None


def _context() -> Any:
    """``fork`` from a process with one thread (the CLI: instant, and the child imports the store's
    modules on its own core); else a fork server with those modules loaded (forking a threaded process
    is unsafe); ``spawn`` where neither exists."""
    global _SERVER
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    if _SERVER is None:
        _SERVER = multiprocessing.get_context("forkserver")
        _SERVER.set_forkserver_preload(_PRELOAD)
    return _SERVER


def _serve(conn: Connection, parent_end: Connection, url: str | None) -> None:
    """The child: open the store, then answer calls until the pipe closes or ``close`` comes.

    The parent's end of the pipe is closed here (a forked child inherits it), so that the parent's death
    ends the child (EOF); stdout goes to /dev/null, so that the child never holds the scan's output open.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_end.close()
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 1)
    from exwatch.scan.sink import StoreSink

    try:
        sink = StoreSink(url)
    except BaseException as exc:
        conn.send(("err", _portable(exc)))
        return
    conn.send(("ok", None))
    failed: BaseException | None = None
    try:
        while True:
            try:
                op, args = conn.recv()
            except EOFError:
                return
            if op == "add":
                if failed is None:
                    try:
                        sink.add(*args)
                    except BaseException as exc:  # reported at the next call that waits
                        failed = exc
                continue
            if op == "close":
                conn.send(("ok", None))
                return
            if failed is not None:
                conn.send(("err", _portable(failed)))
                failed = None
                continue
            try:
                conn.send(("ok", getattr(sink, op)(*args)))
            except BaseException as exc:
                conn.send(("err", _portable(exc)))
    finally:
        sink.close()


def _portable(exc: BaseException) -> BaseException:
    """The exception if it survives pickling, else a StoreError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return StoreError(f"{type(exc).__name__}: {exc}")
    return exc


class ProcessSink:
    """A store URL's sink, run in a child process (see the module's text)."""

    def __init__(self, url: str | None) -> None:
        ctx = _context()
        self._conn, child = ctx.Pipe()
        self._lock = threading.Lock()
        self._proc = ctx.Process(
            target=_serve, args=(child, self._conn, url), name="exwatch-store", daemon=True
        )
        self._proc.start()
        child.close()
        self._opened = False

    def _answer(self) -> Any:
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise StoreError("the store's process ended unexpectedly") from None
        if status == "err":
            raise value
        return value

    def _ready(self) -> None:
        if not self._opened:
            self._answer()  # the store opened (or its error, e.g. a damaged store)
            self._opened = True

    def _call(self, op: str, *args: Any) -> Any:
        self._ready()
        with self._lock:
            self._conn.send((op, args))
            return self._answer()

    def start(self, params: ScanParams, started_at: datetime | None) -> int:
        return int(self._call("start", params, started_at))

    def add(self, scan_id: int, records: Sequence[Observation]) -> None:
        self._ready()
        with self._lock:
            self._conn.send(("add", (scan_id, records)))

    def finish(self, scan_id: int, finished_at: datetime | None) -> None:
        self._call("finish", scan_id, finished_at)

    def params(self, scan_id: int) -> ScanParams:
        return dict(self._call("params", scan_id))

    def done_keys(self, scan_id: int) -> set[str]:
        return set(self._call("done_keys", scan_id))

    def totals(self, scan_id: int) -> ScanTotals | None:
        value = self._call("totals", scan_id)
        return value if isinstance(value, ScanTotals) or value is None else None

    def close(self) -> None:
        """Stop the child (it stores what it was sent first) and wait for it."""
        try:
            if not self._opened and self._proc.is_alive():
                self._opened = True
                self._conn.recv()  # the answer to the opening, never asked for
            if self._proc.is_alive():
                with self._lock:
                    self._conn.send(("close", ()))
                self._conn.recv()
        except (OSError, EOFError):
            pass
        finally:
            self._conn.close()
            self._proc.join(30)
            if self._proc.is_alive():
                self._proc.kill()
