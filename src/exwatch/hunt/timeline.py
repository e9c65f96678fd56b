"""Evidence in time order per host, log coverage per family, and the host verdict."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from exwatch.hunt.model import CONFIDENCE_RANK, FileError, Finding, iso_z

# First known exploitation per wave; exwatch.kb.WAVES is the source when it is installed.
# Fallback values: ProxyLogon from DIVD's report (log_formats.md 9); ProxyShell and ProxyNotShell from
# the first public exploitation reports (August 2021, August 2022).
_FALLBACK_FIRST = {
    "proxylogon": date(2021, 1, 3),
    "proxyshell": date(2021, 8, 5),
    "proxynotshell": date(2022, 8, 1),
}
FAMILY_WAVES = {
    "httpproxy": ("proxylogon", "proxyshell", "proxynotshell"),
    "iis": ("proxylogon", "proxyshell", "proxynotshell"),
    "ecp": ("proxylogon",),
    "oabgenerator": ("proxylogon",),
    "evtx": ("proxylogon", "proxyshell", "proxynotshell"),
}


def first_exploited() -> dict[str, date]:
    """Wave id -> first known exploitation date."""
    try:
        from exwatch.kb import WAVES

        return {w.id: w.first_exploited for w in WAVES}
    except (ImportError, AttributeError):
        return dict(_FALLBACK_FIRST)


def merge_coverage(per_file: list[dict[str, Any]], protocol_of: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per family (and HttpProxy protocol folder): first and last event time, file count and bytes."""
    out: dict[str, dict[str, Any]] = {}
    for cov in per_file:
        fam = cov["family"]
        keys = [fam]
        if fam == "httpproxy" and protocol_of.get(cov["file"]):
            keys.append(f"httpproxy/{protocol_of[cov['file']]}")
        for key in keys:
            agg = out.setdefault(key, {"first": None, "last": None, "files": 0, "bytes": 0})
            agg["files"] += 1
            agg["bytes"] += int(cov.get("bytes", 0) or 0)
            if "records" in cov:
                agg["records"] = agg.get("records", 0) + int(cov["records"])
            for k, pick in (("first", min), ("last", max)):
                if cov.get(k):
                    t = datetime.fromisoformat(cov[k].replace("Z", "+00:00"))
                    agg[k] = t if agg[k] is None else pick(agg[k], t)
    for agg in out.values():
        agg["first"], agg["last"] = iso_z(agg["first"]), iso_z(agg["last"])
    return out


def coverage_warnings(coverage: dict[str, dict[str, Any]]) -> list[str]:
    """A warning for each log family whose oldest event is after a wave's first exploitation."""
    firsts = first_exploited()
    out = []
    for fam, waves in FAMILY_WAVES.items():
        cov = coverage.get(fam)
        if not cov:
            out.append(f"no {fam} logs: nothing can be said from them")
            continue
        if not cov.get("first"):
            continue
        start = datetime.fromisoformat(cov["first"].replace("Z", "+00:00")).date()
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


def link_chain(findings: list[Finding], window_s: float = 120.0) -> None:
    """Drill down from an SSRF hit to the other logs (detections.md PL-2): name, in the description of each
    ProxyLogon SSRF finding, the findings of other files within ``window_s`` seconds of it."""
    dated = sorted((f for f in findings if f.time is not None), key=lambda f: f.time)  # type: ignore[arg-type,return-value]
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
            f.description += " Related evidence in other logs: " + "; ".join(parts) + "."
