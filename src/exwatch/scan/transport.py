"""The seam between the scan's policy and the network: a :class:`Transport` opens a :class:`Channel` to one
host, and a channel sends requests and returns responses.

:class:`HttpTransport` is the real one (sockets, TLS, :mod:`exwatch.scan._http`). :class:`FakeTransport`
answers from a plain function, as httpx's ``MockTransport`` does, so the scan's policy (retries,
budgets, limits, verdicts, exit codes) can be tested without a socket::

    def handler(request: FakeRequest) -> ProbeResponse | bytes:
        if request.path.startswith("/owa"):
            return b"HTTP/1.1 302 Found\\r\\nLocation: /owa/auth/logon.aspx\\r\\nContent-Length: 0\\r\\n\\r\\n"
        return ProbeResponse(404, {}, b"")

The handler may return a :class:`ProbeResponse`, or raw response bytes that go through the same reader
and caps as a socket's; it may be a coroutine function (``await asyncio.sleep(60)`` makes a server that
never answers); raising :class:`FetchError` is a connection that fails (``refused``, ``tls``, ...), raising
any other exception a failure after the request was sent (classified as the socket client would).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from exwatch.scan._http import (
    LINE_LIMIT,
    Connection,
    FetchError,
    Limits,
    Reading,
    classify,
    client_tls_context,
    read_response,
)
from exwatch.scan.probes import ProbeRequest, ProbeResponse


@dataclass(frozen=True)
class Endpoint:
    """Where a channel goes: an address already checked against the scope, and how to speak to it."""

    address: str
    port: int
    scheme: str
    host_header: str
    server_name: str | None = None


class Channel(Protocol):
    """One host's connection, as the scan uses it."""

    address: str
    peer_cert: bytes | None
    requests: int
    truncated: int
    dropped_headers: int

    async def fetch(self, req: ProbeRequest, *, reuse: bool = True) -> ProbeResponse:
        """One request; FetchError if the connection fails, ``status=None`` if no answer came back."""
        ...

    def close(self) -> None:
        """Drop the connection."""
        ...


class Transport(Protocol):
    """Opens channels; one transport serves a whole scan."""

    def open(self, endpoint: Endpoint) -> Channel:
        """A channel to ``endpoint`` (connected lazily, on its first request)."""
        ...


class HttpTransport:
    """The network: one keep-alive connection per host, TLS 1.2 first with a 1.3 fallback."""

    def __init__(self, *, timeout: float = 5.0, limits: Limits | None = None) -> None:
        self.timeout = timeout
        self.limits = limits or Limits()
        self.tls = client_tls_context()
        self.tls13 = client_tls_context(tls13=True)

    def open(self, endpoint: Endpoint) -> Channel:
        return Connection(
            endpoint.address,
            endpoint.port,
            endpoint.scheme,
            host_header=endpoint.host_header,
            server_name=endpoint.server_name,
            tls=self.tls,
            tls_fallback=self.tls13,
            timeout=self.timeout,
            limits=self.limits,
        )


@dataclass(frozen=True)
class FakeRequest:
    """What a :class:`FakeTransport` handler sees: the endpoint, the request, and whether the
    connection was reused (False for a new connection, e.g. a retry)."""

    endpoint: Endpoint
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    reuse: bool

    @property
    def address(self) -> str:
        return self.endpoint.address


FakeAnswer = ProbeResponse | bytes
Handler = Callable[[FakeRequest], FakeAnswer | Awaitable[FakeAnswer]]


@dataclass
class FakeTransport:
    """A transport whose answers come from ``handler`` (no socket); ``requests`` records every request."""

    handler: Handler
    timeout: float = 5.0
    limits: Limits = field(default_factory=Limits)
    peer_cert: bytes | None = None
    requests: list[FakeRequest] = field(default_factory=list)

    def open(self, endpoint: Endpoint) -> Channel:
        return FakeChannel(self, endpoint)


class FakeChannel:
    """A :class:`Channel` of a :class:`FakeTransport`; counts as :class:`Connection` does."""

    def __init__(self, transport: FakeTransport, endpoint: Endpoint) -> None:
        self.transport = transport
        self.endpoint = endpoint
        self.address = endpoint.address
        self.peer_cert: bytes | None = None
        self.requests = 0
        self.truncated = 0
        self.dropped_headers = 0

    async def fetch(self, req: ProbeRequest, *, reuse: bool = True) -> ProbeResponse:
        fake = FakeRequest(self.endpoint, req.method, req.path, dict(req.headers), req.body, reuse)
        self.transport.requests.append(fake)
        self.requests += 1
        reading = Reading()
        try:
            async with asyncio.timeout(self.transport.timeout):
                answer = self.transport.handler(fake)
                if inspect.isawaitable(answer):
                    answer = await answer
                if isinstance(answer, bytes):
                    answer = await self._parse(answer, req.method, reading)
        except FetchError:
            raise  # the connection failed: as Connection.connect raises it
        except Exception as exc:
            self.peer_cert = self.peer_cert or self.transport.peer_cert
            self.dropped_headers += reading.dropped_headers
            self.truncated += reading.status is not None
            return reading.partial(classify(exc))
        self.peer_cert = self.peer_cert or self.transport.peer_cert
        self.dropped_headers += reading.dropped_headers
        self.truncated += reading.truncated
        return answer

    async def _parse(self, raw: bytes, method: str, reading: Reading) -> ProbeResponse:
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_response(reader, method, self.transport.limits, reading)

    def close(self) -> None:
        pass


__all__ = [
    "Channel",
    "Endpoint",
    "FakeChannel",
    "FakeRequest",
    "FakeTransport",
    "FetchError",
    "HttpTransport",
    "Transport",
]
