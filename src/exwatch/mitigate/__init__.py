"""IIS URL Rewrite mitigations: check, apply and roll back web.config rules; PowerShell; remote verify."""

from __future__ import annotations

from exwatch.mitigate.operations import TEMPORARY_NOTE, ChangeResult, CheckResult, apply, check, rollback
from exwatch.mitigate.powershell import powershell
from exwatch.mitigate.remote import VerifyResult, verify
from exwatch.mitigate.rules import MITIGATED_WAVES, RewriteRule, all_rules, rules_for

__all__ = [
    "MITIGATED_WAVES",
    "TEMPORARY_NOTE",
    "ChangeResult",
    "CheckResult",
    "RewriteRule",
    "VerifyResult",
    "all_rules",
    "apply",
    "check",
    "powershell",
    "rollback",
    "rules_for",
    "verify",
]
