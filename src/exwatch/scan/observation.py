"""One host's observation record: fingerprint, probes and per-wave states put together (pure).

The record is what ``--format jsonl`` prints and what the store receives (CONTRACTS.md): target,
address, port, status, error, build, build_source, cu_only, probes, waves, name, fe_server, cert_names,
tags, time, key, plus a few extras (scheme, product, cu, approximate, conflicts, notes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, TypedDict

from exwatch.errors import BuildError
from exwatch.record import ExposedHost, FixEntry, HostFix, Observation
from exwatch.scan.fingerprint import FingerprintResult
from exwatch.scan.fusion import WaveState, fuse
from exwatch.scan.probes import ProbeOutcome
from exwatch.scan.targets import Target

if TYPE_CHECKING:
    from exwatch.kb import CatalogueEntry, Verdict

# The CVE whose unauthenticated request shape each wave's probe sends (fingerprinting.md 4).
PROBE_CVE = {
    "proxylogon": "CVE-2021-26855",
    "proxyshell": "CVE-2021-34473",
    "proxynotshell": "CVE-2022-41040",
}
SEVERITY = {"vulnerable": 0, "unknown": 1, "mitigated": 2, "patched": 3, "not_affected": 4}


def wave_ids() -> tuple[str, ...]:
    """The waves the knowledge base knows, in its order (``kb.WAVE_IDS``)."""
    from exwatch import kb

    return kb.WAVE_IDS


class VerdictFacts(TypedDict, total=False):
    """What the knowledge base says of a build besides its waves (empty without a verdict)."""

    product: str
    cu: str | None
    support: str | None


#: Per wave: (state, reason, fix, state of the CVE the wave's probe tests).
WaveVerdicts = dict[str, tuple[str, str, FixEntry | None, str | None]]


@functools.lru_cache(maxsize=4096)
def _verdict(build: str, as_of: date | None = None) -> Verdict:
    from exwatch import kb

    return kb.verdict(build, as_of=as_of)


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


def build_verdict(build: str | None, as_of: date | None = None) -> tuple[WaveVerdicts, VerdictFacts]:
    """Per wave (state, reason, fix, state of the probed CVE) from the kb (with the knowledge of
    ``as_of``, None: today), and product facts."""
    waves = wave_ids()
    if not build:
        return {w: ("unknown", "no build could be learnt from outside", None, None) for w in waves}, {}
    try:
        v = _verdict(build, as_of)
    except BuildError as exc:
        return {w: ("unknown", f"build {build!r} is not understood: {exc}", None, None) for w in waves}, {}
    as_dict = v.to_dict()
    out: WaveVerdicts = {}
    for w in waves:
        wv = v.waves.get(w)
        if wv is None:
            out[w] = ("unknown", f"no verdict for {w}", None, None)
            continue
        wd = (as_dict.get("waves") or {}).get(w, {})
        cve_state = (wd.get("cves") or {}).get(PROBE_CVE.get(w, ""))
        out[w] = (str(wv.state), wv.reason, wd.get("fix"), None if cve_state is None else str(cve_state))
    facts: VerdictFacts = {"product": v.product, "cu": v.cu, "support": as_dict.get("support")}
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
    as_of: date | None = None,
) -> Observation:
    """Assemble the observation record of one target (verdicts with the knowledge of ``as_of``)."""
    tags = {**dict(extra_tags or {}), **dict(target.tags)}
    rec: Observation = {
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
    rec["status"] = "exchange"
    rec["build"] = fp.build
    rec["build_source"] = fp.build_source
    rec["cu_only"] = fp.cu_only if fp.build else None
    rec["approximate"] = fp.approximate if fp.build else None
    verdicts, facts = build_verdict(fp.build, as_of)
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
    target: Target,
    address: str | None,
    error: str,
    when: datetime,
    *,
    extra_tags: Mapping[str, str] | None = None,
    as_of: date | None = None,
) -> Observation:
    """The record of a target that gave no HTTP answer at all (error: the error class)."""
    return host_record(
        target,
        address,
        fp=None,
        probes=None,
        error=error,
        cert_names=[],
        cert_sha256=None,
        when=when,
        extra_tags=extra_tags,
        as_of=as_of,
    )


def worst_state(rec: Observation | ExposedHost) -> tuple[int, ...]:
    """Sort key, worst first: the worst state over the waves, then the per-wave states in wave order
    (the oldest, most exploited wave weighs most), so a host open to every wave precedes one open to
    the later waves only."""
    waves = rec.get("waves") or {}
    per_wave = [
        SEVERITY.get(str(v.get("state")), 9) if isinstance(v, dict) else 9
        for v in (waves.get(w) for w in wave_ids())
    ]
    return (min(per_wave, default=9), *per_wave)


# -- one fix per host ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _entries() -> dict[str, CatalogueEntry]:
    from exwatch import kb

    return {str(e.build): e for e in kb.catalogue()}


def _key(build: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in build.split("."))
    except ValueError:
        return (0,)


_TARGET_BUILD = re.compile(r"\((\d+\.\d+\.\d+\.\d+)\) or later")


def _wave_target(fix: FixEntry) -> tuple[str, bool] | None:
    """The lowest build that closes one wave (and whether it is a CU's release build, to be followed by
    that CU's latest SU), from the kb's fix: this CU's SU, else the first later CU containing the fix,
    else the build the kb's sentence names (the newest CU that received the update, and its SU)."""
    if fix.get("security_update"):
        return max((str(b) for b in fix["security_update"]), key=_key), False
    if fix.get("cumulative_update"):
        return str(fix["cumulative_update"]), True
    m = _TARGET_BUILD.search(str(fix.get("text") or ""))
    if m:
        return m.group(1), False
    return None


def host_fix(rec: Observation | ExposedHost, waves: Iterable[str] | None = None) -> HostFix:
    """The one update that closes every open wave of a host (vulnerable or unknown), from the kb's fixes.

    Returns ``{"fix": sentence, "fix_build": build or None, "fix_kb": "KB..." or None}``; the sentence is
    never empty for an exposed host: without a known fixing build it says what is missing (the build, or
    an update not released yet). ``waves``: only these waves (None: every wave of the record).
    """
    chosen = set(waves) if waves else None
    open_waves = {
        w: v
        for w, v in (rec.get("waves") or {}).items()
        if isinstance(v, Mapping)
        and v.get("state") in ("vulnerable", "unknown")
        and (chosen is None or w in chosen)
    }
    if not open_waves:
        return {"fix": "", "fix_build": None, "fix_kb": None}
    targets: list[tuple[str, bool]] = []
    missing: list[str] = []
    current = _key(str(rec["build"])) if rec.get("build") else None
    for w, v in open_waves.items():
        target = _wave_target(v.get("fix") or {})
        if target is not None and current is not None and _key(target[0]) < current:
            target = None  # never a step down (a build newer than the knowledge of an --as-of day)
        if target is None:
            text = str((v.get("fix") or {}).get("text") or "").strip()
            missing.append(f"{w}: {text}" if text else f"{w}: no fix is known")
        else:
            targets.append(target)
    if not targets:
        if not rec.get("build"):
            return {
                "fix": "Learn the exact build first (ExSetup.exe's file version on the server), then "
                "install the latest CU and its latest SU. " + " ".join(missing),
                "fix_build": None,
                "fix_kb": None,
            }
        return {"fix": " ".join(missing), "fix_build": None, "fix_kb": None}
    build, is_cu = max(targets, key=lambda t: (_key(t[0]), not t[1]))
    entry = _entries().get(build)
    kb_id = entry.kb if entry is not None and entry.kb else None
    kb_text = f", {kb_id}" if kb_id else ""
    same_cu = bool(rec.get("build")) and _key(str(rec["build"]))[:3] == _key(build)[:3]
    if entry is None:
        text = f"Update to build {build} or later" + (", then install that CU's latest SU" if is_cu else "")
    elif is_cu:
        text = f"Update to {entry.product} {entry.cu} (build {build}{kb_text}) or later, then its latest SU"
    elif entry.su_name and same_cu:
        text = f"Install {entry.su_name} ({entry.product} {entry.cu}{kb_text}): build {build} or later"
    elif entry.su_name:
        text = f"Update to {entry.product} {entry.cu} and install {entry.su_name}{kb_text}: build {build} or later"
    else:
        text = f"Update to {entry.product} {entry.cu}{kb_text}: build {build} or later"
    names = ", ".join(sorted(open_waves))
    text += f"; closes {names}."
    if missing:
        text += " Also: " + " ".join(missing)
    return {"fix": text, "fix_build": build, "fix_kb": kb_id}
