"""IIS URL Rewrite mitigations: check, apply and roll back web.config rules; PowerShell; remote verify."""

from __future__ import annotations

from exwatch.mitigate.files import DEFAULT_MAX_CONFIG_KB
from exwatch.mitigate.operations import (
    TEMPORARY_NOTE,
    BuildFix,
    ChangeResult,
    CheckResult,
    Override,
    WaveCheck,
    apply,
    check,
    fix_for,
    rollback,
)
from exwatch.mitigate.powershell import powershell
from exwatch.mitigate.remote import TargetResult, VerifyResult, WaveProbe, verify
from exwatch.mitigate.rules import MITIGATED_WAVES, RewriteRule, all_rules, rules_for, waves_for

__all__ = [
    "BuildFix",
    "ChangeResult",
    "CheckResult",
    "DEFAULT_MAX_CONFIG_KB",
    "MITIGATED_WAVES",
    "Override",
    "RewriteRule",
    "TEMPORARY_NOTE",
    "TargetResult",
    "VerifyResult",
    "WaveCheck",
    "WaveProbe",
    "all_rules",
    "apply",
    "check",
    "fix_for",
    "powershell",
    "rollback",
    "rules_for",
    "verify",
    "waves_for",
]
