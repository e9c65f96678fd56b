"""The scan engine: the asyncio pipeline that scans each target within its limits and budget.

The parts it drives live next to it: the network behind :class:`~exwatch.scan.transport.Transport`
(sockets in :mod:`exwatch.scan._http`), rate limits on the loop's clock (:mod:`exwatch.scan.limits`),
the stored scan and its counts (:class:`~exwatch.scan.run.ScanRun`, :mod:`exwatch.scan.summary`), what to
scan (:mod:`exwatch.scan.plan`). The policy here: the scope checked at connection time, one connection
per target, retries of transient failures only, a wall-clock budget per target, the probes' rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import socket
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exwatch.record import HostRecord, Observation
from exwatch.scan._http import Connection, FetchError, Limits, classify, client_tls_context
from exwatch.scan.fingerprint import Fingerprinter, cert_names
from exwatch.scan.limits import Gate, Gates, raise_open_files_limit, retry_delay
from exwatch.scan.observation import builds_for_cu, host_record, known_build
from exwatch.scan.options import DEFAULT_PORTS, ScanOptions
from exwatch.scan.plan import SeenTargets, build_target_set, exclusions_from, no_target_message, target_stream
from exwatch.scan.probes import (
    PROBE_WAVES,
    PROXYSHELL_MAPI_REQUEST,
    ProbeOutcome,
    ProbeRequest,
    ProbeResponse,
    judge_probe,
    probe_requests,
)
from exwatch.scan.run import ScanHooks, ScanRun
from exwatch.scan.summary import Progress, ScanInterrupted, ScanSummary, finish_host
from exwatch.scan.targets import Target, TargetSet, connect_allowed
from exwatch.scan.transport import Channel, Endpoint, HttpTransport, Transport

__all__ = [
    "DEFAULT_PORTS",
    "Connection",
    "FetchError",
    "Limits",
    "Progress",
    "ScanHooks",
    "ScanInterrupted",
    "ScanOptions",
    "ScanRun",
    "ScanSummary",
    "Scanner",
    "SeenTargets",
    "build_target_set",
    "classify",
    "client_tls_context",
    "finish_host",
    "no_target_message",
    "probe_host",
    "run_scan",
    "scan_async",
    "target_stream",
]

TRANSIENT = ("timeout", "reset", "eof")  # error classes worth a retry


async def probe_host(
    address: str,
    port: int,
    scheme: str,
    wave: str,
    *,
    timeout: float = 5.0,
    server_name: str | None = None,
    tls: Any = None,
) -> ProbeOutcome:
    """Run one wave's behavioural probe against one host: the control request, then the attack-shaped one.

    Never raises for network trouble: a host that cannot be reached gives an ``inconclusive`` outcome
    whose reason names the error class. The attack request is never retried (an abort is a result).
    """
    attack_req, control_req = probe_requests(wave)
    conn = Connection(
        address,
        port,
        scheme,
        host_header=server_name or address,
        server_name=server_name,
        tls=tls,
        timeout=timeout,
    )
    try:
        try:
            control = await conn.fetch(control_req)
            if control.status is None and control.error in TRANSIENT:
                control = await conn.fetch(control_req, reuse=False)  # one retry: transient only
            attack = await conn.fetch(attack_req)
        except FetchError as exc:
            return ProbeOutcome("inconclusive", f"host unreachable ({exc.kind}: {exc.detail})")
        return judge_probe(wave, attack, control)
    finally:
        conn.close()


@dataclass
class _HostState:
    fp: Fingerprinter | None = None
    address: str | None = None
    probes: dict[str, ProbeOutcome] = field(default_factory=dict)
    error: str | None = None
    conn: Channel | None = None
    gate: Gate | None = None


class Scanner:
    """The asyncio engine of one scan: a producer, a bounded queue and workers; records go to ``run``."""

    def __init__(self, run: ScanRun, transport: Transport | None = None) -> None:
        self.run_ = run
        self.options = options = run.options
        self.summary = run.summary
        self.as_of = options.as_of_date()
        self.scan_time = run.scan_time
        self.tags = run.tags
        self.seen = SeenTargets()
        self.exclusions = exclusions_from(options.exclude)
        self.transport = transport or HttpTransport(
            timeout=options.timeout, limits=Limits(options.max_body, options.max_headers)
        )
        self.gates = Gates(options.rate, options.per_host)
        self._cert_cache: dict[bytes, tuple[list[str], str]] = {}
        self._t0 = 0.0
        self._in_flight = 0

    # -- helpers ------------------------------------------------------------------------------
    def _now(self) -> datetime:
        if self.scan_time is not None:
            loop = asyncio.get_running_loop()
            return self.scan_time + timedelta(seconds=loop.time() - self._t0)
        return datetime.now(UTC)

    def _cert(self, der: bytes | None) -> tuple[list[str], str | None]:
        if not der:
            return [], None
        cached = self._cert_cache.get(der)
        if cached is None:
            cached = (cert_names(der), hashlib.sha256(der).hexdigest())
            if len(self._cert_cache) > 4096:
                self._cert_cache.clear()
            self._cert_cache[der] = cached
        return cached[0], cached[1]

    async def _resolve(self, target: Target) -> list[str]:
        if target.name is None:
            return [target.host]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.options.timeout):
                infos = await loop.getaddrinfo(target.name, target.port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise FetchError("dns", str(exc) or "no answer") from exc
        out: list[str] = []
        for *_rest, sockaddr in infos:
            addr = str(sockaddr[0])
            if addr not in out:
                out.append(addr)
        out.sort(key=lambda a: ":" in a)  # IPv4 first
        return out

    async def _fetch(self, state: _HostState, req: ProbeRequest, *, retry: bool = True) -> ProbeResponse:
        """One request with retries for transient failures; a dead host gives status None fast."""
        conn, gate = state.conn, state.gate
        assert conn is not None and gate is not None
        if state.error is not None and state.fp is not None and state.fp.result.answered == 0:
            return ProbeResponse(None, {}, b"", state.error)
        attempts = 1 + (self.options.retries if retry else 0)
        last: ProbeResponse = ProbeResponse(None, {}, b"", "eof")
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(retry_delay(attempt))
            await gate.wait()
            self.summary.requests += 1
            try:
                last = await conn.fetch(req, reuse=attempt == 0)
            except FetchError as exc:
                last = ProbeResponse(None, {}, b"", exc.kind)
                if exc.kind not in TRANSIENT:
                    break  # refused, tls, dns: not transient
                continue
            if last.status is not None or last.error not in ("reset", "eof"):
                break
        return last

    # -- one target ---------------------------------------------------------------------------
    async def scan_target(self, target: Target) -> Observation:
        """Scan one target within its budget; always returns a record."""
        self.exclusions.refresh()
        state = _HostState()
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.options.host_budget):
                await self._scan(target, state)
        except TimeoutError:
            state.error = state.error or "budget"
            if state.fp is not None and state.fp.result.answered:
                state.fp.notes.append(f"host budget of {self.options.host_budget:g} s exhausted")
                state.fp.finish()
            else:
                state.error = "budget"
        except FetchError as exc:
            state.error = exc.kind
        finally:
            if state.conn is not None:
                state.conn.close()
                self.gates.release(state.conn.address)
        rec = self._record(target, state)
        rec["elapsed"] = round(asyncio.get_running_loop().time() - started, 3)
        return rec

    async def _scan(self, target: Target, state: _HostState) -> None:
        addresses = await self._resolve(target)
        allowed = [a for a in addresses if connect_allowed(target, a, self.exclusions)]
        if not allowed:
            state.address = addresses[0] if addresses else None
            state.error = "excluded"
            return
        address = state.address = allowed[0]
        state.conn = self.transport.open(
            Endpoint(address, target.port, target.scheme, target.name or address, target.name)
        )
        state.gate = self.gates.acquire(address)
        fp = state.fp = Fingerprinter(builds_for_cu, known_build)
        gen = fp.steps()
        try:
            req = next(gen)
            while True:
                resp = await self._fetch(state, req)
                if resp.status is None and fp.result.answered == 0:
                    # No HTTP from this host at all: stop here, it is unreachable for this run.
                    state.error = "reset" if resp.error in ("eof", None) else resp.error
                    fp.result.requests += 1
                    return
                req = gen.send(resp)
        except StopIteration:
            pass
        if self.options.probe and fp.result.is_exchange:
            for wave in PROBE_WAVES:
                state.probes[wave] = await self._probe(state, wave)

    async def _probe(self, state: _HostState, wave: str) -> ProbeOutcome:
        attack_req, control_req = probe_requests(wave)
        control = await self._fetch(state, control_req)
        attack = await self._fetch(state, attack_req, retry=False)  # an abort is a result: never retried
        outcome = judge_probe(wave, attack, control)
        fp = state.fp
        if wave == "proxyshell" and outcome.outcome == "vulnerable" and fp is not None:
            fr = fp.result
            if fr.build is None or fr.cu_only:
                # The MAPI back end names its full build (X-ServerApplication): worth one more request
                # when the passive sources gave only the CU.
                mapi = await self._fetch(state, PROXYSHELL_MAPI_REQUEST, retry=False)
                fp.absorb(mapi)
                fp.finish()
        if wave == "proxyshell" and outcome.outcome == "mitigated":
            # The rule may cover only the OWA variant: try the MAPI one before calling it mitigated.
            mapi = await self._fetch(state, PROXYSHELL_MAPI_REQUEST, retry=False)
            second = judge_probe(wave, mapi, control)
            if second.outcome == "vulnerable":
                return second
        return outcome

    def _record(self, target: Target, state: _HostState) -> Observation:
        names, sha = self._cert(state.conn.peer_cert if state.conn else None)
        fp = state.fp.result if state.fp is not None else None
        if fp is not None and fp.answered == 0:
            fp = None
        if fp is not None and not fp.is_exchange and not fp.signs and state.fp is not None:
            state.fp.finish()
        rec = host_record(
            target,
            state.address,
            fp=fp,
            probes=state.probes,
            error=state.error or ("reset" if fp is None else None),
            cert_names=names,
            cert_sha256=sha,
            when=self._now(),
            extra_tags=self.tags,
            as_of=self.as_of,
        )
        if state.conn is not None:
            rec["requests"] = state.conn.requests
            if state.conn.truncated:
                rec["notes"].append(
                    f"{state.conn.truncated} response(s) cut at {self.options.max_body} bytes"
                )
            if state.conn.dropped_headers:
                rec["notes"].append(f"{state.conn.dropped_headers} header line(s) over the cap ignored")
        return rec

    # -- the pipeline -------------------------------------------------------------------------
    async def run(self, targets: Iterable[Target], done_keys: Iterable[str] = ()) -> ScanSummary:
        """Scan every target once; each record goes to the run (counted, stored, folded)."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        for key in done_keys:
            self.seen.add_key(key)
            self.summary.skipped += 1
        workers_n = max(1, min(self.options.concurrency, raise_open_files_limit() - 64))
        queue: asyncio.Queue[Target | None] = asyncio.Queue(maxsize=workers_n * 2)
        ticker = asyncio.create_task(self._ticker()) if self.run_.hooks.progress else None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._produce(targets, queue, workers_n))
                for _ in range(workers_n):
                    tg.create_task(self._work(queue))
            self.run_.emit(self.run_.folder.finish())  # on this thread: a closed output stops the scan
        except BaseException:
            self.run_.abort(loop.time() - self._t0)  # what finished is counted and stored
            raise
        finally:
            if ticker is not None:
                ticker.cancel()
            self.summary.seconds = loop.time() - self._t0
            self._report()
        return self.summary

    async def _produce(
        self, targets: Iterable[Target], queue: asyncio.Queue[Target | None], workers: int
    ) -> None:
        skipped = 0
        for target in targets:
            if not self.seen.add(target):
                skipped += 1
                if skipped % 1000 == 0:
                    await asyncio.sleep(0)
                continue
            self.run_.expect(target)
            await queue.put(target)
        self.run_.end_of_stream()
        for _ in range(workers):
            await queue.put(None)

    async def _work(self, queue: asyncio.Queue[Target | None]) -> None:
        while True:
            target = await queue.get()
            if target is None:
                return
            self._in_flight += 1
            self.summary.peak_in_flight = max(self.summary.peak_in_flight, self._in_flight)
            try:
                rec = await self.scan_target(target)
            finally:
                self._in_flight -= 1
            await self.run_.add_async(rec)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._report()

    def _report(self) -> None:
        progress = self.run_.hooks.progress
        if progress is None:
            return
        s = self.summary
        progress(
            Progress(
                done=s.scanned,
                total=max(s.total - s.skipped, s.scanned),
                errors=s.statuses.get("unreachable", 0),
                vulnerable=s.vulnerable,
                elapsed=asyncio.get_running_loop().time() - self._t0,
                requests=s.requests,
            )
        )


async def scan_async(run: ScanRun, transport: Transport | None = None) -> ScanSummary:
    """Run a scan on the running event loop: start ``run``, scan its targets, finish it."""
    try:
        run.start()  # on this thread: nothing else runs yet, and the store's process forks from one thread
        run.announce()
        scanner = Scanner(run, transport)
        try:
            summary = await scanner.run(run.targets(), run.done)
        except asyncio.CancelledError:
            raise ScanInterrupted(run.summary, "interrupted") from None
        except BaseExceptionGroup as group:
            if group.subgroup(BrokenPipeError) is not None:
                raise ScanInterrupted(run.summary, "output closed") from None
            if group.subgroup(KeyboardInterrupt) is not None:
                raise ScanInterrupted(run.summary, "interrupted") from None
            only = group.exceptions[0] if len(group.exceptions) == 1 else None
            if isinstance(only, Exception):
                raise only from None  # e.g. the store failed under the writer
            raise
        except BrokenPipeError:
            raise ScanInterrupted(run.summary, "output closed") from None
        return await asyncio.to_thread(run.finish, summary.seconds)
    finally:
        run.close()


def run_scan(
    targets: Iterable[str] | TargetSet,
    options: ScanOptions | None = None,
    store_url: str | None = None,
    *,
    scan_time: datetime | None = None,
    tags: Mapping[str, str] | None = None,
    resume: int | None = None,
    on_record: Callable[[Observation], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int, list[str]], None] | None = None,
    on_host: Callable[[HostRecord], None] | None = None,
) -> ScanSummary:
    """Scan ``targets`` and store one observation per target; a plain synchronous call.

    ``on_record`` gets each service (host, port) record as stored; ``on_host`` each host record, its
    services folded (:mod:`exwatch.scan.fold`), with ``fix``. A target list with nothing to scan is an
    InputError before anything is stored; a scan stopped by Ctrl-C (or by ``on_host`` raising
    BrokenPipeError) raises :class:`ScanInterrupted` with the summary so far (what finished is stored).

    ``store_url``: a store URL (None: the default store; ``memory:`` keeps records in memory).
    ``scan_time`` dates the snapshot (the demo simulates scans in the past). ``resume``: a scan id
    whose parameters are reloaded from the store; hosts already stored are skipped.
    Works from sync code; from inside a running event loop it runs on a helper thread.
    """
    hooks = ScanHooks(on_record=on_record, on_host=on_host, on_start=on_start, progress=progress)
    run = ScanRun(targets, options, store_url, scan_time=scan_time, tags=tags, resume=resume, hooks=hooks)
    return execute(run)


def execute(run: ScanRun, transport: Transport | None = None) -> ScanSummary:
    """Run a :class:`ScanRun` to its end on the engine's event loop (from sync code)."""
    coro = scan_async(run, transport)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_loop(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_run_loop, coro).result()


def _run_loop(coro: Coroutine[Any, Any, ScanSummary]) -> ScanSummary:
    """Run the engine on uvloop when it is installed (the ``fast`` extra), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


_ = (finish_host, build_target_set, no_target_message, target_stream)  # re-exported (see __all__)
