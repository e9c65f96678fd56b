"""Verdict fusion: the build's verdict and the behavioural probes become one state per wave (pure).

Decision table (fingerprinting.md 4.2, generalised to the three waves):

| build says          | probe says  | state         | notes                                               |
|---------------------|-------------|---------------|-----------------------------------------------------|
| any                 | none/inconc.| build's state | the probe's reason is kept                          |
| any                 | vulnerable  | vulnerable    | conflict if the build says patched or not_affected  |
| vulnerable, unknown | mitigated   | mitigated     | an AbortRequest rule answered                       |
| patched, n/a        | mitigated   | build's state | the rule is present as well; said in the reason     |
| vulnerable          | patched     | unknown       | conflict: a WAF may alter the request               |
| unknown (CU only)   | patched     | patched       | by behaviour; the SU level stays unknown            |
| unknown (no build)  | patched     | unknown       | patched or never affected: cannot tell              |
| patched, n/a        | patched     | build's state |                                                     |

A probe flagged unvalidated (ProxyNotShell's SSRF heuristic) never overrides a definite build verdict:
it only decides when the build cannot, and a disagreement is still flagged as a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass

from exwatch.record import FixEntry, WaveEntry
from exwatch.scan.probes import ProbeOutcome

DEFINITE = frozenset({"vulnerable", "patched", "not_affected"})


@dataclass(frozen=True)
class WaveState:
    """One wave's fused state for one host."""

    state: str
    reason: str
    conflict: bool = False

    def to_dict(self, fix: FixEntry | None = None) -> WaveEntry:
        """The record form: state, reason, conflict and the fix."""
        return {"state": self.state, "reason": self.reason, "conflict": self.conflict, "fix": fix}


def fuse(
    build_state: str,
    build_reason: str,
    probe: ProbeOutcome | None,
    probe_cve_state: str | None = None,
    *,
    has_build: bool = True,
) -> WaveState:
    """Combine one wave's build verdict with its probe outcome (see the module's table).

    ``probe_cve_state`` is the build's state for the one CVE the probe tests (CVE-2021-26855 for
    ProxyLogon): a normal answer to the probe says nothing about the wave's other CVEs (Exchange 2010
    is open to CVE-2021-26857 but was never affected by the SSRF). Without any build (``has_build``
    False) a normal answer cannot tell patched from never affected: the state stays unknown.
    """
    if probe is None:
        return WaveState(build_state, build_reason)
    if probe.outcome == "patched" and probe_cve_state in ("patched", "not_affected"):
        return WaveState(build_state, f"{build_reason}; probe: {probe.reason} (as the build predicts)")
    by_probe = f"probe: {probe.reason}"
    outcome = probe.outcome
    if outcome == "inconclusive":
        return WaveState(build_state, f"{build_reason}; {by_probe}")
    if outcome == "vulnerable":
        contradicts = build_state in ("patched", "not_affected")
        if probe.validated or build_state not in DEFINITE:
            reason = f"vulnerable by behaviour ({probe.reason}); build: {build_reason}"
            if contradicts:
                reason = f"CONFLICT: the build says {build_state} but the probe shows it vulnerable; {reason}"
            return WaveState("vulnerable", reason, contradicts)
        reason = f"{build_reason}; unvalidated {by_probe}"
        if contradicts:
            reason = f"CONFLICT: the build says {build_state}, an unvalidated probe says vulnerable; {reason}"
        return WaveState(build_state, reason, contradicts)
    if outcome == "mitigated":
        if build_state in ("vulnerable", "unknown"):
            return WaveState("mitigated", f"mitigated: {probe.reason}; build: {build_reason}")
        return WaveState(build_state, f"{build_reason}; the mitigation rule is also present ({probe.reason})")
    # outcome == "patched": the attack-shaped request answered normally
    if build_state == "vulnerable":
        if probe.validated:
            return WaveState(
                "unknown",
                f"CONFLICT: the build says vulnerable but the probe found no sign of it ({probe.reason}); "
                f"a WAF or Defender may alter the request; build: {build_reason}",
                True,
            )
        return WaveState(
            "vulnerable",
            f"CONFLICT: the build says vulnerable, an unvalidated probe found no sign ({probe.reason}); "
            f"build: {build_reason}",
            True,
        )
    if build_state == "unknown" and not has_build:
        return WaveState(
            "unknown", f"{build_reason}; {by_probe} (patched or never affected: no build to tell)"
        )
    if build_state == "unknown":
        word = "unvalidated probe" if not probe.validated else "probe"
        return WaveState("patched", f"patched by behaviour ({word}: {probe.reason}); build: {build_reason}")
    return WaveState(build_state, f"{build_reason}; {by_probe}")
