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
import contextlib
import ssl
from dataclasses import dataclass

from exwatch.scan.probes import ProbeOutcome, ProbeRequest, ProbeResponse, judge_probe, probe_requests
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


class FetchError(Exception):
    """A request failed; ``kind`` is the error class (refused, timeout, tls, reset, eof, protocol, dns)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def client_tls_context() -> ssl.SSLContext:
    """The one TLS context of a scan: no verification (scanners meet self-signed certificates)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1
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
    ) -> None:
        self.address = address
        self.port = port
        self.scheme = scheme
        self.host_header = host_header or address
        self.server_name = server_name
        self.tls = tls if tls is not None else (client_tls_context() if scheme == "https" else None)
        self.timeout = timeout
        self.limits = limits or Limits()
        self.peer_cert: bytes | None = None
        self.connects = 0
        self.requests = 0
        self.truncated = 0
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
                reader, writer = await asyncio.open_connection(
                    self.address,
                    self.port,
                    ssl=ssl_arg,
                    server_hostname=(self.server_name or "") if ssl_arg else None,
                    limit=LINE_LIMIT,
                    ssl_handshake_timeout=self.timeout if ssl_arg else None,
                )
        except Exception as exc:  # every failure becomes an error class
            raise FetchError(classify(exc), str(exc) or type(exc).__name__) from exc
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
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(data)
                await writer.drain()
                return await self._read_response(reader, req.method)
        except Exception as exc:
            self.close()
            return ProbeResponse(None, {}, b"", classify(exc))

    async def _read_response(self, reader: asyncio.StreamReader, method: str) -> ProbeResponse:
        limits = self.limits
        while True:
            line = await reader.readuntil(b"\n")
            status = parse_status_line(line)
            headers = Headers()
            count = 0
            while True:
                hline = await reader.readuntil(b"\n")
                if hline in (b"\r\n", b"\n"):
                    break
                count += 1
                if count > limits.max_headers:
                    raise WireError(f"more than {limits.max_headers} header lines")
                name, value = parse_header_line(hline)
                headers.add(name, value)
            if status != 100 and not (101 < status < 200):
                break  # interim responses (100 Continue, 103 Early Hints) are skipped
        framing, length = body_framing(status, method, headers)
        keep = (headers.get_ci("Connection") or "").lower() != "close"
        body = b""
        truncated = False
        cap = limits.max_body
        if framing == "length":
            assert length is not None
            want = min(length, cap)
            body = await reader.readexactly(want)
            if length > cap:
                truncated, keep = True, False
        elif framing == "chunked":
            parts: list[bytes] = []
            got = 0
            while True:
                size = parse_chunk_size(await reader.readuntil(b"\n"))
                if size == 0:
                    while (await reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
                        pass  # trailers, ignored
                    break
                if got + size > cap:
                    parts.append(await reader.readexactly(cap - got))
                    got = cap
                    truncated, keep = True, False
                    break
                parts.append(await reader.readexactly(size))
                got += size
                await reader.readuntil(b"\n")
            body = b"".join(parts)
        elif framing == "close":
            body = await reader.read(cap)
            chunks = [body]
            got = len(body)
            while got < cap:
                more = await reader.read(cap - got)
                if not more:
                    break
                chunks.append(more)
                got += len(more)
            body = b"".join(chunks)
            if got >= cap:
                truncated = True
            keep = False
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
