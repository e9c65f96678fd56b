"""Evidence in time order per host, log coverage per family, and the host verdict."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime

from exwatch.hunt.model import (
    CONFIDENCE_RANK,
    Coverage,
    FileCoverage,
    FileError,
    Finding,
    LogCoverage,
    as_utc,
)

FAMILY_WAVES = {
    "httpproxy": ("proxylogon", "proxyshell", "proxynotshell"),
    "iis": ("proxylogon", "proxyshell", "proxynotshell"),
    "ecp": ("proxylogon",),
    "oabgenerator": ("proxylogon",),
    "evtx": ("proxylogon", "proxyshell", "proxynotshell"),
}


def first_exploited() -> dict[str, date]:
    """Wave id -> first known exploitation date (exwatch.kb, with its sources)."""
    from exwatch.kb import WAVES

    return {w.id: w.first_exploited for w in WAVES}


def _pick(
    pick: Callable[[datetime, datetime], datetime], a: datetime | None, b: datetime | None
) -> datetime | None:
    return b if a is None else a if b is None else pick(a, b)


def merge_coverage(
    per_file: Iterable[tuple[str, FileCoverage]], protocol_of: Mapping[str, str]
) -> dict[str, LogCoverage]:
    """Per family (and HttpProxy protocol folder) of (file, its coverage), in the order first seen: first
    and last event time, file count, bytes and event records."""
    out: dict[str, LogCoverage] = {}
    for file, cov in per_file:
        keys = [cov.family]
        if cov.family == "httpproxy" and protocol_of.get(file):
            keys.append(f"httpproxy/{protocol_of[file]}")
        first, last = as_utc(cov.first), as_utc(cov.last)
        for key in keys:
            agg = out.get(key) or LogCoverage()
            out[key] = LogCoverage(
                first=_pick(min, agg.first, first),
                last=_pick(max, agg.last, last),
                files=agg.files + 1,
                bytes=agg.bytes + cov.bytes,
                records=agg.records if cov.records is None else (agg.records or 0) + cov.records,
            )
    return out


def coverage_warnings(coverage: Coverage) -> list[str]:
    """A warning for each log family whose oldest event is after a wave's first exploitation."""
    firsts = first_exploited()
    out = []
    for fam, waves in FAMILY_WAVES.items():
        cov = coverage.logs.get(fam)
        if not cov:
            out.append(f"no {fam} logs: nothing can be said from them")
            continue
        if cov.first is None:
            continue
        start = cov.first.date()
        for w in waves:
            if w in firsts and start > firsts[w]:
                out.append(
                    f"{fam} logs start {start.isoformat()}, after {w} was first exploited ({firsts[w].isoformat()}): earlier attacks cannot be seen"
                )
    return out


def order(findings: list[Finding]) -> list[Finding]:
    """Findings grouped by wave, in time order inside each wave (undated last)."""
    wave_rank = {
        "proxylogon": 0,
        "proxyshell": 1,
        "proxynotshell": 2,
        "webshell": 3,
        "postexploit": 4,
        "context": 6,
    }
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(
        findings,
        key=lambda f: (
            f.host,
            wave_rank.get(f.wave, 5),
            f.time or far,
            f.evidence.file,
            f.evidence.line or 0,
            f.rule,
        ),
    )


def verdict(findings: list[Finding], errors: list[FileError], files_hunted: int) -> str:
    """compromised (a confirmed finding), attempted (a likely one), clean, or incomplete (errors, nothing above review)."""
    best = max((CONFIDENCE_RANK[f.confidence] for f in findings), default=0)
    if best >= 3:
        return "compromised"
    if best == 2:
        return "attempted"
    if errors or files_hunted == 0:
        return "incomplete"
    return "clean"


CHAIN_RULES = ("proxylogon.ssrf_progressed", "proxylogon.ecp_reset_vdir", "proxylogon.ssrf_attempt")


def link_chain(findings: list[Finding], window_s: float = 120.0) -> list[Finding]:
    """Drill down from an SSRF hit to the other logs (detections.md PL-2): the findings, where each
    ProxyLogon SSRF finding's description names the findings of other files within ``window_s`` seconds."""
    dated = sorted((f for f in findings if f.time is not None), key=lambda f: f.time)  # type: ignore[arg-type,return-value]
    related: dict[int, str] = {}
    for f in dated:
        if f.rule not in CHAIN_RULES:
            continue
        assert f.time is not None
        near = [
            g
            for g in dated
            if g is not f
            and g.host == f.host
            and g.evidence.file != f.evidence.file
            and g.time is not None
            and abs((g.time - f.time).total_seconds()) <= window_s
            and g.wave in ("proxylogon", "webshell")
        ]
        if near:
            parts = [
                f"{g.rule} at {g.evidence.file}:{g.evidence.line or g.evidence.record or ''} "
                f"({(g.time - f.time).total_seconds():+.0f} s)"  # type: ignore[operator]
                for g in near[:5]
            ]
            related[id(f)] = " Related evidence in other logs: " + "; ".join(parts) + "."
    return [
        replace(f, description=f.description + related[id(f)]) if id(f) in related else f for f in findings
    ]
