"""One host's observation record: fingerprint, probes and per-wave states put together (pure).

The record is what ``--format jsonl`` prints and what the store receives (CONTRACTS.md): target,
address, port, status, error, build, build_source, cu_only, probes, waves, name, fe_server, cert_names,
tags, time, key, plus a few extras (scheme, product, cu, approximate, conflicts, notes).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from exwatch.errors import BuildError
from exwatch.scan.fingerprint import FingerprintResult
from exwatch.scan.fusion import WaveState, fuse
from exwatch.scan.probes import ProbeOutcome
from exwatch.scan.targets import Target

WAVE_IDS: tuple[str, ...] = ("proxylogon", "proxyshell", "proxynotshell")
# The CVE whose unauthenticated request shape each wave's probe sends (fingerprinting.md 4).
PROBE_CVE = {
    "proxylogon": "CVE-2021-26855",
    "proxyshell": "CVE-2021-34473",
    "proxynotshell": "CVE-2022-41040",
}
SEVERITY = {"vulnerable": 0, "unknown": 1, "mitigated": 2, "patched": 3, "not_affected": 4}


def wave_ids() -> tuple[str, ...]:
    """The waves the knowledge base knows (the three of CONTRACTS.md if it cannot say)."""
    try:
        from exwatch import kb

        return tuple(w.id for w in kb.WAVES)
    except (ImportError, AttributeError):
        return WAVE_IDS


@functools.lru_cache(maxsize=4096)
def _verdict(build: str) -> Any:
    from exwatch import kb

    return kb.verdict(build)


@functools.lru_cache(maxsize=4096)
def builds_for_cu(cu: str) -> tuple[str, ...]:
    """The catalogue's full builds of a CU (``15.2.858``), newest first."""
    from exwatch import kb

    try:
        return tuple(str(b) for b in kb.builds_for_cu(kb.parse_build(cu)))
    except BuildError:
        return ()


@functools.lru_cache(maxsize=1)
def _known_builds() -> frozenset[str]:
    from exwatch import kb

    return frozenset(str(e.build) for e in kb.catalogue())


def known_build(build: str) -> bool:
    """Is this full build published in the catalogue?"""
    return build in _known_builds()


def build_verdict(
    build: str | None,
) -> tuple[dict[str, tuple[str, str, Any, str | None]], dict[str, Any]]:
    """Per wave (state, reason, fix, state of the probed CVE) from the kb, and product facts."""
    waves = wave_ids()
    if not build:
        return {w: ("unknown", "no build could be learnt from outside", None, None) for w in waves}, {}
    try:
        v = _verdict(build)
    except BuildError as exc:
        return {w: ("unknown", f"build {build!r} is not understood: {exc}", None, None) for w in waves}, {}
    as_dict = v.to_dict()
    out: dict[str, tuple[str, str, Any, str | None]] = {}
    for w in waves:
        wv = v.waves.get(w)
        if wv is None:
            out[w] = ("unknown", f"no verdict for {w}", None, None)
            continue
        wd = (as_dict.get("waves") or {}).get(w, {})
        cve_state = (wd.get("cves") or {}).get(PROBE_CVE.get(w, ""))
        out[w] = (str(wv.state), wv.reason, wd.get("fix"), None if cve_state is None else str(cve_state))
    facts = {"product": v.product, "cu": v.cu, "support": as_dict.get("support")}
    return out, facts


def host_record(
    target: Target,
    address: str | None,
    *,
    fp: FingerprintResult | None,
    probes: Mapping[str, ProbeOutcome] | None,
    error: str | None,
    cert_names: list[str],
    cert_sha256: str | None,
    when: datetime,
    extra_tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Assemble the observation record of one target."""
    tags = {**dict(extra_tags or {}), **dict(target.tags)}
    rec: dict[str, Any] = {
        "key": target.key,
        "target": target.text,
        "scheme": target.scheme,
        "address": address,
        "port": target.port,
        "name": target.name,
        "status": "unreachable",
        "error": error,
        "build": None,
        "build_source": None,
        "cu_only": None,
        "approximate": None,
        "product": None,
        "cu": None,
        "fe_server": fp.fe_server if fp else None,
        "cert_names": cert_names,
        "cert_sha256": cert_sha256,
        "probes": {w: p.to_dict() for w, p in (probes or {}).items()},
        "waves": {},
        "conflicts": list(fp.conflicts) if fp else [],
        "notes": list(fp.notes) if fp else [],
        "tags": tags,
        "time": when.isoformat(),
    }
    waves = wave_ids()
    if fp is None or (error is not None and not fp.is_exchange):
        rec["waves"] = {
            w: {"state": "unreachable", "reason": f"unreachable ({error})", "fix": None} for w in waves
        }
        return rec
    rec["error"] = None if fp.is_exchange or fp.answered else error
    if not fp.is_exchange:
        rec["status"] = "not_exchange"
        sign = fp.server or "no Exchange sign"
        rec["waves"] = {
            w: {"state": "not_exchange", "reason": f"not Exchange ({sign})", "fix": None} for w in waves
        }
        if error:
            rec["notes"].append(f"some requests failed: {error}")
        return rec
    rec.update(
        status="exchange",
        build=fp.build,
        build_source=fp.build_source,
        cu_only=fp.cu_only if fp.build else None,
        approximate=fp.approximate if fp.build else None,
    )
    verdicts, facts = build_verdict(fp.build)
    rec["product"] = facts.get("product")
    rec["cu"] = facts.get("cu")
    for w in waves:
        state, reason, fix, cve_state = verdicts[w]
        if fp.build:
            source = f"{fp.build_source}{', CU only' if fp.cu_only else ''}"
            reason = f"{fp.build} ({source}): {reason}"
        fused: WaveState = fuse(state, reason, (probes or {}).get(w), cve_state, has_build=bool(fp.build))
        rec["waves"][w] = fused.to_dict(fix)
        if fused.conflict:
            rec["conflicts"].append(f"{w}: {fused.reason}")
    return rec


def unreachable_record(
    target: Target, address: str | None, error: str, when: datetime, **kw: Any
) -> dict[str, Any]:
    """The record of a target that gave no HTTP answer at all (error: the error class)."""
    return host_record(
        target, address, fp=None, probes=None, error=error, cert_names=[], cert_sha256=None, when=when, **kw
    )


def worst_state(rec: Mapping[str, Any]) -> tuple[int, ...]:
    """Sort key, worst first: the worst state over the waves, then the per-wave states in wave order
    (the oldest, most exploited wave weighs most), so a host open to every wave precedes one open to
    the later waves only."""
    waves = rec.get("waves") or {}
    per_wave = [
        SEVERITY.get(str(v.get("state")), 9) if isinstance(v, dict) else 9
        for v in (waves.get(w) for w in wave_ids())
    ]
    return (min(per_wave, default=9), *per_wave)
