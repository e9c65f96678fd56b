"""The scanner's HTTP/1.1 client on asyncio streams: one connection per host, errors as classes.

Why not aiohttp: a scanner must tell an aborted request (no status line: the mitigation's signature)
from a reset after a partial answer, cap header count and bytes per response including chunk framing,
stop a server that trickles bytes, read the TLS peer certificate of a self-signed host, connect only to an
address already checked against the scope, and keep exactly one connection per host. aiohttp hides the
first and the last behind its connection pool and maps several of these cases to the same exception, so
this client owns the socket and uses :mod:`exwatch.scan.wire` (pure) for the parsing.

:func:`read_response` reads one response from any :class:`asyncio.StreamReader`: the socket here, bytes
fed by hand in :class:`exwatch.scan.transport.FakeTransport`; so the caps hold the same way in both.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ssl
import warnings
from dataclasses import dataclass, field

from exwatch.scan.probes import ProbeRequest, ProbeResponse
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

# OS error numbers by name (their values differ between Linux, macOS and Windows).
REFUSED_ERRNOS = frozenset({errno.ECONNREFUSED})
RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE})
TIMEOUT_ERRNOS = frozenset({errno.ETIMEDOUT})
# No route to the address: nothing was there to answer, as for a refused connection.
NO_ROUTE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL})


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
        return _classify_errno(exc.errno)
    return "protocol"


def _classify_errno(number: int | None) -> str:
    if number in REFUSED_ERRNOS or number in NO_ROUTE_ERRNOS:
        return "refused"
    if number in TIMEOUT_ERRNOS:
        return "timeout"
    return "reset"  # RESET_ERRNOS, and any other failure of an open connection


@dataclass
class Limits:
    """Per-response limits: body bytes kept, header lines accepted."""

    max_body: int = 128 * 1024
    max_headers: int = 100


@dataclass
class Reading:
    """One response being read: what came back so far (a timeout mid-body still leaves an answer)."""

    status: int | None = None
    headers: Headers = field(default_factory=Headers)
    chunks: list[bytes] = field(default_factory=list)
    dropped_headers: int = 0
    truncated: bool = False
    keep_alive: bool = True

    def partial(self, error: str) -> ProbeResponse:
        """The answer so far, marked with the error that cut it (status None if no head came back)."""
        if self.status is None:
            return ProbeResponse(None, {}, b"", error)
        return ProbeResponse(self.status, dict(self.headers), b"".join(self.chunks), error)


async def _read_head(reader: asyncio.StreamReader, reading: Reading, limits: Limits) -> tuple[int, Headers]:
    """Status line and headers, interim responses skipped; header lines over the cap are read, not kept."""
    while True:
        status = parse_status_line(await reader.readuntil(b"\n"))
        headers = Headers()
        count = head_bytes = 0
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
                reading.dropped_headers += 1
                continue
            headers.add(name, value)
        if status != 100 and not (101 < status < 200):
            break  # interim responses (100 Continue, 103 Early Hints) are skipped
    return status, headers


async def _read_length(reader: asyncio.StreamReader, reading: Reading, length: int, cap: int) -> None:
    got = 0
    while got < min(length, cap):
        more = await reader.read(min(length, cap) - got)
        if not more:
            raise asyncio.IncompleteReadError(b"", length)
        reading.chunks.append(more)
        got += len(more)
    if length > cap:
        reading.truncated, reading.keep_alive = True, False


async def _read_chunked(reader: asyncio.StreamReader, reading: Reading, cap: int) -> None:
    got = 0
    while True:
        size = parse_chunk_size(await reader.readuntil(b"\n"))
        if size == 0:
            while (await reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
                pass  # trailers, ignored
            return
        if got + size > cap:
            reading.chunks.append(await reader.readexactly(cap - got))
            reading.truncated, reading.keep_alive = True, False
            return
        reading.chunks.append(await reader.readexactly(size))
        got += size
        await reader.readuntil(b"\n")


async def _read_to_close(reader: asyncio.StreamReader, reading: Reading, cap: int) -> None:
    got = 0
    while got < cap:
        more = await reader.read(cap - got)
        if not more:
            break
        reading.chunks.append(more)
        got += len(more)
    reading.truncated = got >= cap
    reading.keep_alive = False


async def read_response(
    reader: asyncio.StreamReader, method: str, limits: Limits, reading: Reading
) -> ProbeResponse:
    """Read one response within ``limits``; ``reading`` holds the partial answer if this raises."""
    status, headers = await _read_head(reader, reading, limits)
    framing, length = body_framing(status, method, headers)
    reading.status, reading.headers = status, headers  # from here on a timeout still leaves an answer
    reading.keep_alive = (headers.get_ci("Connection") or "").lower() != "close"
    cap = limits.max_body
    if framing == "length":
        assert length is not None
        await _read_length(reader, reading, length, cap)
    elif framing == "chunked":
        await _read_chunked(reader, reading, cap)
    elif framing == "close":
        await _read_to_close(reader, reading, cap)
    body, bomb = decode_body(b"".join(reading.chunks), headers, cap)
    reading.truncated = reading.truncated or bomb
    return ProbeResponse(status, dict(headers), body, None)


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
        tls_fallback: ssl.SSLContext | None = None,
    ) -> None:
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
        if self._writer is None or not reuse or self._writer.is_closing():
            await self.connect()
        assert self._reader is not None and self._writer is not None
        reader, writer = self._reader, self._writer
        data = encode_request(req, self.host_header, self.default_port, self.port)
        self.requests += 1
        reading = Reading()
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(data)
                await writer.drain()
                resp = await read_response(reader, req.method, self.limits, reading)
        except Exception as exc:
            self.close()
            self.dropped_headers += reading.dropped_headers
            # Headers came back, the body did not finish in time: an answer, cut short.
            self.truncated += reading.status is not None
            return reading.partial(classify(exc))
        self.dropped_headers += reading.dropped_headers
        self.truncated += reading.truncated
        if not reading.keep_alive:
            self.close()
        return resp
