"""``exwatch collect script``: the PowerShell collector, from the template and the families data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

from exwatch._version import __version__
from exwatch.collect.families import data_text, families
from exwatch.collect.manifest import format_time

TEMPLATE = "data/collect.ps1"


def template() -> str:
    return resources.files("exwatch.collect").joinpath(TEMPLATE).read_text(encoding="utf-8")


def _ps_single(text: str) -> str:
    """Text for inside a PowerShell single-quoted string (a quote is doubled; nothing else is special)."""
    return text.replace("'", "''")


def generate(*, out_file: str = "", since: datetime | None = None, max_bytes: int | None = None) -> str:
    """The collector script with its defaults set; ASCII only, CRLF line ends (Windows PowerShell 5.1 reads
    a file without a byte order mark in the ANSI code page)."""
    families()  # the data must load before it is embedded
    data = json.dumps(json.loads(data_text()), ensure_ascii=True, separators=(",", ":"))
    if "'@" in data:
        raise ValueError("the families data cannot hold '@ (it ends the here-string)")
    since_text = format_time(since.astimezone(UTC)) if since else ""
    out = (
        template()
        .replace("__EXWATCH_FAMILIES_JSON__", data)
        .replace("__EXWATCH_OUT_FILE__", _ps_single(out_file))
        .replace("__EXWATCH_SINCE__", _ps_single(since_text))
        .replace("__EXWATCH_MAX_BYTES__", str(int(max_bytes or 0)))
        .replace("__EXWATCH_VERSION__", _ps_single(__version__))
    )
    if "__EXWATCH_" in out:
        raise ValueError("a placeholder of the script template was left unset")
    out.encode("ascii")
    return out.replace("\r\n", "\n").replace("\n", "\r\n")


def embedded_families(script: str) -> object:
    """The families data a generated script carries (for the tests and for ``collect script --check``)."""
    start = script.index("$FamiliesJson = @'") + len("$FamiliesJson = @'")
    end = script.index("'@", start)
    return json.loads(script[start:end].strip())
