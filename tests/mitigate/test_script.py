"""The PowerShell script: the same rules as the data, the WebAdministration cmdlets, and a rollback."""

from __future__ import annotations

from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.mitigate import powershell
from exwatch.mitigate.rules import rules_for


def test_script_carries_every_rule_value() -> None:
    for wave in ("proxylogon", "proxynotshell", "all"):
        text = powershell(wave, "apply")
        rules = rules_for(wave)
        assert text.count("Add-WebConfigurationProperty -PSPath $site -Filter $filter -Name '.'") == len(
            rules
        )
        for i, rule in enumerate(rules):
            assert (
                f"@{{name='{rule.name}'; patternSyntax='Regular Expressions'; stopProcessing='{rule.stop_processing}'}}"
                in text
            )
            assert f"-AtIndex {i} " in text
            assert (
                f"@{{input='{rule.input}'; matchType='0'; pattern='{rule.pattern}'; ignoreCase='True'; negate='False'}}"
                in text
            )
            assert f"$root = 'system.webServer/rewrite/rules/rule[@name=''{rule.name}'']'" in text
        assert "$site = 'IIS:\\Sites\\Default Web Site'" in text
        assert "Clear-WebConfiguration" in text  # same-named rule removed first: idempotent
        assert (
            "Set-WebConfigurationProperty -PSPath $site -Filter \"$root/action\" -Name 'type' -Value 'AbortRequest'"
            in text
        )


def test_rollback_and_all() -> None:
    rollback = powershell("proxynotshell", "rollback")
    assert "Add-WebConfigurationProperty" not in rollback
    assert "Clear-WebConfiguration -PSPath $site -Filter $root" in rollback
    assert "PowerShell - inbound" in rollback and "X-BEResource" not in rollback
    everything = powershell("all", "all")
    apply_part, rest = everything.split("# --- check ---")
    check_part, rollback_part = rest.split("# --- rollback")
    assert "Add-WebConfigurationProperty" in apply_part and "Get-WebConfiguration" in check_part
    # rollback lines are commented out so that running the whole script never undoes the mitigation
    assert all(line.startswith("#") for line in rollback_part.splitlines()[1:] if line)


def test_cli_script() -> None:
    result = CliRunner().invoke(cli, ["mitigate", "script", "--wave", "proxylogon", "--action", "apply"])
    assert result.exit_code == 0
    assert result.stdout == powershell("proxylogon", "apply")
