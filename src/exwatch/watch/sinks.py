"""Where alerts go: webhooks, syslog (RFC 5424 over UDP or TCP) and JSONL files, each with a spool.

    AlertSink (Protocol)    send(events) delivers a batch or raises SinkError(sent=n)
    ├── WebhookSink         http(s)://...  POST JSON: one event object, or {"events": [...]} for several;
    │                       retries with exponential backoff on connection errors, 429 and 5xx
    ├── SyslogSink          syslog+udp://HOST:PORT (one datagram per event),
    │                       syslog+tcp://HOST:PORT (RFC 6587 octet counting, one frame per event)
    └── FileSink            file:///path.jsonl (one JSON line per event, fsync'd)

A sink that fails after its retries keeps the events in a bounded on-disk spool (JSON lines, one file
per sink); the next round sends the spool first, in order.  The spool drops its oldest events beyond
its bound and says how many.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from exwatch import __version__
from exwatch.config import mask_url
from exwatch.errors import InputError
from exwatch.watch.model import SEVERITY, Alert

BATCH = 500  # events per webhook POST
FACILITY = 13  # RFC 5424 6.2.1: 13 is "log audit"
SD_ID = "exwatch@32473"  # 32473 is the private enterprise number reserved for examples (RFC 5612)
SD_FIELDS = ("kind", "host", "address", "port", "wave", "state", "previous", "build", "scan", "id")


class SinkError(Exception):
    """A sink did not take a batch; ``sent`` events of it (from the start) were taken."""

    def __init__(self, message: str, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


class AlertSink(Protocol):
    """What the watch needs from a sink."""

    url: str

    def send(self, events: Sequence[Alert]) -> None: ...


def sink_key(url: str) -> str:
    """A short stable key for a sink URL (the delivery log and spool file name; no secret in it)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


class WebhookSink:
    """POST JSON to an HTTP(S) URL."""

    def __init__(self, url: str, *, retries: int = 3, backoff: float = 0.5, timeout: float = 5.0) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"exwatch/{__version__}"},
        )
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    resp.read()
                    return
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    raise SinkError(f"{mask_url(self.url)} answered {exc.code}") from exc
                problem = f"answered {exc.code}"
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                problem = str(getattr(exc, "reason", exc))
            if attempt < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise SinkError(f"{mask_url(self.url)}: {problem} (after {self.retries + 1} attempts)")

    def send(self, events: Sequence[Alert]) -> None:
        sent = 0
        for start in range(0, len(events), BATCH):
            chunk = [e.to_dict() for e in events[start : start + BATCH]]
            payload: object = chunk[0] if len(chunk) == 1 else {"events": chunk}
            try:
                self._post(json.dumps(payload, default=str, ensure_ascii=False).encode("utf-8"))
            except SinkError as exc:
                raise SinkError(str(exc), sent=sent) from exc
            sent += len(chunk)


def _sd_value(value: Any) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' are escaped with a backslash inside PARAM-VALUE.
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(alert: Alert, *, hostname: str | None = None, procid: int | None = None) -> bytes:
    """One RFC 5424 message for one alert: header, one SD-ELEMENT with the fields, the JSON as MSG."""
    event = alert.to_dict()
    pri = FACILITY * 8 + SEVERITY.get(str(event.get("kind")), 5)
    stamp = str(event.get("time") or datetime.now(UTC).isoformat())
    try:
        stamp = (
            datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            .astimezone(UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )
    except ValueError:
        stamp = "-"
    host = (hostname or socket.gethostname() or "-")[:255].replace(" ", "_")
    params = " ".join(
        f'{name}="{_sd_value(event[name])}"' for name in SD_FIELDS if event.get(name) not in (None, "")
    )
    msgid = str(event.get("kind") or "-")[:32]
    header = f"<{pri}>1 {stamp} {host} exwatch {procid if procid is not None else os.getpid()} {msgid}"
    body = json.dumps(event, default=str, ensure_ascii=False, sort_keys=True)
    return f"{header} [{SD_ID} {params}] ".encode() + b"\xef\xbb\xbf" + body.encode("utf-8")


class SyslogSink:
    """RFC 5424 messages to a syslog receiver over UDP or TCP."""

    def __init__(self, url: str, transport: str, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.url = url
        self.transport = transport
        self.host = host
        self.port = port
        self.timeout = timeout

    def send(self, events: Sequence[Alert]) -> None:
        messages = [syslog_message(e) for e in events]
        sent = 0
        try:
            infos = socket.getaddrinfo(
                self.host,
                self.port,
                type=socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM,
            )
            family, kind, proto, _, address = infos[0]
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(self.timeout)
                if self.transport == "udp":
                    for msg in messages:
                        sock.sendto(msg, address)
                        sent += 1
                    return
                sock.connect(address)
                for msg in messages:
                    # RFC 6587 3.4.1 octet counting: "MSG-LEN SP SYSLOG-MSG".
                    sock.sendall(str(len(msg)).encode() + b" " + msg)
                    sent += 1
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise SinkError(f"{self.url}: {exc.strerror or exc}", sent=sent) from exc


# How much of a file sink's end is read for the ids already written (a restart resends at most the
# batches of the last round, which sit at the end).
FILE_TAIL_BYTES = 16 << 20
FILE_IDS_KEPT = 100_000  # the newest ids remembered while the watch runs (bounded memory)


class FileSink:
    """One JSON line per event appended to a file (created with its folder).

    A file is the one receiver exwatch can read back, so it closes the window a ``kill -9`` leaves
    (the batch written, the store not told yet: the restart sends it again): an event whose ``id`` is
    already among the file's last lines is not written twice. A last line cut by a kill is ended
    first, so the next event starts a line of its own."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self._written: dict[str, None] | None = None  # insertion-ordered: the oldest is dropped first

    def _tail(self) -> tuple[dict[str, None], bool]:
        """The ids in the file's last FILE_TAIL_BYTES, and whether its last line is cut."""
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - FILE_TAIL_BYTES))
                data = fh.read()
        except FileNotFoundError:
            return {}, False
        ids: dict[str, None] = {}
        for line in data.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a cut line, or the first, partial line of the tail
            if isinstance(event, dict) and isinstance(event.get("id"), str):
                ids[event["id"]] = None
        while len(ids) > FILE_IDS_KEPT:
            del ids[next(iter(ids))]
        return ids, bool(data) and not data.endswith(b"\n")

    def send(self, events: Sequence[Alert]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut = False
            if self._written is None:
                self._written, cut = self._tail()
            written = self._written
            with self.path.open("a", encoding="utf-8") as fh:
                if cut:
                    fh.write("\n")
                for e in events:
                    event = e.to_dict()
                    if event["id"] in written:
                        continue
                    fh.write(json.dumps(event, default=str, ensure_ascii=False, sort_keys=True) + "\n")
                    written[str(event["id"])] = None
                    if len(written) > FILE_IDS_KEPT:
                        del written[next(iter(written))]
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc


def open_sink(url: str, *, retries: int = 3, backoff: float = 0.5, timeout: float = 5.0) -> AlertSink:
    """The sink for an ``--alert`` URL; anything else is an InputError naming the accepted forms."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise InputError(f"--alert {mask_url(url)!r}: a webhook URL needs a host")
        return WebhookSink(url, retries=retries, backoff=backoff, timeout=timeout)
    if scheme in ("syslog+udp", "syslog+tcp", "syslog"):
        try:
            port = parts.port or 514
        except ValueError as exc:
            raise InputError(f"--alert {url!r}: bad port") from exc
        if not parts.hostname:
            raise InputError(f"--alert {url!r}: expected syslog+udp://HOST:PORT or syslog+tcp://HOST:PORT")
        transport = "tcp" if scheme == "syslog+tcp" else "udp"
        return SyslogSink(url, transport, parts.hostname, port, timeout=timeout)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise InputError(f"--alert {url!r}: expected file:///absolute/path.jsonl")
        return FileSink(url, Path(unquote(parts.path)))
    raise InputError(
        f"--alert {mask_url(url)!r}: expected http(s)://..., syslog+udp://HOST:PORT, "
        "syslog+tcp://HOST:PORT or file:///path.jsonl"
    )


@dataclass
class Spool:
    """A sink's bounded on-disk queue of alerts it did not take (JSON lines, oldest first)."""

    path: Path
    limit: int = 10_000
    dropped: int = 0

    def load(self) -> list[Alert]:
        """The spooled alerts (a damaged line is skipped: the spool is ours, never evidence)."""
        if not self.path.exists():
            return []
        out = []
        with self.path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    event = json.loads(line)
                    if isinstance(event, dict):
                        out.append(Alert.from_dict(event))
                except (ValueError, TypeError):
                    continue
        return out

    def replace(self, events: Sequence[Alert]) -> None:
        """Keep exactly these alerts (at most ``limit``, the newest), written atomically."""
        seen: set[str] = set()
        unique = []
        for e in events:
            key = e.id
            if key in seen:
                continue
            seen.add(key)
            unique.append(e)
        if len(unique) > self.limit:
            self.dropped += len(unique) - self.limit
            unique = unique[-self.limit :]
        if not unique:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for e in unique:
                fh.write(json.dumps(e.to_dict(), default=str, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
