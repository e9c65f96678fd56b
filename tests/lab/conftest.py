"""Fixtures of the lab tests: a raw HTTP(S) client that reports aborts instead of hiding them."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from exwatch.lab import ServerSpec

PROXYLOGON_COOKIE = (
    "X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; "
    "X-BEResource=localhost/owa/auth/logon.aspx?~3;"
)


@dataclass
class Answer:
    """What came back: status None means the connection ended before any status line."""

    status: int | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    error: str | None = None
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fetch(
    spec: ServerSpec,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    timeout: float = 3.0,
    max_bytes: int = 2_000_000,
) -> Answer:
    """One request over a fresh connection; reads to the end (Connection: close)."""
    raw = b""
    try:
        sock = socket.create_connection((spec.address, spec.port), timeout=timeout)
    except OSError as exc:
        return Answer(None, error=f"connect: {type(exc).__name__}")
    try:
        conn: socket.socket = sock
        if spec.scheme == "https":
            conn = client_context().wrap_socket(sock, server_hostname=None)
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {spec.address}",
            "Connection: close",
            "User-Agent: exwatch-lab-test",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + timeout
        while len(raw) < max_bytes and time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            raw += chunk
    except (OSError, ssl.SSLError) as exc:
        if not raw:
            return Answer(None, error=type(exc).__name__)
    finally:
        sock.close()
    return parse_answer(raw)


def parse_answer(raw: bytes) -> Answer:
    if not raw.startswith(b"HTTP/1."):
        return Answer(None, error="no status line" if not raw else "not http", raw=raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return Answer(status, headers, body, raw=raw)


@pytest.fixture
def http() -> Callable[..., Answer]:
    return fetch
