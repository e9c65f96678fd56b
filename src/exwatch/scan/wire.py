"""HTTP/1.1 on the wire, without sockets: request bytes out, status line and headers parsed in (pure).

The engine reads bytes from a stream and hands lines here; this module decides what they mean and
raises :class:`WireError` for anything that is not HTTP, so the engine can classify it as ``protocol``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from exwatch.scan.probes import ProbeRequest


class WireError(Exception):
    """The peer's bytes are not a valid HTTP/1.x response (or exceed a limit)."""


def encode_request(req: ProbeRequest, host: str, default_port: bool, port: int) -> bytes:
    """The request as bytes: keep-alive, no compression, the given Host (with the port if not default)."""
    host_value = host if default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):  # a bare IPv6 literal
        host_value = f"[{host}]" if default_port else f"[{host}]:{port}"
    lines = [f"{req.method} {req.path} HTTP/1.1", f"Host: {host_value}"]
    seen = {"host"}
    for name, value in req.headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
        seen.add(name.lower())
    if "accept-encoding" not in seen:
        lines.append("Accept-Encoding: identity")
    if "connection" not in seen:
        lines.append("Connection: keep-alive")
    if req.body or req.method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(req.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body


def parse_status_line(line: bytes) -> int:
    """The status code of ``HTTP/1.x NNN reason``; WireError otherwise."""
    text = line.rstrip(b"\r\n")
    parts = text.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise WireError(f"not an HTTP status line: {text[:60]!r}")
    status = int(parts[1])
    if status < 100:
        raise WireError(f"invalid status code {status}")
    return status


def parse_header_line(line: bytes) -> tuple[str, str]:
    """One ``Name: value`` line as text (latin-1, as HTTP/1.1 defines it); WireError otherwise."""
    text = line.rstrip(b"\r\n").decode("latin-1")
    name, sep, value = text.partition(":")
    if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
        raise WireError(f"malformed header line: {text[:60]!r}")
    return name, value.strip()


class Headers(dict[str, str]):
    """Response headers: first-seen spelling kept, repeated names joined with ``, ``.

    Add lines with :meth:`add` (it keeps the index of lower-case names that :meth:`get_ci` reads).
    """

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[str, str] = {}  # lower-case name -> the first-seen spelling

    def add(self, name: str, value: str) -> None:
        """Add a header line; a repeated name (case-insensitive) is joined to the first."""
        low = name.lower()
        key = self._names.get(low)
        if key is not None:
            self[key] = f"{self[key]}, {value}"
            return
        self._names[low] = name
        self[name] = value

    def get_ci(self, name: str) -> str | None:
        """A header value by case-insensitive name."""
        key = self._names.get(name.lower())
        return None if key is None else self[key]


def body_framing(status: int, method: str, headers: Mapping[str, str]) -> tuple[str, int | None]:
    """How the body is delimited: ("none"|"chunked"|"length"|"close", length)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
        return "none", 0
    te = lower.get("transfer-encoding", "")
    if te and "chunked" in te.lower():
        return "chunked", None
    cl = lower.get("content-length")
    if cl is not None:
        first = cl.split(",")[0].strip()
        if not first.isdigit():
            raise WireError(f"bad Content-Length {cl[:30]!r}")
        return "length", int(first)
    return "close", None


def parse_chunk_size(line: bytes) -> int:
    """The size of the next chunk from its size line (extensions ignored); WireError otherwise."""
    text = line.split(b";", 1)[0].strip()
    if not text or len(text) > 16:
        raise WireError(f"bad chunk size line {line[:30]!r}")
    try:
        return int(text, 16)
    except ValueError as exc:
        raise WireError(f"bad chunk size line {line[:30]!r}") from exc


def decode_body(body: bytes, headers: Mapping[str, str], limit: int) -> tuple[bytes, bool]:
    """Undo gzip/deflate if the server sent it anyway, never producing more than ``limit`` bytes.

    Returns (body, truncated). A decompression bomb stops at the limit; a corrupt stream keeps the raw bytes.
    """
    enc = ""
    for key, value in headers.items():
        if key.lower() == "content-encoding":
            enc = value.lower().strip()
    if enc not in ("gzip", "x-gzip", "deflate"):
        return body, False
    try:
        d = zlib.decompressobj(47 if "gzip" in enc else 15)
        out = d.decompress(body, limit)
        return out, bool(d.unconsumed_tail)
    except zlib.error:
        return body, False
