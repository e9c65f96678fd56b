"""apply / check / rollback on web.config files shaped like real ones, through the CLI and the library."""

from __future__ import annotations

import codecs
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.mitigate import apply, check, rollback
from exwatch.mitigate.rules import all_rules
from exwatch.mitigate.xmltext import decode_bytes

from .conftest import DATA, GOOD, MALFORMED, sha256


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob("web.config.exwatch-*.bak"))


def test_sample_sets_are_not_empty() -> None:
    """The parametrized tests below run over these globs: an empty glob would pass them silently."""
    assert len(GOOD) == 9 and "utf16_bom_crlf.config" in GOOD
    assert len(MALFORMED) == 5


@pytest.mark.parametrize("name", GOOD)
def test_apply_check_idempotent_rollback_identity(name: str, copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config(name)
    os.chmod(path, 0o640)
    original = path.read_bytes()

    code, out, err = run("mitigate", "apply", "--web-config", str(path), "--format", "json")
    assert code == 0, err
    applied = path.read_bytes()
    report = json.loads(out)
    if report["changed"]:
        assert applied != original
        assert [b.read_bytes() for b in backups(path)] == [original]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

    code, out, _ = run("mitigate", "check", "--web-config", str(path), "--format", "json")
    assert code == 0, out
    waves = json.loads(out)["waves"]
    assert {w: v["state"] for w, v in waves.items()} == {
        "proxylogon": "mitigated",
        "proxynotshell": "mitigated",
    }

    code, out, _ = run("mitigate", "apply", "--web-config", str(path), "--format", "json")
    assert code == 0 and json.loads(out)["changed"] is False
    assert path.read_bytes() == applied

    code, out, _ = run("mitigate", "rollback", "--web-config", str(path), "--format", "json")
    assert code == 0
    if name.startswith(("mitigated", "renamed")):
        return  # not applied by us: rollback removes the named rules, which is a different file
    assert path.read_bytes() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("name", GOOD)
def test_encoding_bom_and_newlines_kept(name: str, copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config(name)
    original = path.read_bytes()
    apply(path, "all")
    new = path.read_bytes()
    old_text, old_enc = decode_bytes(original)
    new_text, new_enc = decode_bytes(new)
    assert new_enc == old_enc and new.startswith(old_enc.bom)
    if "\r\n" in old_text:
        assert new_text.count("\n") == new_text.count("\r\n")  # every newline, ours included, is CRLF
    else:
        assert "\r" not in new_text
    if name == "no_webserver_latin1.config":
        assert "Jürgen".encode("latin-1") in new and "Jürgen".encode() not in new
        assert check(path).waves["proxylogon"].state == "mitigated"
    if name == "no_rewrite_tabs_crlf.config":
        assert "\r\n\t\t<rewrite>\r\n\t\t\t<!-- exwatch" in new_text
    if name == "utf16_bom_crlf.config":
        assert new.startswith(codecs.BOM_UTF16_LE) and "Größe".encode("utf-16-le") in new
    if name == "self_closing_rules.config":
        assert "      <rules>\n        <!-- exwatch" in new_text
        return  # <rules/> itself was opened
    # everything that was in the file is still there, in order
    pos = 0
    for line in old_text.splitlines():
        found = new_text.find(line, pos)
        assert found >= 0, line
        pos = found + len(line)


def test_inserted_before_other_rules_after_clear(copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("other_rules_comments.config")
    apply(path, "all")
    text = path.read_text()
    order = [
        text.index(s)
        for s in (
            "<clear />",
            "X-AnonResource-Backend",
            "X-BEResource Abort",
            "PowerShell - inbound",
            "Root to OWA",
        )
    ]
    assert order == sorted(order)
    # rules laid out in the file's own style: 8 spaces before <rule, 10 before <match
    assert (
        '\n        <rule name="PowerShell - inbound" patternSyntax="ECMAScript" stopProcessing="true">\n          <match url=".*" />'
        in text
    )


def test_location_site_rules_used(copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("location_site.config")
    apply(path, "proxynotshell")
    text = path.read_text()
    assert text.count("<rules>") == 1 and text.index("PowerShell - inbound") < text.index("Block TRACE")
    assert check(path, "proxynotshell").waves["proxynotshell"].state == "mitigated"


def test_self_closing_rules_opened_then_closed(copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("self_closing_rules.config")
    original = path.read_bytes()
    apply(path, "proxylogon")
    assert b"<rules/>" not in path.read_bytes()
    rollback(path, "proxylogon")
    assert path.read_bytes() == original


def test_partial_rollback_equals_single_wave_apply(copy_config) -> None:  # type: ignore[no-untyped-def]
    for name in ("other_rules_comments.config", "iis_default_bom_crlf.config", "no_webserver_latin1.config"):
        both = copy_config(name)
        apply(both, "all")
        result = rollback(both, "proxylogon")
        assert result.removed == ["X-AnonResource-Backend Abort - inbound", "X-BEResource Abort - inbound"]
        only = both.parent.parent / f"only-{name}"
        only.mkdir()
        single = only / "web.config"
        single.write_bytes((DATA / name).read_bytes())
        apply(single, "proxynotshell")
        assert both.read_bytes() == single.read_bytes(), name


def test_already_mitigated_is_not_touched(copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("mitigated_attr_order.config")
    before = path.read_bytes()
    result = apply(path, "all")
    assert result.changed is False and result.backup is None and backups(path) == []
    assert path.read_bytes() == before
    assert len(result.present) == 3


def test_renamed_rule_counts_by_semantics(copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("renamed_rule.config")
    result = check(path, "proxynotshell")
    status = result.waves["proxynotshell"].rules[0]
    assert (status.status, status.found_as) == ("ok", "Block ProxyNotShell")
    assert apply(path, "proxynotshell").changed is False


def test_wrong_pattern_reported_refused_then_forced(copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("wrong_pattern.config")
    digest = sha256(path)
    code, out, _ = run(
        "mitigate", "check", "--web-config", str(path), "--wave", "proxynotshell", "--format", "json"
    )
    assert code == 1
    rule = json.loads(out)["waves"]["proxynotshell"]["rules"][0]
    assert rule["status"] == "invalid"
    assert (
        "condition pattern is '(?=.*autodiscover)', expected '(?=.*autodiscover)(?=.*powershell)'"
        in rule["problems"]
    )

    code, _, err = run("mitigate", "apply", "--web-config", str(path), "--wave", "proxynotshell")
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert sha256(path) == digest and backups(path) == []

    code, out, _ = run(
        "mitigate",
        "apply",
        "--web-config",
        str(path),
        "--wave",
        "proxynotshell",
        "--force",
        "--format",
        "json",
    )
    assert code == 0 and json.loads(out)["replaced"] == ["PowerShell - inbound"]
    assert "(?=.*autodiscover)(?=.*powershell)" in path.read_text()
    assert path.read_text().count("PowerShell - inbound") == 1
    assert check(path, "proxynotshell").waves["proxynotshell"].state == "mitigated"


def test_location_without_inheritance(copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("location_noinherit.config")
    digest = sha256(path)
    wc = check(path, "proxynotshell").waves["proxynotshell"]
    assert wc.state == "not_mitigated"
    assert any("inheritInChildApplications" in p for p in wc.rules[0].problems)
    code, _, err = run("mitigate", "apply", "--web-config", str(path), "--force")
    assert code == 2 and "inheritInChildApplications" in err
    assert sha256(path) == digest


@pytest.mark.parametrize("name", MALFORMED)
@pytest.mark.parametrize("command", ["check", "apply", "rollback"])
def test_malformed_left_untouched(name: str, command: str, copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config(name)
    digest = sha256(path)
    code, out, err = run("mitigate", command, "--web-config", str(path))
    assert code == 2, (out, err)
    assert err.startswith("exwatch: error: ") and len(err.strip().splitlines()) == 1
    assert str(path) in err
    assert sha256(path) == digest
    assert sorted(p.name for p in path.parent.iterdir()) == ["web.config"]


def test_malformed_messages_say_why(copy_config) -> None:  # type: ignore[no-untyped-def]
    expected = {
        "malformed_unclosed.config": "mismatched tag at line 6",
        "malformed_not_iis.config": "not an IIS configuration file",
        "malformed_doctype.config": "DOCTYPE",
        "malformed_bad_utf8.config": "not valid utf-8",
        "malformed_empty.config": "malformed XML",
    }
    for name, words in expected.items():
        _, _, err = run("mitigate", "check", "--web-config", str(copy_config(name)))
        assert words in err, (name, err)


@pytest.mark.parametrize("command", ["apply", "rollback"])
def test_read_only_file_refused(command: str, copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("iis_default_bom_crlf.config")
    if command == "rollback":
        apply(path, "all")
        for b in backups(path):
            b.unlink()
    os.chmod(path, 0o444)
    digest = sha256(path)
    code, _, err = run("mitigate", command, "--web-config", str(path))
    assert code == 2 and "read-only" in err
    assert sha256(path) == digest and backups(path) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_missing_file(tmp_path: Path) -> None:
    for command in ("check", "apply", "rollback"):
        code, _, err = run("mitigate", command, "--web-config", str(tmp_path / "nope" / "web.config"))
        assert code == 2 and "no such file" in err
    assert list(tmp_path.iterdir()) == []


def test_check_unmitigated_exit_1_and_table(copy_config) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("iis_default_bom_crlf.config")
    code, out, err = run("mitigate", "check", "--web-config", str(path))
    assert code == 1
    for rule in all_rules():
        assert rule.name in out
    assert (
        "proxylogon: not_mitigated (missing: X-AnonResource-Backend Abort - inbound, X-BEResource Abort - inbound)"
        in out
    )
    assert "temporary mitigation" in err


def _exchange_tree(root: Path, children: dict[str, str]) -> Path:
    for rel, body in children.items():
        f = root / "FrontEnd" / "HttpProxy" / rel / "web.config"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(body)
    return root


CHILD = '<?xml version="1.0"?>\n<configuration>\n  <system.webServer>\n    <rewrite>\n      <rules>\n{body}\n      </rules>\n    </rewrite>\n  </system.webServer>\n</configuration>\n'


def test_child_configs_clear_and_remove(copy_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = copy_config("mitigated_attr_order.config")
    clean = _exchange_tree(tmp_path / "clean", {"owa": CHILD.format(body=""), "ecp": "<configuration/>"})
    result = check(path, exchange_path=clean)
    assert {w.state for w in result.waves.values()} == {"mitigated"} and len(result.children) == 2

    clearing = _exchange_tree(tmp_path / "clearing", {"owa": CHILD.format(body="        <clear />")})
    result = check(path, exchange_path=clearing)
    assert {w.state for w in result.waves.values()} == {"not_mitigated"}
    assert "Revert to Parent" in result.waves["proxylogon"].reason
    assert result.waves["proxylogon"].overrides[0].kind == "clear"

    removing = _exchange_tree(
        tmp_path / "removing",
        {"ecp/sub": CHILD.format(body='        <remove name="powershell - INBOUND" />')},
    )
    result = check(path, exchange_path=removing)
    assert result.waves["proxylogon"].state == "mitigated"
    assert result.waves["proxynotshell"].state == "not_mitigated"
    assert [o.to_dict() for o in result.waves["proxynotshell"].overrides] == [
        {
            "file": str(removing / "FrontEnd/HttpProxy/ecp/sub/web.config"),
            "kind": "remove",
            "names": ["PowerShell - inbound"],
        }
    ]

    broken = _exchange_tree(tmp_path / "broken", {"owa": "<configuration><oops></configuration>"})
    code, out, _ = run(
        "mitigate", "check", "--web-config", str(path), "--exchange-path", str(broken), "--format", "json"
    )
    assert code == 3
    doc = json.loads(out)
    assert doc["waves"]["proxylogon"]["state"] == "unknown" and "mismatched tag" in doc["errors"][0]["error"]

    code, _, err = run(
        "mitigate",
        "check",
        "--web-config",
        str(path),
        "--exchange-path",
        str(tmp_path / "clean" / "FrontEnd"),
    )
    assert code == 2 and "HttpProxy" in err


def test_rules_in_sub_path_location_are_warned(tmp_path: Path) -> None:
    path = tmp_path / "web.config"
    rule = (DATA / "wrong_pattern.config").read_text().split("<rules>")[1].split("</rules>")[0]
    rule = rule.replace("(?=.*autodiscover)", "(?=.*autodiscover)(?=.*powershell)")
    path.write_text(
        f'<configuration><location path="owa"><system.webServer><rewrite><rules>{rule}</rules></rewrite>'
        "</system.webServer></location></configuration>"
    )
    result = check(path, "proxynotshell")
    assert result.waves["proxynotshell"].state == "not_mitigated"
    assert any('location path="owa"' in w for w in result.warnings)


def test_check_names_the_fixing_update(copy_config) -> None:  # type: ignore[no-untyped-def]
    from exwatch.kb import verdict

    path = copy_config("iis_default_bom_crlf.config")
    code, out, _ = run(
        "mitigate", "check", "--web-config", str(path), "--build", "15.1.2176.2", "--format", "json"
    )
    assert code == 1
    doc = json.loads(out)
    expected = verdict("15.1.2176.2").to_dict()["waves"]
    for wave in ("proxylogon", "proxynotshell"):
        fix = doc["waves"][wave]["fix"]
        assert fix["state"] == "vulnerable" and fix["build"] == "15.1.2176.2"
        assert fix["security_update"] == expected[wave]["fix"]["security_update"]
        assert fix["text"] == expected[wave]["fix"]["text"]
    assert "15.1.2176.9" in doc["waves"]["proxylogon"]["fix"]["security_update"]
    assert "temporary mitigation" in doc["note"]

    code, out, _ = run("mitigate", "check", "--web-config", str(path), "--build", "15.1.2176.2")
    assert (
        code == 1
        and "proxylogon: build 15.1.2176.2 is vulnerable: " + expected["proxylogon"]["fix"]["text"] in out
    )

    # a patched build: the missing rules expose nothing, and the output says the rules can go
    code, out, _ = run(
        "mitigate", "check", "--web-config", str(path), "--build", "15.2.1118.20", "--wave", "proxynotshell"
    )
    assert code == 0 and "is patched; the rules are no longer needed" in out

    code, _, err = run("mitigate", "check", "--web-config", str(path), "--build", "16.9")
    assert code == 2 and err.startswith("exwatch: error: ")


def test_apply_refuses_when_a_later_remove_would_drop_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "web.config"
    path.write_text(
        "<configuration>\n  <system.webServer>\n    <rewrite>\n      <rules>\n"
        '        <rule name="A"><match url="^a$" /><action type="None" /></rule>\n'
        '        <remove name="PowerShell - inbound" />\n'
        "      </rules>\n    </rewrite>\n  </system.webServer>\n</configuration>\n"
    )
    digest = sha256(path)
    code, _, err = run("mitigate", "apply", "--web-config", str(path), "--wave", "proxynotshell")
    assert code == 2 and "would not take effect" in err and "<remove" in err
    assert sha256(path) == digest and backups(path) == []


def test_symlinked_config_is_edited_through_the_link_when_asked(copy_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    real = copy_config("other_rules_comments.config")
    link = tmp_path / "link.config"
    link.symlink_to(real)
    original = real.read_bytes()
    apply(link, "proxynotshell", follow_symlinks=True)
    assert link.is_symlink() and b"PowerShell - inbound" in real.read_bytes()
    rollback(link, "proxynotshell", follow_symlinks=True)
    assert link.is_symlink() and real.read_bytes() == original
