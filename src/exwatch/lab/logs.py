"""HttpProxy log files as an Exchange front end writes them (log_formats.md section 2)."""

from __future__ import annotations

import csv
import io
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import TextIO

from exwatch.lab.exchange import LogRecord, long_build
from exwatch.logformats import HTTPPROXY_FIELDS

FIELDS = HTTPPROXY_FIELDS


def iso_ms(when: datetime) -> str:
    """2021-03-07T10:00:00.123Z"""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def format_line(values: dict[str, str]) -> str:
    """One CSV data line in field order (values with commas or quotes are quoted, as CSV does)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([values.get(f, "") for f in FIELDS])
    return buf.getvalue()


def header_lines(build: str, when: datetime) -> str:
    """The five '#' lines that open every HttpProxy log file."""
    return (
        "#Software: Microsoft Exchange Server\n"
        f"#Version: {long_build(build)}\n"
        "#Log-type: HttpProxy Logs\n"
        f"#Date: {iso_ms(when)}\n"
        f"#Fields: {','.join(FIELDS)}\n"
    )


class HttpProxyLogWriter:
    """Appends lines to ``<root>/<server>/Logging/HttpProxy/<Protocol>/HttpProxy_YYYYMMDDHH-1.LOG``."""

    def __init__(self, root: Path, max_open: int = 128) -> None:
        self.root = root
        self.max_open = max_open
        self._open: OrderedDict[Path, TextIO] = OrderedDict()

    def path_for(self, server: str, protocol: str, when: datetime) -> Path:
        """Where a line of this server, protocol and hour goes."""
        return self.root / server / "Logging" / "HttpProxy" / protocol / f"HttpProxy_{when:%Y%m%d%H}-1.LOG"

    def write(
        self,
        server: str,
        build: str,
        client: str,
        fe: str,
        record: LogRecord,
        when: datetime,
        request_id: str,
    ) -> Path:
        """Write one line (and the header lines first when the file is new)."""
        path = self.path_for(server, record.protocol, when)
        fh = self._open.get(path)
        if fh is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            fh = path.open("a", encoding="utf-8", newline="")
            if new:
                fh.write(header_lines(build, when))
            self._open[path] = fh
            if len(self._open) > self.max_open:
                _, old = self._open.popitem(last=False)
                old.close()
        else:
            self._open.move_to_end(path)
        parts = long_build(build).split(".")
        values = {
            "DateTime": iso_ms(when),
            "RequestId": request_id,
            "MajorVersion": str(int(parts[0])),
            "MinorVersion": str(int(parts[1])),
            "BuildVersion": str(int(parts[2])),
            "RevisionVersion": str(int(parts[3])),
            "ClientIpAddress": client,
            "ServerHostName": fe,
            **record.fields,
        }
        fh.write(format_line(values))
        fh.flush()
        return path

    def close(self) -> None:
        """Close every open file."""
        for fh in self._open.values():
            fh.close()
        self._open.clear()
