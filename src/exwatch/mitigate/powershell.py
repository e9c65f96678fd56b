"""PowerShell (WebAdministration) commands that apply, check or roll back the rules by hand."""

from __future__ import annotations

from exwatch.mitigate.rules import RewriteRule, rules_for

SITE = r"IIS:\Sites\Default Web Site"
FILTER = "system.webServer/rewrite/rules"


def _ps(value: str) -> str:
    """A single-quoted PowerShell string literal."""
    return "'" + value.replace("'", "''") + "'"


def _apply_rule(rule: RewriteRule, index: int) -> list[str]:
    # Remove a rule of the same name first, as Microsoft's scripts do, so that re-running is idempotent.
    # patternSyntax 'Regular Expressions' is the value EOMT passes (mitigations.md section 1).
    root = f"{FILTER}/rule[@name={_ps(rule.name)}]"
    stop = "True" if rule.stop_processing else "False"
    return [
        f"# {rule.name} ({rule.cve}, {rule.wave})",
        f"$root = {_ps(root)}",
        "if (Get-WebConfiguration -PSPath $site -Filter $root) { Clear-WebConfiguration -PSPath $site -Filter $root }",
        "Add-WebConfigurationProperty -PSPath $site -Filter $filter -Name '.' -AtIndex "
        f"{index} -Value @{{name={_ps(rule.name)}; patternSyntax='Regular Expressions'; stopProcessing='{stop}'}}",
        f"Set-WebConfigurationProperty -PSPath $site -Filter \"$root/match\" -Name 'url' -Value {_ps(rule.match_url)}",
        "Add-WebConfigurationProperty -PSPath $site -Filter \"$root/conditions\" -Name '.' -Value "
        f"@{{input={_ps(rule.input)}; matchType='0'; pattern={_ps(rule.pattern)}; ignoreCase='True'; negate='False'}}",
        f"Set-WebConfigurationProperty -PSPath $site -Filter \"$root/action\" -Name 'type' -Value {_ps(rule.action)}",
        "",
    ]


def _rollback_rule(rule: RewriteRule) -> list[str]:
    root = f"{FILTER}/rule[@name={_ps(rule.name)}]"
    return [
        f"$root = {_ps(root)}",
        "if (Get-WebConfiguration -PSPath $site -Filter $root) {",
        "    Clear-WebConfiguration -PSPath $site -Filter $root",
        f"    Write-Host {_ps('removed: ' + rule.name)}",
        f"}} else {{ Write-Host {_ps('not present: ' + rule.name)} }}",
    ]


def _check_rule(rule: RewriteRule) -> list[str]:
    root = f"{FILTER}/rule[@name={_ps(rule.name)}]"
    return [
        f"$r = Get-WebConfiguration -PSPath $site -Filter {_ps(root)}",
        f"if ($r) {{ Write-Host {_ps('present: ' + rule.name)} "
        '("pattern=" + $r.conditions.Collection[0].pattern + " input=" + $r.conditions.Collection[0].input '
        '+ " action=" + $r.action.type + " stopProcessing=" + $r.stopProcessing) }',
        f"else {{ Write-Host {_ps('MISSING: ' + rule.name)} }}",
    ]


def powershell(wave: str = "all", action: str = "all") -> str:
    """The script for ``wave``: ``apply``, ``check``, ``rollback`` or ``all`` (three commented parts)."""
    rules = rules_for(wave)
    lines = [
        f"# exwatch mitigate script --wave {wave}: IIS URL Rewrite mitigation on Default Web Site.",
        "# Run in an elevated PowerShell on each Exchange server with the IIS URL Rewrite module installed.",
        "# Temporary mitigation, not a fix: install the security update. A CU install removes the rules.",
        "Import-Module WebAdministration",
        f"$site = {_ps(SITE)}",
        f"$filter = {_ps(FILTER)}",
        "",
    ]
    if action in ("apply", "all"):
        lines += ["# --- apply ---"]
        for i, rule in enumerate(rules):
            lines += _apply_rule(rule, i)
    if action in ("check", "all"):
        lines += ["# --- check ---"]
        for rule in rules:
            lines += _check_rule(rule)
        lines += [""]
    if action in ("rollback", "all"):
        prefix = "# " if action == "all" else ""
        lines += [
            "# --- rollback (after the security update is installed; uncomment to run) ---"
            if prefix
            else "# --- rollback ---"
        ]
        body: list[str] = []
        for rule in rules:
            body += _rollback_rule(rule)
        # As EOMT's rollback: clear the whole rules element when nothing is left in it.
        body += [
            'if (-not (Get-WebConfiguration -PSPath $site -Filter "$filter/rule")) { Clear-WebConfiguration -PSPath $site -Filter $filter }'
        ]
        lines += [prefix + line for line in body]
    return "\n".join(lines).rstrip("\n") + "\n"
