"""Remote verification of the mitigation: the behavioural probe and its control request, per wave.

The requests and their judgement are the scanner's (``exwatch.scan.probes``, ``exwatch.scan.engine.
probe_host``): an aborted attack-shaped request while the control request gets an answer reads
``mitigated``; a ProxyLogon answer with ``X-CalculatedBETarget: localhost`` reads ``vulnerable``; a normal
answer reads ``patched``; anything else (a proxy in front, a network error) ``inconclusive``
(fingerprinting.md 4.2 and 4.4).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast
from urllib.parse import urlsplit

from exwatch.errors import InputError
from exwatch.mitigate.operations import TEMPORARY_NOTE, BuildFix, fix_for
from exwatch.mitigate.rules import waves_for
from exwatch.record import FixEntry, Observation
from exwatch.scan.engine import probe_host

_STATE_OF = {
    "vulnerable": "vulnerable",
    "mitigated": "mitigated",
    "patched": "patched",
    "inconclusive": "unknown",
}


@dataclass(frozen=True)
class Target:
    """Where to send the probes."""

    text: str
    address: str
    port: int
    scheme: str


def parse_target(text: str) -> Target:
    """``host``, ``host:port`` or ``scheme://host[:port][/]`` (https and port 443 by default)."""
    raw = text.strip()
    if not raw:
        raise InputError("empty target")
    split = urlsplit(raw if "://" in raw else f"https://{raw}")
    scheme = split.scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(f"target {text!r}: scheme must be http or https")
    try:
        port = split.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise InputError(f"target {text!r}: bad port") from exc
    if not split.hostname:
        raise InputError(f"target {text!r}: no host")
    return Target(text=raw, address=split.hostname, port=port, scheme=scheme)


def judge_with_build(outcome: str, reason: str, kb_state: str | None) -> tuple[str, str]:
    """The per-wave state from the probe outcome and, when known, the build's state (table 4.2)."""
    state = _STATE_OF.get(outcome, "unknown")
    if kb_state == "patched" and outcome == "mitigated":
        return "patched", f"{reason}; the build is fixed (the rule is also present: it can be rolled back)"
    if kb_state == "vulnerable" and outcome == "patched":
        return (
            "unknown",
            f"{reason}; but the build is vulnerable: a WAF or another filter may alter the request",
        )
    return state, reason


@dataclass(frozen=True)
class WaveProbe:
    """One wave's verification on one target: the probe's outcome and the state judged with the build."""

    result: str  # the probe outcome: mitigated, patched, vulnerable, inconclusive ...
    state: str
    reason: str
    probe_reason: str
    validated: bool
    fix: BuildFix | None

    def to_dict(self) -> dict[str, object]:
        return {
            "result": self.result,
            "state": self.state,
            "reason": self.reason,
            "probe_reason": self.probe_reason,
            "validated": self.validated,
            "fix": self.fix.to_dict() if self.fix else None,
        }


@dataclass
class TargetResult:
    """The verification of one target."""

    target: Target
    waves: dict[str, WaveProbe] = field(default_factory=dict)
    build: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def status(self) -> str:
        outcomes = [w.result for w in self.waves.values()]
        if outcomes and all(o == "inconclusive" for o in outcomes):
            return "unreachable"
        return "exchange"

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target.text,
            "address": self.target.address,
            "port": self.target.port,
            "scheme": self.target.scheme,
            "status": self.status,
            "build": self.build,
            "waves": {w: v.to_dict() for w, v in self.waves.items()},
            "time": self.time.isoformat(),
        }

    def observation(self, run_key: str) -> Observation:
        """The record the store takes, shaped like a scan observation (CONTRACTS.md)."""
        errors = [w.reason for w in self.waves.values() if w.result == "inconclusive"]
        return {
            "target": self.target.text,
            "scheme": self.target.scheme,
            "address": self.target.address,
            "port": self.target.port,
            "status": self.status,
            "error": "; ".join(errors) if self.status == "unreachable" else None,
            "build": self.build,
            "build_source": "user" if self.build else None,
            "cu_only": False,
            "probes": {
                w: {"outcome": v.result, "reason": v.probe_reason, "validated": v.validated}
                for w, v in self.waves.items()
            },
            "waves": {
                # BuildFix.to_dict: a FixEntry with the build and its state besides
                w: {
                    "state": v.state,
                    "reason": v.reason,
                    "fix": cast(FixEntry, v.fix.to_dict()) if v.fix else None,
                }
                for w, v in self.waves.items()
            },
            "name": None,
            "fe_server": None,
            "cert_names": [],
            "cert_sha256": None,
            "approximate": None,
            "product": None,
            "cu": None,
            "conflicts": [],
            "notes": [],
            "tags": {"source": "mitigate verify"},
            "time": self.time.isoformat(),
            "key": f"{run_key}:{self.target.address}:{self.target.port}",
        }


@dataclass
class VerifyResult:
    """Every target's verification, and the scan id when stored."""

    results: list[TargetResult]
    scan_id: int | None = None

    @property
    def vulnerable(self) -> bool:
        return any(w.state == "vulnerable" for r in self.results for w in r.waves.values())

    @property
    def incomplete(self) -> bool:
        return any(w.result == "inconclusive" for r in self.results for w in r.waves.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "targets": [r.to_dict() for r in self.results],
            "scan_id": self.scan_id,
            "note": TEMPORARY_NOTE,
        }


async def _probe(target: Target, wave: str, timeout: float) -> tuple[str, str, bool]:
    try:
        outcome = await probe_host(target.address, target.port, target.scheme, wave, timeout=timeout)
    except OSError as exc:  # the engine reports network errors as outcomes; this is a safety net
        return "inconclusive", f"network error: {exc}", True
    return str(outcome.outcome), str(outcome.reason), bool(outcome.validated)


async def _verify_all(
    targets: list[Target], waves: tuple[str, ...], timeout: float, concurrency: int
) -> list[list[tuple[str, str, bool]]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(target: Target, wave: str) -> tuple[str, str, bool]:
        async with gate:
            return await _probe(target, wave, timeout)

    async def per_target(target: Target) -> list[tuple[str, str, bool]]:
        return list(await asyncio.gather(*(one(target, w) for w in waves)))

    return list(await asyncio.gather(*(per_target(t) for t in targets)))


def verify(
    targets: list[str],
    wave: str = "all",
    *,
    build: str | None = None,
    timeout: float = 5.0,
    concurrency: int = 16,
    store_url: str | None = None,
) -> VerifyResult:
    """Probe each target for each wave's mitigation; store the results when ``store_url`` is given."""
    parsed = [parse_target(t) for t in targets]
    if not parsed:
        raise InputError("no target given")
    wave_ids = waves_for(wave)
    fixes = {w: fix_for(build, w) for w in wave_ids}
    outcomes = asyncio.run(_verify_all(parsed, wave_ids, timeout, concurrency))
    results: list[TargetResult] = []
    for target, per_wave in zip(parsed, outcomes, strict=True):
        first_fix = fixes[wave_ids[0]]
        res = TargetResult(target=target, build=first_fix.build if first_fix else build)
        for wave_id, (outcome, reason, validated) in zip(wave_ids, per_wave, strict=True):
            fix = fixes[wave_id]
            state, why = judge_with_build(outcome, reason, fix.state if fix else None)
            res.waves[wave_id] = WaveProbe(outcome, state, why, reason, validated, fix)
        results.append(res)
    result = VerifyResult(results)
    if store_url:
        result.scan_id = store_results(result, store_url, wave)
    return result


def store_results(result: VerifyResult, store_url: str, wave: str) -> int:
    """Write the results to the store as one run of kind ``verify``; return its id."""
    from exwatch.fleet import open_store

    run_key = uuid.uuid4().hex[:12]
    with open_store(store_url) as store:
        scan_id = store.start_scan(
            {"command": "mitigate verify", "wave": wave, "targets": [r.target.text for r in result.results]},
            kind="verify",
        )
        store.add_observations(scan_id, [r.observation(run_key) for r in result.results])
        store.finish_scan(scan_id)
    return int(scan_id)
