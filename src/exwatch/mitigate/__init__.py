"""IIS URL Rewrite mitigations: check, apply and roll back web.config rules; PowerShell; remote verify."""

from __future__ import annotations

from typing import Any

from exwatch.mitigate.operations import TEMPORARY_NOTE, ChangeResult, CheckResult, apply, check, rollback
from exwatch.mitigate.powershell import powershell
from exwatch.mitigate.rules import MITIGATED_WAVES, RewriteRule, all_rules, rules_for


def verify(*args: Any, **kwargs: Any) -> Any:
    """Probe targets for the mitigation (see ``exwatch.mitigate.verify.verify``)."""
    from exwatch.mitigate.verify import verify as _verify

    return _verify(*args, **kwargs)


__all__ = [
    "MITIGATED_WAVES",
    "TEMPORARY_NOTE",
    "ChangeResult",
    "CheckResult",
    "RewriteRule",
    "all_rules",
    "apply",
    "check",
    "powershell",
    "rollback",
    "rules_for",
    "verify",
]
