"""Indicators of compromise: published web-shell hashes and paths, attacker IPs and User-Agents.

The built-in lists are copies of ``shared/reference/iocs/`` (sources in each file's first line); users add
more with ``--iocs FILE``: a STIX 2.1 bundle (read with the ``stix2`` library) or a CSV with a
``type,value`` header (type one of sha256, ip, user_agent, path).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from exwatch.errors import InputError


@dataclass
class IocSet:
    """Indicator values, normalised for matching."""

    sha256: dict[str, str] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    user_agents: dict[str, str] = field(default_factory=dict)
    exact_paths: dict[str, str] = field(default_factory=dict)
    path_regexes: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    # Indicators from the user's own files: (kind, normalised value) -> (title, description, confidence).
    # A hit on one is a finding titled from the user's file at the confidence it states (default likely).
    user: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)

    def user_hit(self, kind: str, value: str) -> tuple[str, str, str] | None:
        return self.user.get((kind, value))

    def literals(self) -> set[str]:
        """Lower-case literals a log line must hold for an IP or User-Agent indicator to match."""
        out = set(self.ips)
        for key in self.user_agents:
            pieces = [p for p in re.split(r"[\s\"',+\\]+", key) if len(p) >= 6]
            if pieces:
                out.add(max(pieces, key=len))
        return {x.lower() for x in out}


def ua_key(value: str) -> str:
    """The comparison key of a User-Agent: every ``+`` and comma becomes a space (iocs/user_agents.csv)."""
    return " ".join(value.replace("+", " ").replace(",", " ").split()).lower()


def path_key(path: str) -> str:
    """A Windows or triage path reduced to lower case, forward slashes, no drive letter."""
    p = path.replace("\\", "/").lower()
    p = re.sub(r"^[a-z]:/", "", p)
    return p.strip("/")


def _rows(text: str) -> Iterable[dict[str, str]]:
    return csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))


def _data(name: str) -> str:
    return resources.files("exwatch.hunt.rules").joinpath(f"data/iocs/{name}").read_text(encoding="utf-8")


def builtin_iocs() -> IocSet:
    """The indicator lists shipped with exwatch."""
    s = IocSet()
    for row in _rows(_data("webshell_sha256.csv")):
        s.sha256[row["sha256"].strip().lower()] = (
            row.get("name") or row.get("note") or "published web-shell hash"
        )
    for row in _rows(_data("attacker_ips.csv")):
        s.ips[row["ip"].strip()] = row.get("context", "")
    for row in _rows(_data("user_agents.csv")):
        s.user_agents[ua_key(row["match_key"])] = row["user_agent_iis"]
    for row in _rows(_data("webshell_paths.csv")):
        kind, pattern = row["pattern_type"], row["pattern"]
        if kind == "exact_path":
            s.exact_paths[path_key(pattern)] = row.get("note", "")
        elif kind == "regex" and pattern.lower().endswith((".aspx", ".aspx$", ".aspx)")):
            try:
                s.path_regexes.append(
                    (re.compile(pattern.replace("C:\\\\", ""), re.IGNORECASE), row.get("note", ""))
                )
            except re.error:
                continue
    return s


def load_ioc_file(path: Path, into: IocSet) -> None:
    """Add the indicators of a STIX 2.1 bundle (.json) or a ``type,value`` CSV to ``into``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read indicator file: {exc.strerror}") from exc
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        _load_stix(path, text, into)
        return
    rows = list(_rows(text))
    if not rows or "type" not in rows[0] or "value" not in rows[0]:
        raise InputError(f"{path}: indicator CSV needs a 'type,value' header")
    for row in rows:
        kind, value = row["type"].strip().lower(), row["value"].strip()
        title = (row.get("name") or row.get("title") or "").strip() or f"Indicator from {path.name}"
        description = (row.get("description") or row.get("note") or "").strip()
        confidence = _confidence(row.get("confidence"), path)
        if kind in ("sha256", "hash"):
            into.sha256[value.lower()] = row.get("note") or str(path.name)
            into.user[("sha256", value.lower())] = (title, description, confidence)
        elif kind in ("ip", "ipv4", "ipv6", "ipv4-addr"):
            into.ips[value] = row.get("note") or str(path.name)
            into.user[("ip", value)] = (title, description, confidence)
        elif kind in ("user_agent", "user-agent", "ua"):
            into.user_agents[ua_key(value)] = value
            into.user[("ua", ua_key(value))] = (title, description, confidence)
        elif kind in ("path", "file"):
            into.exact_paths[path_key(value)] = row.get("note") or str(path.name)
            into.user[("path", path_key(value))] = (title, description, confidence)
        else:
            raise InputError(f"{path}: unknown indicator type {kind!r}")


_STIX_PATTERNS = (
    (re.compile(r"file:hashes\.'?SHA-?256'?\s*=\s*'([0-9a-fA-F]{64})'"), "sha256"),
    (re.compile(r"ipv[46]-addr:value\s*=\s*'([^']+)'"), "ip"),
    (
        re.compile(
            r"network-traffic:extensions\.'http-request-ext'\.request_header\.'User-Agent'\s*=\s*'([^']+)'"
        ),
        "ua",
    ),
    (re.compile(r"file:name\s*=\s*'([^']+)'"), "path"),
)


def _confidence(value: object, path: Path) -> str:
    """A user indicator's confidence: confirmed, likely (default) or review; STIX 0-100 numbers map to
    confirmed from 85, likely from 50, else review."""
    if value is None or str(value).strip() == "":
        return "likely"
    text = str(value).strip().lower()
    if text in ("confirmed", "likely", "review"):
        return text
    try:
        n = int(text)
    except ValueError:
        raise InputError(
            f"{path}: indicator confidence must be confirmed, likely, review or 0-100, not {value!r}"
        ) from None
    return "confirmed" if n >= 85 else "likely" if n >= 50 else "review"


def _load_stix(path: Path, text: str, into: IocSet) -> None:
    import stix2
    from stix2.exceptions import STIXError

    try:
        bundle = stix2.parse(json.loads(text), allow_custom=True)
    except (json.JSONDecodeError, STIXError, ValueError) as exc:
        raise InputError(f"{path}: not a STIX 2.1 bundle: {exc}") from exc
    objects = getattr(bundle, "objects", None) or [bundle]
    for obj in objects:
        if getattr(obj, "type", "") != "indicator":
            continue
        pattern = str(getattr(obj, "pattern", ""))
        name = str(getattr(obj, "name", "") or path.name)
        meta = (
            name,
            str(getattr(obj, "description", "") or ""),
            _confidence(getattr(obj, "x_exwatch_confidence", None) or getattr(obj, "confidence", None), path),
        )
        for rx, kind in _STIX_PATTERNS:
            for value in rx.findall(pattern):
                value = value.replace("\\\\", "\\")
                if kind == "sha256":
                    into.sha256[value.lower()] = name
                    into.user[("sha256", value.lower())] = meta
                elif kind == "ip":
                    into.ips[value.split("/")[0]] = name
                    into.user[("ip", value.split("/")[0])] = meta
                elif kind == "ua":
                    into.user_agents[ua_key(value)] = value
                    into.user[("ua", ua_key(value))] = meta
                else:
                    into.exact_paths[path_key(value)] = name
                    into.user[("path", path_key(value))] = meta
