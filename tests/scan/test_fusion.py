"""Verdict fusion: build verdict and probe outcome to one state per wave (fingerprinting.md 4.2)."""

from __future__ import annotations

import pytest

from exwatch.scan.fusion import fuse
from exwatch.scan.probes import ProbeOutcome

VULN = ProbeOutcome("vulnerable", "localhost target")
MITIGATED = ProbeOutcome("mitigated", "aborted")
PATCHED = ProbeOutcome("patched", "normal answer")
INCONCLUSIVE = ProbeOutcome("inconclusive", "control failed")
UNVALIDATED_VULN = ProbeOutcome("vulnerable", "302 heuristic", validated=False)
UNVALIDATED_PATCHED = ProbeOutcome("patched", "401", validated=False)


@pytest.mark.parametrize(
    ("build", "probe", "cve", "has_build", "state", "conflict"),
    [
        ("vulnerable", None, None, True, "vulnerable", False),
        ("patched", None, None, True, "patched", False),
        ("vulnerable", INCONCLUSIVE, None, True, "vulnerable", False),
        ("vulnerable", VULN, "vulnerable", True, "vulnerable", False),
        ("unknown", VULN, None, True, "vulnerable", False),
        ("patched", VULN, "patched", True, "vulnerable", True),  # behaviour wins, the contradiction is shown
        ("vulnerable", MITIGATED, "vulnerable", True, "mitigated", False),
        ("unknown", MITIGATED, None, True, "mitigated", False),
        ("patched", MITIGATED, "patched", True, "patched", False),
        ("not_affected", MITIGATED, "not_affected", True, "not_affected", False),
        ("vulnerable", PATCHED, "vulnerable", True, "unknown", True),
        (
            "vulnerable",
            PATCHED,
            "not_affected",
            True,
            "vulnerable",
            False,
        ),  # 2010: open by 26857, not the SSRF
        ("unknown", PATCHED, None, True, "patched", False),  # CU only: patched by behaviour
        ("unknown", PATCHED, None, False, "unknown", False),  # no build: patched or never affected
        ("patched", PATCHED, "patched", True, "patched", False),
        (
            "patched",
            UNVALIDATED_VULN,
            "patched",
            True,
            "patched",
            True,
        ),  # an unvalidated probe never overrides
        ("unknown", UNVALIDATED_VULN, None, True, "vulnerable", False),
        ("vulnerable", UNVALIDATED_PATCHED, "vulnerable", True, "vulnerable", True),
    ],
)
def test_fuse(
    build: str, probe: ProbeOutcome | None, cve: str | None, has_build: bool, state: str, conflict: bool
) -> None:
    result = fuse(build, "build says so", probe, cve, has_build=has_build)
    assert (result.state, result.conflict) == (state, conflict), result.reason
    assert "build says so" in result.reason
    if conflict:
        assert result.reason.startswith("CONFLICT")
