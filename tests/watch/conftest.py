"""Real loopback receivers for the watch tests: a webhook (http.server), syslog over UDP and TCP, and
lab servers that can be started and stopped one by one (addresses 127.78.0.0/16)."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from exwatch.lab import run_fleet_in_thread
from exwatch.lab.spec import ServerSpec

HTTPS_PORT = 18443


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Webhook:
    """A webhook receiver on 127.0.0.1 that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[dict[str, Any]] = []
        self.posts = 0
        self.arrivals: list[float] = []
        self.fail_next = 0  # answer 500 to this many requests
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    owner.posts += 1
                    if owner.fail_next:
                        owner.fail_next -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    doc = json.loads(body)
                    events = doc["events"] if isinstance(doc, dict) and "events" in doc else [doc]
                    owner.events.extend(events)
                    owner.arrivals.extend(time.monotonic() for _ in events)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Syslog:
    """A syslog listener: UDP datagrams or TCP with RFC 6587 octet counting."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.messages: list[bytes] = []
        lock = threading.Lock()
        owner = self
        if transport == "udp":

            class UdpHandler(socketserver.BaseRequestHandler):
                def handle(self) -> None:
                    with lock:
                        owner.messages.append(self.request[0])

            self.server: socketserver.BaseServer = socketserver.ThreadingUDPServer(
                ("127.0.0.1", 0), UdpHandler
            )
        else:

            class TcpHandler(socketserver.StreamRequestHandler):
                def handle(self) -> None:
                    while True:
                        length = b""
                        while (ch := self.rfile.read(1)) not in (b" ", b""):
                            length += ch
                        if not length:
                            return
                        msg = self.rfile.read(int(length))
                        with lock:
                            owner.messages.append(msg)

            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), TcpHandler)
        self.server.daemon_threads = True  # type: ignore[attr-defined]
        self.port = int(self.server.server_address[1])  # type: ignore[index]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"syslog+{self.transport}://127.0.0.1:{self.port}"

    def events(self) -> list[dict[str, Any]]:
        """The JSON body of each message (after the BOM)."""
        return [json.loads(m.split(b"\xef\xbb\xbf", 1)[1]) for m in self.messages]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.start()
    yield hook
    hook.stop()


@pytest.fixture
def syslog_udp() -> Iterator[Syslog]:
    s = Syslog("udp")
    yield s
    s.close()


@pytest.fixture
def syslog_tcp() -> Iterator[Syslog]:
    s = Syslog("tcp")
    yield s
    s.close()


class LabServers:
    """Emulated Exchange servers, each in its own fleet so that one can disappear and come back."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[contextlib.ExitStack, Any]] = {}
        self.specs: dict[str, ServerSpec] = {}

    def add(self, name: str, address: str, build: str, mitigations: list[str] | None = None) -> None:
        self.specs[name] = ServerSpec(
            name, address, HTTPS_PORT, build=build, mitigations=list(mitigations or [])
        )

    def start(self, name: str) -> None:
        stack = contextlib.ExitStack()
        fleet = stack.enter_context(run_fleet_in_thread([self.specs[name]]))
        self._running[name] = (stack, fleet)

    def stop(self, name: str) -> None:
        stack, fleet = self._running.pop(name)
        spec = self.specs[name]
        spec.build = fleet.manifest()["servers"][0]["build"]
        spec.mitigations = list(fleet.manifest()["servers"][0]["mitigations"])
        stack.close()

    def update(self, name: str, **kw: Any) -> None:
        self._running[name][1].update(name, **kw)

    def close(self) -> None:
        for name in list(self._running):
            self.stop(name)


@pytest.fixture
def lab() -> Iterator[LabServers]:
    servers = LabServers()
    yield servers
    servers.close()


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()
