"""What a responder does after a hunt: the facts of each finding, safe excerpts, and the next steps.

``facts_of`` runs in the workers on the parsed line or event of a finding (plain data in, plain data
out); ``next_steps`` runs on a host's findings and lists the files to remove or inspect with their
SHA-256, the attacker addresses, the accounts used, the first and last evidence time (the window to
investigate further) and the server's fix (``fix_from_store``, ``fix_from_build`` or ``fix_by_wave``).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from exwatch.hunt.model import (
    CONFIDENCE_RANK,
    Account,
    Address,
    FileToAct,
    Finding,
    Fix,
    NamedFile,
    NextSteps,
    Seen,
    Window,
    as_utc,
    iso_z,
)

if TYPE_CHECKING:
    from exwatch.fleet import Store

FACT_MAX = 300
EXCERPT_CHARS = 200
ELLIPSIS = "\u2026"

# Cmdlet parameters that name a file the cmdlet writes or loads (ProxyShell's export and certificate
# request shells, a transport agent's DLL).
_PATH_PARAMS = re.compile(
    r"-(?:FilePath|RequestFile|AssemblyPath|Path)\s+\"([^\"]+)\"|-(?:FilePath|RequestFile|AssemblyPath)\s+'([^']+)'",
    re.IGNORECASE,
)


def _clean(value: str | None) -> str:
    v = (value or "").strip()
    return "" if v in ("-", "<empty>", "''") else v[:FACT_MAX]


def facts_of(family: str, rec: Mapping[str, str]) -> dict[str, str]:
    """The responder's facts of one parsed log line (``family`` httpproxy, iis, ecp, ...) or event
    (``family`` event): client_ip, user, url, status, cmdlet, command, path. Empty values are left out."""
    get = rec.get
    out: dict[str, str] = {}
    if family in ("httpproxy", "iis"):
        out["client_ip"] = _clean(get("c-ip") or get("ClientIpAddress"))
        out["user"] = _clean(get("cs-username") or get("AuthenticatedUser"))
        stem = _clean(get("cs-uri-stem") or get("UrlStem"))
        query = _clean(get("cs-uri-query") or get("UrlQuery"))
        method = _clean(get("cs-method") or get("Method"))
        if stem:
            out["url"] = f"{method + ' ' if method else ''}{stem}{'?' + query if query else ''}"[:FACT_MAX]
        out["status"] = _clean(get("sc-status") or get("HttpStatus"))
    elif family in ("ecp", "ecp_activity"):
        out["user"] = _clean(get("S:USID"))
        out["cmdlet"] = _clean(get("Cmdlet"))
        out["url"] = _clean(get("S:URL"))
    elif family == "oabgenerator":
        out["path"] = _clean(get("TempFilePath"))
    elif family == "event":
        provider = get("Provider_Name") or ""
        if provider == "MSExchange CmdletLogs":
            out["cmdlet"] = _clean(get("Data0"))
            out["user"] = _clean(get("Data2"))
            m = _PATH_PARAMS.search(get("Data1") or "")
            if m:
                out["path"] = _clean(m.group(1) or m.group(2))
        else:
            user = _clean(get("User") or get("Detection User"))
            if not user and _clean(get("SubjectUserName")):
                domain = _clean(get("SubjectDomainName"))
                user = f"{domain}\\{get('SubjectUserName')}" if domain else _clean(get("SubjectUserName"))
            out["user"] = user
            out["command"] = _clean(get("CommandLine"))
            out["path"] = _clean(get("TargetFilename"))
    return {k: v for k, v in out.items() if v}


def safe_text(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` fit for a terminal: control, format (bidi, zero-width) and other non-printable characters
    as escapes (``\\n``, ``\\x00``, ``\\u202e``), cut to ``limit`` characters with ``...`` (an escape is never
    cut in half). Rich markup is not touched here: print the result as ``rich.text.Text``, never as markup."""
    out: list[str] = []
    used = 0
    for ch in text:
        if ch == " " or (ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Co", "Cs")):
            piece = ch
        elif ch in "\t\n\r":
            piece = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch]
        elif ord(ch) < 0x100:
            piece = f"\\x{ord(ch):02x}"
        elif ord(ch) < 0x10000:
            piece = f"\\u{ord(ch):04x}"
        else:
            piece = f"\\U{ord(ch):08x}"
        if used + len(piece) > limit:
            out.append("...")
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def centre_excerpt(text: str, width: int, focus: int | None) -> tuple[str, int | None]:
    """``text`` cut to at most ``width`` characters around ``focus`` (where the matched part starts), with
    an ellipsis where it is cut: the start of the text when the match shows there (a third of the width
    left after it), else a window holding the match a third of the way in. Returns the excerpt and
    where the match starts in it."""
    if len(text) <= width:
        return text, focus
    if focus is None or focus < width - width // 3:
        return text[: width - 1] + ELLIPSIS, focus
    start = max(1, focus - width // 3)
    if start + width - 1 >= len(text):  # the rest of the text fits after one cut: no cut at the end
        start = len(text) - (width - 1)
        return ELLIPSIS + text[start:], focus - start + 1
    return ELLIPSIS + text[start : start + width - 2] + ELLIPSIS, focus - start + 1


def _system_account(user: str) -> bool:
    low = user.lower()
    return low.startswith(("nt authority\\", "s-1-5-18", "s-1-5-19", "s-1-5-20")) or low.endswith("$")


_INTERNAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


def _is_internal(address: str) -> bool:
    """A private (RFC 1918, CGNAT, unique-local), loopback or link-local address: a proxy, a load
    balancer or the server itself rather than the attacker's own address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in _INTERNAL_NETS)


def _server_path_key(path: str) -> str:
    """A path compared without drive, case or slash direction (``C:\\inetpub\\x.aspx`` ~ ``inetpub/x.aspx``)."""
    p = path.replace("\\", "/").lower()
    p = re.sub(r"^(?:[a-z]:|//[^/]+/[a-z]\$)", "", p)
    return p.lstrip("/")


@dataclass
class _Tally:
    """One file, address or account while a host's findings are read: how often, when, by which rules."""

    findings: int = 0
    first: datetime | None = None
    last: datetime | None = None
    rules: list[str] = field(default_factory=list)
    sha256: str | None = None
    confidence: str = "review"
    named_in: str = ""
    published: bool = False

    def add(self, f: Finding) -> _Tally:
        self.findings += 1
        if f.rule not in self.rules:
            self.rules.append(f.rule)
        t = as_utc(f.time)
        if t is not None:
            self.first = t if self.first is None else min(self.first, t)
            self.last = t if self.last is None else max(self.last, t)
        return self

    def seen(self) -> Seen:
        return Seen(self.findings, self.first, self.last, tuple(self.rules))


def _files(acted: list[Finding]) -> dict[str, _Tally]:
    """The package's files the findings name, with their SHA-256 and best confidence."""
    files: dict[str, _Tally] = {}
    for f in acted:
        if f.evidence.family == "file":
            row = files.setdefault(f.evidence.file, _Tally()).add(f)
            if row.sha256 is None:
                row.sha256 = f.evidence.sha256
            if CONFIDENCE_RANK[f.confidence] > CONFIDENCE_RANK[row.confidence]:
                row.confidence = f.confidence
    return files


def _named(acted: list[Finding], files: Mapping[str, _Tally]) -> dict[str, _Tally]:
    """The files the logs name (a ``path`` fact) that the package does not hold."""
    held = {_server_path_key(p) for p in files}
    named: dict[str, _Tally] = {}
    for f in acted:
        path = f.evidence.facts.get("path")
        if path and f.evidence.family != "file":
            key = _server_path_key(path)
            in_package = next(
                (p for p in files if key.endswith(_server_path_key(p)) or _server_path_key(p).endswith(key)),
                None,
            )
            if in_package is None and key not in held:
                row = named.setdefault(path, _Tally())
                if not row.findings:
                    row.named_in = f"{f.evidence.file}:{f.evidence.line or f.evidence.record or ''}"
                row.add(f)
    return named


def _by_fact(findings: list[Finding], fact: str) -> dict[str, _Tally]:
    """The findings' values of ``fact`` (client_ip, user); a published attacker address is marked."""
    table: dict[str, _Tally] = {}
    for f in findings:
        value = f.evidence.facts.get(fact)
        if value:
            row = table.setdefault(value, _Tally()).add(f)
            row.published = row.published or f.rule == "context.attacker_ip"
    return table


def next_steps(findings: Iterable[Finding], *, fix: Fix | None = None) -> NextSteps:
    """The next steps of one host from its findings (likely and confirmed ones; published attacker
    addresses at any confidence): files to remove (a confirmed finding) or inspect, with SHA-256; files
    the logs name that the package does not hold; attacker addresses; accounts; the evidence window; the fix."""
    findings = list(findings)
    acted = [f for f in findings if f.above_review]
    published = [f for f in findings if f.rule == "context.attacker_ip"]
    files = _files(acted)
    file_rows = [
        FileToAct(
            path=p,
            action="remove" if row.confidence == "confirmed" else "inspect",
            confidence=row.confidence,
            seen=row.seen(),
            sha256=row.sha256,
        )
        for p, row in files.items()
    ]
    file_rows.sort(key=lambda r: (r.action != "remove", iso_z(r.seen.first) or "", r.path))
    named = [NamedFile(p, r.named_in, r.seen()) for p, r in _named(acted, files).items()]
    addresses = [
        Address(ip, r.seen(), internal=_is_internal(ip), published=r.published)
        for ip, r in _by_fact([*acted, *published], "client_ip").items()
    ]
    accounts = [Account(u, r.seen(), system=_system_account(u)) for u, r in _by_fact(acted, "user").items()]
    # The window comes from log and event times; a file's modification time (which a copy may have
    # reset) only when no log or event dates the compromise.
    dated = [as_utc(f.time) for f in acted if f.time is not None and f.evidence.family != "file"] or [
        as_utc(f.time) for f in acted if f.time is not None
    ]
    times = [t for t in dated if t is not None]
    return NextSteps(
        window=Window(min(times), max(times)) if times else None,
        files=tuple(file_rows),
        files_named_in_logs=tuple(sorted(named, key=lambda r: (-r.seen.findings, r.path))),
        addresses=tuple(sorted(addresses, key=lambda r: (r.internal, -r.seen.findings, r.address))),
        accounts=tuple(sorted(accounts, key=lambda r: (r.system, -r.seen.findings, r.account))),
        waves=tuple(sorted({f.wave for f in acted if f.wave in _WAVE_ORDER}, key=_WAVE_ORDER.index)),
        fix=fix,
    )


_WAVE_ORDER = ["proxylogon", "proxyshell", "proxynotshell"]


def fix_by_wave(waves: Iterable[str]) -> Fix | None:
    """The fix when the server's build is not known: per wave, the security update that first fixed its
    CVEs (exwatch.kb); the exact update for the server's CU needs its build (``exwatch scan``)."""
    from exwatch import kb

    out: dict[str, str] = {}
    for w in waves:
        try:
            wave = kb.wave(w)
        except KeyError:
            continue
        updates = sorted({kb.cve(c).fixed_by for c in wave.cves})
        out[w] = (
            f"{wave.name} ({', '.join(wave.cves)}): install the security update for the server's CU "
            f"({' and '.join(updates)} or later), or a later CU"
        )
    if not out:
        return None
    return Fix(source="kb", build=None, waves=out, text="; ".join(out.values()))


def fix_from_build(build: str, waves: Iterable[str], source: str) -> Fix | None:
    """The fix for a known build (a collection's build, or the store's), per wave, from ``kb.verdict``."""
    from exwatch import kb
    from exwatch.errors import ExwatchError

    try:
        verdict = kb.verdict(build)
    except (ExwatchError, ValueError):
        return None
    out: dict[str, str] = {}
    states: dict[str, str] = {}
    for w, wv in verdict.waves.items():
        states[w] = wv.state.value
        if wv.state.value == "vulnerable":
            out[w] = wv.fix_text or wv.reason
    wanted = list(waves)
    text = (
        _wave_text(out)
        if out
        else f"build {build} is not vulnerable to {', '.join(wanted) or 'any tracked wave'}: the compromise came before the fix, or through another way in"
    )
    return Fix(source=source, build=build, states=states, waves=out, text=text)


def _wave_text(fixes: Mapping[str, str]) -> str:
    from exwatch import kb

    return "; ".join(f"{kb.wave(w).name}: {t.rstrip('.')}" for w, t in fixes.items())


def fix_from_store(store: Store, host: str, waves: Iterable[str]) -> Fix | None:
    """The fix of the stored host ``host`` names, from the fleet read API (its latest folded snapshot and,
    when vulnerable, the fix the scan stored); None when the store has no one host of that name."""
    from exwatch.errors import InputError
    from exwatch.fleet import queries

    try:
        history = queries.host_history(store, host)
    except InputError:
        return None
    host_id = history.host_id
    snaps = [s for s in history.snapshots if s.build]
    if not snaps:
        return Fix(
            source="store",
            build=None,
            host_id=host_id,
            text=f"host #{host_id} is in the store but no scan read its build: scan it (exwatch scan)",
        )
    last = snaps[-1]
    build = str(last.build)
    out = fix_from_build(build, waves, "store") or Fix(source="store", build=build, text="")
    stored = {r.wave: r.fix for r in queries.hosts_at_risk(store) if r.host_id == host_id and r.fix}
    if stored:
        merged = {**out.waves, **stored}
        out = replace(out, waves=merged, text=_wave_text(merged))
    return replace(out, host_id=host_id, scanned_at=last.time, status=last.status)
