"""The scan engine, the only module of the scanner that does IO: connections, limits, budgets, scope.

HTTP client: a small HTTP/1.1 client on asyncio streams rather than aiohttp. Why: a scanner must tell an aborted request (no status line: the mitigation's signature)
from a reset after a partial answer, cap header count and bytes per response including chunk framing,
stop a server that trickles bytes, read the TLS peer certificate of a self-signed host, connect only to an
address already checked against the scope, and keep exactly one connection per host. aiohttp hides the
first and the last behind its connection pool and maps several of these cases to the same exception, so
this client owns the socket and uses :mod:`exwatch.scan.wire` (pure) for the parsing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import random
import socket
import ssl
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exwatch.errors import InputError
from exwatch.scan.fingerprint import Fingerprinter, cert_names
from exwatch.scan.fold import HostFolder, host_of
from exwatch.scan.observation import builds_for_cu, host_fix, host_record, known_build
from exwatch.scan.probes import (
    PROBE_WAVES,
    PROXYSHELL_MAPI_REQUEST,
    ProbeOutcome,
    ProbeRequest,
    ProbeResponse,
    judge_probe,
    probe_requests,
)
from exwatch.scan.sink import ScanTotals, Sink, open_sink
from exwatch.scan.targets import (
    Exclusions,
    Port,
    Target,
    TargetSet,
    connect_allowed,
    expand,
    parse_ports,
    window_shuffle,
)
from exwatch.scan.wire import (
    Headers,
    WireError,
    body_framing,
    decode_body,
    encode_request,
    parse_chunk_size,
    parse_header_line,
    parse_status_line,
)

LINE_LIMIT = 16 * 1024
MAX_HEAD_BYTES = 1024 * 1024
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})


class FetchError(Exception):
    """A request failed; ``kind`` is the error class (refused, timeout, tls, reset, eof, protocol, dns)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def client_tls_context(*, tls13: bool = False) -> ssl.SSLContext:
    """One TLS context per scan, reused for every host: no verification (scanners meet self-signed
    certificates), the peer certificate still read.

    By default the context stops at TLS 1.2 without session tickets: every Exchange version speaks 1.2,
    and a 1.2 handshake without tickets costs both sides less CPU than a 1.3 one whose server sends two
    tickets nobody will use (each host is a new origin). ``tls13`` gives the fallback context for a
    server that refuses 1.2.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # old Exchange (2010 on Windows 2008 R2) may speak TLS 1.0 only
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    if not tls13:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_TICKET
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def classify(exc: BaseException) -> str:
    """The error class of an exception raised while connecting, writing or reading."""
    if isinstance(exc, FetchError):
        return exc.kind
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "eof"
    if isinstance(exc, WireError | asyncio.LimitOverrunError | ValueError | UnicodeError):
        return "protocol"
    if isinstance(exc, OSError):
        if exc.errno in (111, 61):
            return "refused"
        if exc.errno in (104, 54, 32):
            return "reset"
        if exc.errno in (110, 60):
            return "timeout"
        return "refused" if exc.errno in (113, 101, 99) else "reset"
    return "protocol"


@dataclass
class Limits:
    """Per-response limits: body bytes kept, header lines accepted."""

    max_body: int = 128 * 1024
    max_headers: int = 100


class Connection:
    """One keep-alive connection to one host; reopened transparently when the server closes it."""

    def __init__(
        self,
        address: str,
        port: int,
        scheme: str,
        *,
        host_header: str | None = None,
        server_name: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        limits: Limits | None = None,
        gate: Callable[[], Awaitable[None]] | None = None,
        tls_fallback: ssl.SSLContext | None = None,
    ) -> None:
        self.gate = gate
        self.address = address
        self.port = port
        self.scheme = scheme
        self.host_header = host_header or address
        self.server_name = server_name
        self.tls = tls if tls is not None else (client_tls_context() if scheme == "https" else None)
        self.tls_fallback = tls_fallback
        self.timeout = timeout
        self.limits = limits or Limits()
        self.peer_cert: bytes | None = None
        self.connects = 0
        self.requests = 0
        self.truncated = 0
        self.dropped_headers = 0
        self._partial: tuple[int, Headers, list[bytes]] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def default_port(self) -> bool:
        return (self.scheme, self.port) in (("https", 443), ("http", 80))

    async def connect(self) -> None:
        """Open the TCP (and TLS) connection; raises FetchError with the error class."""
        self.close()
        ssl_arg: ssl.SSLContext | None = self.tls if self.scheme == "https" else None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.address, self.port, limit=LINE_LIMIT)
        except Exception as exc:  # every failure becomes an error class
            raise FetchError(classify(exc), str(exc) or type(exc).__name__) from exc
        if ssl_arg is not None:
            # The TCP connection stands: whatever fails now is the TLS handshake's fault.
            try:
                async with asyncio.timeout(self.timeout):
                    await writer.start_tls(ssl_arg, server_hostname=self.server_name or "")
            except Exception as exc:
                writer.transport.abort()
                kind = "timeout" if isinstance(exc, TimeoutError) else "tls"
                if kind == "tls" and self.tls_fallback is not None and ssl_arg is not self.tls_fallback:
                    self.tls = self.tls_fallback  # a TLS 1.3-only server: try once more with 1.3 allowed
                    return await self.connect()
                raise FetchError(kind, str(exc) or type(exc).__name__) from exc
        self.connects += 1
        self._reader, self._writer = reader, writer
        if ssl_arg is not None and self.peer_cert is None:
            sslobj = writer.get_extra_info("ssl_object")
            if sslobj is not None:
                with contextlib.suppress(Exception):
                    self.peer_cert = sslobj.getpeercert(binary_form=True)

    def close(self) -> None:
        """Drop the connection (no graceful TLS shutdown: a scanner does not wait for it)."""
        if self._writer is not None:
            transport = self._writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        self._reader = self._writer = None

    async def fetch(self, req: ProbeRequest, *, reuse: bool = True) -> ProbeResponse:
        """Send one request and read the answer within the per-request timeout.

        A connection failure raises FetchError. Once the request is sent, a missing answer comes back as
        ``ProbeResponse(status=None, error=<class>)``: for a probe that is a result, not an error.
        """
        if self.gate is not None:
            await self.gate()
        if self._writer is None or not reuse or self._writer.is_closing():
            await self.connect()
        assert self._reader is not None and self._writer is not None
        reader, writer = self._reader, self._writer
        data = encode_request(req, self.host_header, self.default_port, self.port)
        self.requests += 1
        self._partial = None
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(data)
                await writer.drain()
                return await self._read_response(reader, req.method)
        except Exception as exc:
            self.close()
            partial, self._partial = self._partial, None
            if partial is not None:
                # Headers came back, the body did not finish in time: an answer, cut short.
                status, headers, chunks = partial
                self.truncated += 1
                return ProbeResponse(status, dict(headers), b"".join(chunks), classify(exc))
            return ProbeResponse(None, {}, b"", classify(exc))

    async def _read_response(self, reader: asyncio.StreamReader, method: str) -> ProbeResponse:
        limits = self.limits
        while True:
            line = await reader.readuntil(b"\n")
            status = parse_status_line(line)
            headers = Headers()
            count = 0
            head_bytes = 0
            while True:
                hline = await reader.readuntil(b"\n")
                if hline in (b"\r\n", b"\n"):
                    break
                count += 1
                head_bytes += len(hline)
                if head_bytes > MAX_HEAD_BYTES:
                    raise WireError(f"response headers larger than {MAX_HEAD_BYTES} bytes")
                name, value = parse_header_line(hline)
                if count > limits.max_headers and name.lower() not in FRAMING_HEADERS:
                    self.dropped_headers += 1  # read (bounded by bytes) but not kept
                    continue
                headers.add(name, value)
            if status != 100 and not (101 < status < 200):
                break  # interim responses (100 Continue, 103 Early Hints) are skipped
        framing, length = body_framing(status, method, headers)
        keep = (headers.get_ci("Connection") or "").lower() != "close"
        chunks: list[bytes] = []
        # From here on a timeout still leaves an answer: the status line and headers came back.
        self._partial = (status, headers, chunks)
        truncated = False
        cap = limits.max_body
        if framing == "length":
            assert length is not None
            got = 0
            while got < min(length, cap):
                more = await reader.read(min(length, cap) - got)
                if not more:
                    raise asyncio.IncompleteReadError(b"", length)
                chunks.append(more)
                got += len(more)
            if length > cap:
                truncated, keep = True, False
        elif framing == "chunked":
            got = 0
            while True:
                size = parse_chunk_size(await reader.readuntil(b"\n"))
                if size == 0:
                    while (await reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
                        pass  # trailers, ignored
                    break
                if got + size > cap:
                    chunks.append(await reader.readexactly(cap - got))
                    got = cap
                    truncated, keep = True, False
                    break
                chunks.append(await reader.readexactly(size))
                got += size
                await reader.readuntil(b"\n")
        elif framing == "close":
            got = 0
            while got < cap:
                more = await reader.read(cap - got)
                if not more:
                    break
                chunks.append(more)
                got += len(more)
            truncated = got >= cap
            keep = False
        self._partial = None
        body = b"".join(chunks)
        body, bomb = decode_body(body, headers, cap)
        if truncated or bomb:
            self.truncated += 1
        if not keep:
            self.close()
        return ProbeResponse(status, dict(headers), body, None)


async def probe_host(
    address: str,
    port: int,
    scheme: str,
    wave: str,
    *,
    timeout: float = 5.0,
    server_name: str | None = None,
    tls: ssl.SSLContext | None = None,
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
            if control.status is None and control.error in ("reset", "eof", "timeout"):
                control = await conn.fetch(control_req, reuse=False)  # one retry: transient only
            attack = await conn.fetch(attack_req)
        except FetchError as exc:
            return ProbeOutcome("inconclusive", f"host unreachable ({exc.kind}: {exc.detail})")
        return judge_probe(wave, attack, control)
    finally:
        conn.close()


# -- the scan ---------------------------------------------------------------------------------

DEFAULT_PORTS: tuple[Port, ...] = (Port(443, "https"), Port(80, "http"))
_STOP = object()


@dataclass
class ScanOptions:
    """Everything that shapes a scan; stored with the scan so that ``--resume`` can replay it."""

    ports: tuple[Port, ...] = DEFAULT_PORTS
    probe: bool = False
    concurrency: int = 256
    rate: float = 0.0  # requests per second over the whole scan; 0 = no limit
    per_host: float = 20.0  # requests per second to one address; 0 = no limit
    timeout: float = 5.0  # per request (connect, send, read)
    host_budget: float = 30.0  # wall clock per target, whatever happens
    max_body: int = 128 * 1024
    max_headers: int = 100
    retries: int = 1
    shuffle: bool = True
    seed: int | None = None
    yes_large: bool = False
    exclude: tuple[str, ...] = ()  # addresses, networks, names, or files of them (re-read when changed)
    targets_files: tuple[str, ...] = ()
    batch_size: int = 500
    flush_interval: float = 1.0
    waves: tuple[str, ...] = ()  # waves that decide the exit code and the exposed list (): every wave
    as_of: str | None = None  # ISO date: verdicts with the knowledge of that day (None: today)

    def to_params(self) -> dict[str, Any]:
        """A JSON-ready form (paths made absolute so that a resume from elsewhere finds them)."""
        out = asdict(self)
        out["ports"] = [f"{p.number}/{p.scheme}" for p in self.ports]
        out["exclude"] = [str(Path(e).resolve()) if Path(e).is_file() else e for e in self.exclude]
        out["targets_files"] = [str(Path(f).resolve()) for f in self.targets_files]
        return out

    @classmethod
    def from_params(cls, data: Mapping[str, Any]) -> ScanOptions:
        """The options back from :meth:`to_params`."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "ports" in kwargs:
            kwargs["ports"] = parse_ports(",".join(kwargs["ports"]))
        for key in ("exclude", "targets_files", "waves"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def validate(self) -> None:
        """Reject values that cannot work, with a one-line message."""
        if self.concurrency < 1:
            raise InputError("--concurrency must be at least 1")
        if self.rate < 0 or self.per_host < 0:
            raise InputError("--rate and --per-host must be 0 (no limit) or more")
        if self.timeout <= 0 or self.host_budget <= 0:
            raise InputError("--timeout and --host-budget must be more than 0")
        if self.max_body < 1024:
            raise InputError("--max-body must be at least 1024 bytes")
        if not 0 <= self.retries <= 5:
            raise InputError("--retries must be between 0 and 5")
        if self.waves:
            from exwatch.scan.observation import wave_ids

            known = wave_ids()
            bad = [w for w in self.waves if w not in known]
            if bad:
                raise InputError(f"unknown wave {bad[0]!r} for --wave; valid: {', '.join(known)}")
        if self.as_of is not None:
            self.as_of_date()

    def as_of_date(self) -> date | None:
        """``as_of`` as a date (InputError for a bad one)."""
        if self.as_of is None:
            return None
        try:
            return date.fromisoformat(str(self.as_of).strip())
        except ValueError:
            raise InputError(f"--as-of {self.as_of!r} is not a date (YYYY-MM-DD)") from None


@dataclass
class Progress:
    """What a progress display needs; passed to the ``progress`` callback about twice a second."""

    done: int
    total: int
    errors: int
    vulnerable: int
    elapsed: float
    requests: int

    @property
    def rate(self) -> float:
        """Targets per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate."""
        if self.rate <= 0 or self.total <= self.done:
            return None
        return (self.total - self.done) / self.rate


EXPOSED_FIELDS = (
    "key",
    "host",
    "target",
    "address",
    "port",
    "name",
    "build",
    "build_source",
    "cu_only",
    "product",
    "cu",
    "fe_server",
    "waves",
    "services",
    "conflict",
    "fix",
    "fix_build",
    "fix_kb",
)


@dataclass
class ScanSummary:
    """What a scan found, per host (its services folded): counts per status, per wave and state,
    errors, the exposed hosts (a list capped at ``MAX_EXPOSED``; every count comes from counters).

    ``waves_selected`` (``--wave``): the waves that decide the exit code and the exposed list; empty
    means every wave. The per-wave counts cover every wave whatever the selection.
    """

    scan_id: int
    total: int = 0
    scanned: int = 0  # services (host, port) scanned
    skipped: int = 0
    seconds: float = 0.0
    requests: int = 0
    hosts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    waves: dict[str, Counter[str]] = field(default_factory=dict)
    conflicts: int = 0
    exposed: list[dict[str, Any]] = field(default_factory=list)
    exposed_dropped: int = 0
    exposed_hosts: int = 0
    vulnerable_hosts: int = 0
    unknown_hosts: int = 0
    incomplete_hosts: int = 0
    problems: list[str] = field(default_factory=list)
    interrupted: bool = False
    stop_reason: str | None = None
    peak_in_flight: int = 0
    waves_selected: tuple[str, ...] = ()
    whole: ScanTotals | None = None  # a resumed scan: the stored counts of every run of it

    MAX_EXPOSED = 10_000

    def add_service(self, rec: Mapping[str, Any]) -> None:
        """Count one service record (the progress of the scan)."""
        self.scanned += 1

    def _chosen(self, wave: str) -> bool:
        return not self.waves_selected or wave in self.waves_selected

    def add(self, rec: Mapping[str, Any]) -> None:
        """Count one host record (folded); keep a short form of it if a chosen wave is exposed."""
        self.hosts += 1
        status = str(rec.get("status"))
        self.statuses[status] += 1
        if rec.get("error"):
            self.errors[str(rec["error"])] += 1
        self.conflicts += bool(rec.get("conflict"))
        vulnerable = unknown = False
        for wave, v in (rec.get("waves") or {}).items():
            state = str(v.get("state"))
            self.waves.setdefault(wave, Counter())[state] += 1
            if status == "exchange" and self._chosen(wave):
                vulnerable = vulnerable or state == "vulnerable"
                unknown = unknown or state == "unknown"
        self.vulnerable_hosts += vulnerable
        self.unknown_hosts += unknown
        self.incomplete_hosts += status == "unreachable" or unknown
        if vulnerable or unknown:
            self.exposed_hosts += 1
            if len(self.exposed) < self.MAX_EXPOSED:
                self.exposed.append({k: rec.get(k) for k in EXPOSED_FIELDS})
            else:
                self.exposed_dropped += 1

    @property
    def vulnerable(self) -> int:
        """Hosts with at least one chosen wave vulnerable."""
        return self.vulnerable_hosts

    @property
    def incomplete(self) -> int:
        """Hosts unreachable, or Exchange with a chosen wave whose state is unknown."""
        return self.incomplete_hosts

    @property
    def exit_code(self) -> int:
        """1 if any host is vulnerable; 3 if none but some are unreachable or unknown (or the scan was
        stopped before its end); else 0. For a resumed scan the hosts its earlier runs stored count too."""
        whole = self.whole
        if self.vulnerable or (whole is not None and whole.vulnerable):
            return 1
        if self.incomplete or self.interrupted or (whole is not None and whole.incomplete):
            return 3
        return 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "scan_id": self.scan_id,
            "total": self.total,
            "scanned": self.scanned,
            "services": self.scanned,
            "hosts": self.hosts,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "hosts_per_second": round(self.scanned / self.seconds, 1) if self.seconds else None,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "waves": {w: dict(c) for w, c in self.waves.items()},
            "waves_selected": list(self.waves_selected),
            "conflicts": self.conflicts,
            "vulnerable_hosts": self.vulnerable_hosts,
            "unknown_hosts": self.unknown_hosts,
            "exposed_hosts": self.exposed_hosts,
            "incomplete_hosts": self.incomplete_hosts,
            "problems": self.problems,
            "interrupted": self.interrupted,
            "whole_scan": self.whole.to_dict() if self.whole is not None else None,
        }


class ScanInterrupted(KeyboardInterrupt):
    """The scan stopped before its end (Ctrl-C, or its output closed); ``summary`` has what it found.

    What finished is stored. A KeyboardInterrupt, so that callers that only catch that still do.
    """

    def __init__(self, summary: ScanSummary, reason: str = "interrupted") -> None:
        super().__init__(reason)
        self.summary = summary
        self.reason = reason


class RateLimiter:
    """A token bucket as a schedule: each caller reserves the next free slot and sleeps until it.

    Slots are ``1/rate`` apart; up to ``burst`` slots may be taken at once after an idle spell. Reserving
    instead of polling keeps waiters in arrival order and wakes each exactly once.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.interval = 1.0 / rate
        self.span = max(burst - 1.0, 0.0) * self.interval
        self.next = 0.0

    async def wait(self) -> None:
        """Wait for this caller's slot."""
        now = asyncio.get_running_loop().time()
        slot = max(self.next, now - self.span)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class SeenTargets:
    """Targets already done or queued, so that none is scanned twice (IPv4 in /16 bitmaps, the rest in a set)."""

    def __init__(self) -> None:
        self._blocks: dict[tuple[int, str, int], bytearray] = {}
        self._other: set[str] = set()

    def add(self, target: Target) -> bool:
        """Mark a target; False if it was already there."""
        if target.name is None and ":" not in target.host:
            try:
                value = int.from_bytes(socket.inet_aton(target.host), "big")
            except OSError:
                value = -1
            if value >= 0:
                block = self._blocks.setdefault((target.port, target.scheme, value >> 16), bytearray(8192))
                low = value & 0xFFFF
                byte, bit = low >> 3, 1 << (low & 7)
                if block[byte] & bit:
                    return False
                block[byte] |= bit
                return True
        key = target.key
        if key in self._other:
            return False
        self._other.add(key)
        return True

    def add_key(self, key: str) -> None:
        """Mark a key from a stored scan (``scheme://host:port``)."""
        parts = urlsplit(key)
        if parts.hostname is None or parts.port is None:
            self._other.add(key)
            return
        host = parts.hostname
        is_ip = _is_ipv4(host)
        self.add(Target(host, parts.port, parts.scheme, key, (), None if is_ip else host))


def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return text.count(".") == 3


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit; return the soft limit now in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        want = min(want, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < want:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    except ImportError:  # not on POSIX
        return 1 << 12


@dataclass
class _HostState:
    fp: Fingerprinter | None = None
    address: str | None = None
    probes: dict[str, ProbeOutcome] = field(default_factory=dict)
    error: str | None = None
    conn: Connection | None = None


class Scanner:
    """The asyncio engine of one scan: a producer, a bounded queue, workers and one writer."""

    def __init__(
        self,
        options: ScanOptions,
        sink: Sink,
        scan_id: int,
        *,
        scan_time: datetime | None = None,
        tags: Mapping[str, str] | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        progress: Callable[[Progress], None] | None = None,
        total: int = 0,
        on_host: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.options = options
        self.on_host = on_host
        self.folder = HostFolder()
        self.as_of = options.as_of_date()
        self.sink = sink
        self.scan_id = scan_id
        self.scan_time = scan_time
        self.tags = dict(tags or {})
        self.on_record = on_record
        self.progress = progress
        self.summary = ScanSummary(scan_id, total=total, waves_selected=tuple(options.waves))
        self.seen = SeenTargets()
        self.exclusions = _exclusions(options.exclude)
        self.tls = client_tls_context()
        self.tls13 = client_tls_context(tls13=True)
        self.limits = Limits(options.max_body, options.max_headers)
        self.global_rate = (
            RateLimiter(options.rate, burst=max(1.0, options.rate / 10)) if options.rate else None
        )
        self._host_rates: dict[str, tuple[RateLimiter, int]] = {}
        self._cert_cache: dict[bytes, tuple[list[str], str]] = {}
        self._t0 = 0.0
        self._in_flight = 0

    # -- helpers ------------------------------------------------------------------------------
    def _now(self) -> datetime:
        if self.scan_time is not None:
            loop = asyncio.get_running_loop()
            return self.scan_time + timedelta(seconds=loop.time() - self._t0)
        return datetime.now(UTC)

    def _gate_for(self, address: str) -> Callable[[], Awaitable[None]]:
        per_host = self.options.per_host
        entry = self._host_rates.get(address)
        if per_host and entry is None:
            entry = (RateLimiter(per_host, burst=max(1.0, per_host / 4)), 0)
        if entry is not None:
            self._host_rates[address] = (entry[0], entry[1] + 1)
        host_limiter = entry[0] if entry else None

        async def gate() -> None:
            if self.global_rate is not None:
                await self.global_rate.wait()
            if host_limiter is not None:
                await host_limiter.wait()
            self.summary.requests += 1

        return gate

    def _release(self, address: str) -> None:
        entry = self._host_rates.get(address)
        if entry is None:
            return
        if entry[1] <= 1:
            del self._host_rates[address]
        else:
            self._host_rates[address] = (entry[0], entry[1] - 1)

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
        conn = state.conn
        assert conn is not None
        if state.error is not None and state.fp is not None and state.fp.result.answered == 0:
            return ProbeResponse(None, {}, b"", state.error)
        attempts = 1 + (self.options.retries if retry else 0)
        last: ProbeResponse = ProbeResponse(None, {}, b"", "eof")
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
            try:
                last = await conn.fetch(req, reuse=attempt == 0)
            except FetchError as exc:
                last = ProbeResponse(None, {}, b"", exc.kind)
                if exc.kind not in ("timeout", "reset", "eof"):
                    break  # refused, tls, dns: not transient
                continue
            if last.status is not None or last.error not in ("reset", "eof"):
                break
        return last

    # -- one target ---------------------------------------------------------------------------
    async def scan_target(self, target: Target) -> dict[str, Any]:
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
                self._release(state.conn.address)
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
        state.conn = Connection(
            address,
            target.port,
            target.scheme,
            host_header=target.name or address,
            server_name=target.name,
            tls=self.tls,
            tls_fallback=self.tls13,
            timeout=self.options.timeout,
            limits=self.limits,
            gate=self._gate_for(address),
        )
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

    def _record(self, target: Target, state: _HostState) -> dict[str, Any]:
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
        """Scan every target once; records go to ``on_record`` and, in batches, to the sink."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        for key in done_keys:
            self.seen.add_key(key)
            self.summary.skipped += 1
        limit = raise_open_files_limit()
        workers_n = max(1, min(self.options.concurrency, limit - 64))
        queue: asyncio.Queue[Target | None] = asyncio.Queue(maxsize=workers_n * 2)
        out: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.options.batch_size * 4)

        async def producer() -> None:
            skipped = 0
            for target in targets:
                if not self.seen.add(target):
                    skipped += 1
                    if skipped % 1000 == 0:
                        await asyncio.sleep(0)
                    continue
                self.emit_hosts(self.folder.expect(target.key, target.host_id))
                await queue.put(target)
            self.emit_hosts(self.folder.end_of_stream())
            for _ in range(workers_n):
                await queue.put(None)

        async def worker() -> None:
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
                self.summary.add_service(rec)
                if self.on_record is not None:
                    self.on_record(rec)
                await out.put(rec)
                self.emit_hosts(self.folder.add(rec))

        async def writer() -> None:
            batch: list[dict[str, Any]] = []
            deadline = loop.time() + self.options.flush_interval
            while True:
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        item = await out.get()
                except TimeoutError:
                    item = None
                if item is not None and item is not _STOP:
                    batch.append(item)
                if batch and (
                    item is _STOP or len(batch) >= self.options.batch_size or loop.time() >= deadline
                ):
                    await asyncio.to_thread(self.sink.add, self.scan_id, batch)
                    batch = []
                if loop.time() >= deadline:
                    deadline = loop.time() + self.options.flush_interval
                if item is _STOP:
                    return

        async def ticker() -> None:
            while True:
                await asyncio.sleep(0.5)
                self._report(loop)

        writer_task = asyncio.create_task(writer())
        ticker_task = asyncio.create_task(ticker()) if self.progress else None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(producer())
                for _ in range(workers_n):
                    tg.create_task(worker())
            self.emit_hosts(self.folder.finish())
        except BaseException:
            # Stopped before the end: count the hosts whose services finished (not printed again).
            self.summary.interrupted = True
            for host in self.folder.finish():
                self.summary.add(finish_host(host))
            raise
        finally:
            if ticker_task is not None:
                ticker_task.cancel()
            # Flush what finished, even when interrupted: nothing done is lost.
            await asyncio.shield(self._drain(out, writer_task))
            self.summary.seconds = loop.time() - self._t0
            if self.progress:
                self._report(loop)
        return self.summary

    def emit_hosts(self, hosts: list[dict[str, Any]]) -> None:
        """Count and hand over host records folded from their services."""
        for host in hosts:
            finish_host(host)
            self.summary.add(host)
            if self.on_host is not None:
                self.on_host(host)

    async def _drain(self, out: asyncio.Queue[Any], writer_task: asyncio.Task[None]) -> None:
        if not writer_task.done():
            await out.put(_STOP)
        await writer_task

    def _report(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.progress is None:
            return
        s = self.summary
        self.progress(
            Progress(
                done=s.scanned,
                total=max(s.total - s.skipped, s.scanned),
                errors=s.statuses.get("unreachable", 0),
                vulnerable=s.vulnerable,
                elapsed=loop.time() - self._t0,
                requests=s.requests,
            )
        )


def finish_host(host: dict[str, Any]) -> dict[str, Any]:
    """Complete a folded host record: its host id and the one fix that closes every open wave."""
    host["host"] = host_of(host)
    host.update(host_fix(host))
    return host


def _exclusions(items: Iterable[str]) -> Exclusions:
    plain: list[str] = []
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if (
            ("/" in item or "\\" in item or path.suffix)
            and path.is_file()
            or path.is_file()
            and not _is_ipv4(item)
        ):
            files.append(path)
        else:
            plain.append(item)
    return Exclusions(plain, files)


def build_target_set(targets: Iterable[str] | TargetSet, options: ScanOptions) -> TargetSet:
    """The user's targets and the option's target files as one lazy, re-iterable set."""
    if isinstance(targets, TargetSet):
        return targets
    return TargetSet(tuple(targets), tuple(Path(f) for f in options.targets_files), options.ports)


def target_stream(tset: TargetSet, options: ScanOptions) -> Iterator[Target]:
    """The targets in scan order: ranges permuted and a window shuffle across networks (if asked)."""
    if not options.shuffle:
        return expand(tset.specs(), tset.ports)
    rng = random.Random(options.seed)
    return window_shuffle(expand(tset.specs(), tset.ports, rng), rng)


def no_target_message(tset: TargetSet, messages: list[str]) -> str:
    """The one line for a target list that yields nothing to scan."""
    if messages:
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        return f"nothing to scan: {messages[0]}{more}"
    files = ", ".join(str(f) for f in tset.files) or ", ".join(tset.items)
    return f"nothing to scan: {files or 'no target'} names no target"


async def scan_async(
    targets: Iterable[str] | TargetSet,
    options: ScanOptions | None = None,
    store_url: str | None = None,
    *,
    scan_time: datetime | None = None,
    tags: Mapping[str, str] | None = None,
    resume: int | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int, list[str]], None] | None = None,
    on_host: Callable[[dict[str, Any]], None] | None = None,
) -> ScanSummary:
    """The asyncio form of :func:`run_scan`."""
    if resume is None:
        # The targets are checked before the store is opened: nothing scannable, nothing stored.
        options = options or ScanOptions()
        options.validate()
        tset = build_target_set(targets, options)
        total, problems = await asyncio.to_thread(tset.check, options.yes_large)
        messages = [p.message for p in problems]
        if total == 0:
            raise InputError(no_target_message(tset, messages))
    sink = open_sink(store_url)
    try:
        done: set[str] = set()
        if resume is not None:
            params = await asyncio.to_thread(sink.params, resume)
            options = ScanOptions.from_params(params.get("options") or {})
            targets = list(params.get("targets") or [])
            tags = params.get("tags") or {}
            if params.get("scan_time"):
                scan_time = datetime.fromisoformat(params["scan_time"])
            done = await asyncio.to_thread(sink.done_keys, resume)
            options.validate()
            tset = build_target_set(targets, options)
            total, problems = await asyncio.to_thread(tset.check, options.yes_large)
            messages = [p.message for p in problems]
        assert options is not None
        if resume is None:
            params = {
                "targets": list(tset.items),
                "options": options.to_params(),
                "tags": dict(tags or {}),
                "scan_time": scan_time.isoformat() if scan_time else None,
            }
            scan_id = await asyncio.to_thread(sink.start, params, scan_time)
        else:
            scan_id = resume
        if on_start is not None:
            on_start(scan_id, total, messages)
        scanner = Scanner(
            options,
            sink,
            scan_id,
            scan_time=scan_time,
            tags=tags,
            on_record=on_record,
            progress=progress,
            total=total,
            on_host=on_host,
        )
        scanner.summary.problems = messages
        try:
            summary = await scanner.run(target_stream(tset, options), done)
        except asyncio.CancelledError:
            raise ScanInterrupted(scanner.summary, "interrupted") from None
        except BaseExceptionGroup as group:
            if group.subgroup(BrokenPipeError) is not None:
                raise ScanInterrupted(scanner.summary, "output closed") from None
            if group.subgroup(KeyboardInterrupt) is not None:
                raise ScanInterrupted(scanner.summary, "interrupted") from None
            raise
        except BrokenPipeError:
            raise ScanInterrupted(scanner.summary, "output closed") from None
        finished = scan_time + timedelta(seconds=summary.seconds) if scan_time else None
        await asyncio.to_thread(sink.finish, scan_id, finished)
        if resume is not None:
            # The summary and exit code of a resumed scan cover the hosts its earlier runs stored.
            summary.whole = await asyncio.to_thread(sink.totals, scan_id)
        return summary
    finally:
        sink.close()


def run_scan(
    targets: Iterable[str] | TargetSet,
    options: ScanOptions | None = None,
    store_url: str | None = None,
    *,
    scan_time: datetime | None = None,
    tags: Mapping[str, str] | None = None,
    resume: int | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int, list[str]], None] | None = None,
    on_host: Callable[[dict[str, Any]], None] | None = None,
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
    coro = scan_async(
        targets,
        options,
        store_url,
        scan_time=scan_time,
        tags=tags,
        resume=resume,
        on_record=on_record,
        progress=progress,
        on_start=on_start,
        on_host=on_host,
    )
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
