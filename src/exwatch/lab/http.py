"""A minimal HTTP/1.1 request parser and response writer for the emulator (pure, no IO).

The emulator needs byte-level control that a web framework does not give: answering with non-HTTP
garbage, trickling a response byte by byte, sending 10,000 headers, aborting a connection after the
request without any status line (what the IIS ``AbortRequest`` action does), and reproducing IIS
header order and reason phrases. So it parses requests itself: request line, headers, and a
``Content-Length`` body; anything else is a 400, as IIS would answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


class HttpParseError(Exception):
    """The bytes are not an acceptable HTTP/1.x request (answered with 400 and a close)."""


@dataclass
class Request:
    """One parsed request. Header names are lower-cased; repeated headers are joined with ', '."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        """The path part of the target (an absolute-form target is reduced to its path)."""
        target = self.target
        if target.startswith(("http://", "https://")):
            rest = target.split("://", 1)[1]
            target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return target.partition("?")[0] or "/"

    @property
    def query(self) -> str:
        """The query string, without the '?'."""
        return self.target.partition("?")[2]

    @property
    def keep_alive(self) -> bool:
        """Whether the client allows the connection to stay open after the response."""
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


def parse_request(buf: bytes | bytearray) -> tuple[Request | None, int]:
    """Parse one request from the front of ``buf``: (request, bytes consumed) or (None, 0) if incomplete."""
    end = buf.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = buf.find(b"\n\n")
        sep = 2
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise HttpParseError("request head too large")
        return None, 0
    if end > MAX_HEAD:
        raise HttpParseError("request head too large")
    head = bytes(buf[:end]).decode("latin-1")
    lines = head.replace("\r\n", "\n").split("\n")
    while lines and not lines[0]:
        lines.pop(0)  # tolerate stray CRLF between pipelined requests
    if not lines:
        raise HttpParseError("empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpParseError("bad request line")
    method, target, version = parts
    if not method.isalpha() or not target:
        raise HttpParseError("bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpParseError("bad header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    consumed = end + sep
    if "transfer-encoding" in headers:
        raise HttpParseError("chunked request bodies are not supported")
    length_text = headers.get("content-length", "0") or "0"
    if not length_text.isdigit():
        raise HttpParseError("bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise HttpParseError("request body too large")
    if len(buf) < consumed + length:
        return None, 0
    body = bytes(buf[consumed : consumed + length])
    return Request(method.upper(), target, version, headers, body), consumed + length


REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    440: "Login Timeout",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class Response:
    """A response to send, or ``abort=True`` for a dropped connection with no status line at all."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reason: str | None = None
    abort: bool = False
    close: bool = False

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive)."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    def drop(self, *names: str) -> None:
        """Remove headers by name (case-insensitive)."""
        low = {n.lower() for n in names}
        self.headers = [(k, v) for k, v in self.headers if k.lower() not in low]

    def encode(self, head_only: bool = False) -> bytes:
        """The wire bytes: status line, headers (with Content-Length), blank line, body."""
        reason = self.reason or REASONS.get(self.status, "Unknown")
        out = [f"HTTP/1.1 {self.status} {reason}\r\n"]
        has_length = False
        for name, value in self.headers:
            if name.lower() == "content-length":
                has_length = True
            out.append(f"{name}: {value}\r\n")
        if not has_length:
            out.append(f"Content-Length: {len(self.body)}\r\n")
        if self.close:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        data = "".join(out).encode("latin-1")
        return data if head_only else data + self.body


def abort() -> Response:
    """The IIS AbortRequest result: no response at all."""
    return Response(status=0, abort=True)
