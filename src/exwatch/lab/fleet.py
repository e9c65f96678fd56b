"""The running fleet: one asyncio process serving every emulated server on its own loopback socket.

Each server gets a listening socket (``asyncio.start_server``); connections are handled as streams so
that the hostile servers can trickle, stall, reset or send garbage. TLS is started per connection
(``StreamWriter.start_tls``) with the server's own lazily made context, which also lets the
``bad_tls`` server answer the ClientHello with a malformed record. Requests are parsed by
``exwatch.lab.http`` and answered by ``exwatch.lab.exchange``; IO lives here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import resource
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exwatch.errors import ConfigError, InputError
from exwatch.lab import _catalogue
from exwatch.lab.exchange import (
    ServerState,
    many_headers_response,
    redirect_loop_response,
    respond,
)
from exwatch.lab.http import HttpParseError, Request, Response, parse_request
from exwatch.lab.logs import HttpProxyLogWriter
from exwatch.lab.rewrite import RuleSet, load_rules, mitigation_rules, mitigation_web_config
from exwatch.lab.spec import ServerSpec, check_unique, validate_spec
from exwatch.lab.tls import FleetCA
from exwatch.lab.truth import truth, truth_passive

IDLE_TIMEOUT = 30.0  # keep-alive idle time before the server closes, as IIS's default 120 s, shorter
HANDSHAKE_TIMEOUT = 10.0
HOSTILE_CAP = 600.0  # a hostile server gives up on a client after this many seconds
GARBAGE = b"\x00\x17\xfe\xfeSSH-1.99-\xff\xfe garbage \x9c\x00\r\r\n\x1b[2J" * 8


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _Server:
    """One emulated server: its spec, live state, socket and counters."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.state = ServerState(spec.name, spec.address, spec.variant, None, scheme=spec.scheme)
        self.state.set_build(spec.build)
        self.server: asyncio.base_events.Server | None = None
        self.requests = 0
        self._stamp: tuple[int, int, int] | None = None
        self._loaded = False
        if spec.web_config is None:
            self.state.rules = _rules_for(tuple(spec.mitigations))

    def refresh_rules(self) -> None:
        """Re-read the web.config when it changed (mtime, size or inode: mtimes are coarse) or vanished."""
        path = self.spec.web_config
        if path is None:
            return
        try:
            st = os.stat(path)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        except OSError:
            return
        if stamp != self._stamp or self._stamp is None and not self._loaded:
            self._stamp = stamp
            self._loaded = True
            try:
                self.state.rules = load_rules(str(path))
            except ConfigError as exc:
                self.state.rules = RuleSet(error=str(exc))


_RULES_CACHE: dict[tuple[str, ...], RuleSet] = {}


def _rules_for(mitigations: tuple[str, ...]) -> RuleSet:
    key = tuple(sorted(set(mitigations)))
    found = _RULES_CACHE.get(key)
    if found is None:
        found = _RULES_CACHE[key] = mitigation_rules(key)
    return found


@dataclasses.dataclass(frozen=True)
class ServerTruth:
    """One server of a running fleet as the manifest lists it: where it answers, what it runs, and its
    ground truth per wave (``truth``: the actual state; ``truth_passive``: what a passive scan can see)."""

    address: str
    port: int
    scheme: str
    name: str
    product: str | None
    build: str | None
    mitigations: tuple[str, ...]
    variant: str
    web_config: str | None
    fqdn: str
    fe_server: str | None
    truth: dict[str, str]
    truth_passive: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        """The manifest's JSON form (field order kept)."""
        out = dataclasses.asdict(self)
        out["mitigations"] = list(self.mitigations)
        return out


class LabFleet:
    """A fleet of emulated servers in one event loop. Use ``async with LabFleet(specs) as fleet``."""

    def __init__(
        self,
        specs: list[ServerSpec],
        log_dir: Path | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        for spec in specs:
            validate_spec(spec)
        check_unique(specs)
        self.specs = specs
        self.log_dir = log_dir
        self.clock = clock or (lambda: datetime.now(UTC))
        self._servers = {s.name: _Server(s) for s in specs}
        self._tls_dir = tls_dir
        self.ca: FleetCA | None = None
        self._logs = HttpProxyLogWriter(log_dir) if log_dir is not None else None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counts: dict[str, int] = {}
        self._started = False
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop serving the fleet, once started

    async def __aenter__(self) -> LabFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ca_path(self) -> Path:
        """The fleet CA certificate (PEM), for clients that verify."""
        if self.ca is None:
            raise RuntimeError("the fleet is not started")
        return self.ca.ca_path

    async def start(self) -> None:
        """Open every listener; returns once all of them accept connections."""
        if self._started:
            return
        raise_nofile_limit()
        self.loop = asyncio.get_running_loop()
        self.ca = FleetCA(self._tls_dir)
        for spec in self.specs:
            if spec.web_config is not None and not spec.web_config.parent.exists():
                spec.web_config.parent.mkdir(parents=True, exist_ok=True)
        try:
            for srv in self._servers.values():
                if srv.spec.variant == "refuse":
                    continue  # no listener: the kernel refuses the connection
                srv.server = await asyncio.start_server(
                    functools.partial(self._spawn, srv),
                    host=srv.spec.address,
                    port=srv.spec.port,
                    reuse_address=True,
                    backlog=256,
                    limit=256 * 1024,
                )
        except OSError as exc:
            await self.stop()
            raise InputError(f"cannot listen on {srv.spec.address}:{srv.spec.port}: {exc.strerror}") from exc
        self._started = True

    async def stop(self) -> None:
        """Close every listener and connection."""
        for srv in self._servers.values():
            if srv.server is not None:
                srv.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for srv in self._servers.values():
            if srv.server is not None:
                with contextlib.suppress(Exception):
                    await srv.server.wait_closed()
                srv.server = None
        if self._logs is not None:
            self._logs.close()
        if self.ca is not None:
            self.ca.close()
        self._started = False

    # --- the live state -----------------------------------------------------------------------------

    def update(self, name: str, build: str | None = None, mitigations: list[str] | None = None) -> None:
        """Change a server's build and/or mitigations; the next request sees the change.

        A server whose mitigation state comes from a web.config gets that file rewritten.
        """
        srv = self._servers.get(name)
        if srv is None:
            raise InputError(f"no server named {name!r} in the fleet")
        # Build the new state aside and swap it in with one assignment: a request being answered in
        # the loop thread sees either the old state or the new one, never half of each.
        state = dataclasses.replace(srv.state)
        if build is not None:
            canonical = _catalogue.canonical(build)
            srv.spec.build = canonical
            srv.spec.product = _catalogue.product_of(canonical)
            state.set_build(canonical)
        if mitigations is not None:
            bad = [m for m in mitigations if m not in _catalogue.PROBE_CVE]
            if bad:
                raise InputError(f"unknown mitigation {bad[0]!r}")
            srv.spec.mitigations = sorted(set(mitigations))
            if srv.spec.web_config is None:
                state.rules = _rules_for(tuple(srv.spec.mitigations))
        srv.state = state
        if mitigations is not None and srv.spec.web_config is not None:
            srv.spec.web_config.write_text(mitigation_web_config(srv.spec.mitigations), encoding="utf-8")
            srv.refresh_rules()

    def request_counts(self) -> dict[str, int]:
        """Requests (and request-less connections) received per address."""
        return dict(self._counts)

    def servers(self) -> list[ServerTruth]:
        """The ground truth of every server as it stands now."""
        out = []
        for srv in self._servers.values():
            spec = srv.spec
            srv.refresh_rules()
            out.append(
                ServerTruth(
                    address=spec.address,
                    port=spec.port,
                    scheme=spec.scheme,
                    name=spec.name,
                    product=spec.product if spec.is_exchange else None,
                    build=spec.build,
                    mitigations=tuple(spec.mitigations),
                    variant=spec.variant,
                    web_config=str(spec.web_config) if spec.web_config else None,
                    fqdn=srv.state.fqdn,  # named by the server's certificate
                    fe_server=srv.state.netbios
                    if spec.is_exchange and not (spec.build or "").startswith("14.")
                    else None,
                    truth=truth(spec, srv.state.rules if spec.is_exchange else None),
                    truth_passive=truth_passive(spec),
                )
            )
        return out

    def manifest(self) -> dict[str, object]:
        """The manifest file's JSON document: the fleet's CA and the ground truth of every server."""
        return {
            "ca_cert": str(self.ca.ca_path) if self.ca else None,
            "ca_pem": self.ca.ca_pem.decode("ascii") if self.ca else None,
            "servers": [s.to_dict() for s in self.servers()],
        }

    # --- connections ----------------------------------------------------------------------------------

    def _spawn(self, srv: _Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._connection(srv, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count(self, srv: _Server) -> None:
        self._counts[srv.spec.address] = self._counts.get(srv.spec.address, 0) + 1

    async def _connection(
        self, srv: _Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        variant = srv.spec.variant
        try:
            if variant == "reset":
                self._count(srv)
                _reset(writer)
                return
            if variant == "bad_tls":
                self._count(srv)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(4096), 5.0)
                # A handshake record whose length runs past what follows, then a close.
                writer.write(b"\x16\x03\x03\x00\x40\x02\x00\x00\x46\x03\x03" + b"\xee" * 12)
                await writer.drain()
                _reset(writer)
                return
            if srv.spec.scheme == "https":
                assert self.ca is not None
                ctx = self.ca.context_for(srv.spec.name, srv.spec.address, srv.state.fqdn)
                try:
                    await writer.start_tls(ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
                    del exc
                    self._count(srv)
                    writer.transport.abort()
                    return
                except Exception:  # ssl.SSLError and friends: a client that fails the handshake
                    self._count(srv)
                    writer.transport.abort()
                    return
            await self._serve_http(srv, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
            if not writer.transport.is_closing():
                writer.transport.close()

    async def _serve_http(
        self, srv: _Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        buf = bytearray()
        seen = False
        while True:
            try:
                req, used = parse_request(buf)
            except HttpParseError:
                self._count(srv)
                writer.write(
                    Response(400, [("Server", "Microsoft-HTTPAPI/2.0")], b"Bad Request", close=True).encode()
                )
                await writer.drain()
                return
            if req is None:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
                except TimeoutError:
                    chunk = b""
                if not chunk:
                    if not seen and buf:
                        self._count(srv)
                    return
                buf += chunk
                continue
            del buf[:used]
            seen = True
            self._count(srv)
            srv.requests += 1
            keep = await self._answer(srv, req, reader, writer)
            if not keep or not req.keep_alive:
                return

    async def _answer(
        self, srv: _Server, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        variant = srv.spec.variant
        host = req.headers.get("host") or srv.spec.address
        if variant == "silent":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_drain_reader(reader), HOSTILE_CAP)
            return False
        if variant == "garbage":
            writer.write(GARBAGE)
            await writer.drain()
            return False
        if variant == "tarpit":
            data = Response(
                200,
                [("Server", "Microsoft-IIS/10.0"), ("Content-Type", "text/html")],
                b"<html>" + b" " * 4096,
            ).encode()
            await _trickle(writer, data, 1.0)
            return False
        if variant == "endless_body":
            writer.write(
                b"HTTP/1.1 200 OK\r\nServer: Microsoft-IIS/10.0\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"
            )
            await _endless(writer)
            return False
        if variant == "many_headers":
            resp = many_headers_response()
        elif variant == "redirect_loop":
            resp = redirect_loop_response(req, f"{srv.spec.scheme}://{host}")
        else:
            srv.refresh_rules()
            resp, record = respond(srv.state, req)
            if record is not None and self._logs is not None and srv.state.build is not None:
                peer = writer.get_extra_info("peername")
                client = peer[0] if isinstance(peer, tuple) else ""
                self._logs.write(
                    srv.spec.name,
                    srv.state.build,
                    client,
                    srv.state.netbios,
                    record,
                    self.clock(),
                    resp.header("request-id") or "",
                )
        if resp.abort:
            _reset(writer)
            return False
        writer.write(resp.encode(head_only=req.method == "HEAD"))
        await writer.drain()
        return not resp.close


async def _drain_reader(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def _trickle(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HOSTILE_CAP
    for i in range(len(data)):
        if writer.transport.is_closing() or loop.time() > deadline:
            return
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(interval)


async def _endless(writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HOSTILE_CAP
    chunk = b"<p>" + b"endless " * 2047 + b"</p>\n"
    while not writer.transport.is_closing() and loop.time() < deadline:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.005)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), as IIS's AbortRequest does, no status line."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.contextmanager
def run_fleet_in_thread(
    specs: list[ServerSpec],
    log_dir: Path | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    tls_dir: Path | None = None,
    start_timeout: float = 60.0,
) -> Iterator[LabFleet]:
    """Run a LabFleet in a background thread with its own event loop; yields it once it accepts."""
    fleet = LabFleet(specs, log_dir, clock=clock, tls_dir=tls_dir)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    stop_event: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop_event
        stop_event = asyncio.Event()
        try:
            await fleet.start()
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        try:
            await stop_event.wait()
        finally:
            await fleet.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="exwatch-lab", daemon=True)
    thread.start()
    if not started.wait(start_timeout):
        raise RuntimeError("the lab fleet did not start in time")
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield fleet
    finally:
        assert stop_event is not None
        loop.call_soon_threadsafe(stop_event.set)
        thread.join(60)
        loop.close()
