"""The generated PowerShell collector: it parses (tree-sitter-powershell), for every option combination, and
carries the families data verbatim. No Windows machine runs it here: see docs/collect.md."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest
import tree_sitter
import tree_sitter_powershell

from exwatch.cli.main import main
from exwatch.collect.families import data_text, families
from exwatch.collect.script import embedded_families, generate

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
SINCES = [None, datetime(2021, 1, 3, tzinfo=UTC)]
MAX_BYTES = [None, 1, 2 * 10**9]
OUT_FILES = ["", "%windir%\\Temp\\exwatch-collect-1.zip", "C:\\it's here\\x.zip"]


def _errors(source: str) -> list[str]:
    tree = PARSER.parse(source.encode("utf-8"))
    bad: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            line = source.splitlines()[node.start_point[0]]
            bad.append(f"{node.type} at line {node.start_point[0] + 1}: {line.strip()[:100]}")
        stack.extend(node.children)
    return bad


def _nodes(source: str, kind: str) -> list[str]:
    tree = PARSER.parse(source.encode("utf-8"))
    out, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == kind:
            out.append(source.encode("utf-8")[node.start_byte : node.end_byte].decode())
        stack.extend(node.children)
    return out


@pytest.mark.parametrize(
    ("since", "max_bytes", "out_file"), list(itertools.product(SINCES, MAX_BYTES, OUT_FILES))
)
def test_every_option_combination_parses_without_error(
    since: datetime | None, max_bytes: int | None, out_file: str
) -> None:
    script = generate(out_file=out_file, since=since, max_bytes=max_bytes)
    assert _errors(script) == []
    assert script.isascii() and "\r\n" in script and "\n" not in script.replace("\r\n", "")
    if since:
        assert "[string]$Since = '2021-01-03T00:00:00.000000Z'" in script
    if max_bytes:
        assert f"[long]$MaxBytes = {max_bytes}" in script
    if out_file:
        assert "[string]$OutFile = '" + out_file.replace("'", "''") + "'" in script


def test_the_parser_does_see_errors() -> None:
    """Guard against a parser that accepts anything: a broken copy of the script has error nodes."""
    script = generate()
    assert (
        _errors(
            script.replace(
                "function Get-FilesUnder([string]$Folder, [bool]$Recurse) {", "function Get-FilesUnder("
            )
        )
        != []
    )
    assert _errors("foreach ($x in ) { ") != []


def test_it_carries_the_families_data_verbatim_and_names_every_family() -> None:
    script = generate()
    assert embedded_families(script) == json.loads(data_text())
    for fam in families():
        assert f'"name":"{fam.name}"' in script
        for sub in fam.paths:
            assert json.dumps(sub) in script
        for ch in fam.channels:
            assert json.dumps(ch.channel) in script


def test_the_script_interprets_every_key_of_the_data() -> None:
    """Each key of a family is read by the script's code (outside the embedded data), as $Family.<key> or
    $channel.<key>: a key the script ignored would make the data say something the server does not do."""
    script = generate()
    code = script.split("$FamiliesJson = @'", 1)[0] + script.split("'@", 1)[1]
    raw = json.loads(data_text())
    keys = {k for f in raw["families"] for k in f} - {"name", "hunt", "optional"}
    members = set(_nodes(code, "member_access"))
    read = {m.split(".")[-1] for m in members}
    assert keys <= read | {"kind"}, keys - read
    assert "$Family.kind" in code and "$family.kind" in code
    for key in ("channel", "file"):
        assert f"$channel.{key}" in code


def test_script_uses_shared_reads_and_the_streaming_zip() -> None:
    code = generate()
    assert "[System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete" in code
    assert "System.IO.Compression.ZipArchive" in code and "Compress-Archive" not in code
    assert "wevtutil.exe epl" in code
    assert "$env:ExchangeInstallPath" in code and "MsiInstallPath" in code
    assert "applicationHost.config" in code and "ExpandEnvironmentVariables" in code
    commands = {c.split()[0].lower() for c in _nodes(code, "command_name")}
    # Only commands Windows PowerShell 5.1 has without any module to install.
    allowed = {
        "set-strictmode", "test-path", "get-itemproperty", "get-item", "join-path", "new-object", "foreach-object", "where-object",
        "sort-object", "convertfrom-json", "convertto-json", "write-output", "write-verbose", "add-type",
        "new-item", "remove-item", "move-item", "get-location", "get-date", "wevtutil.exe", "invoke-collection",
        "stop-collection", "format-utctime", "add-skipped", "test-wildcard", "get-packagepath", "open-shared",
        "read-sharedtext", "get-exchangesetup", "get-iislogfolders", "get-profilefolders", "get-basefolders",
        "get-filesunder", "export-eventlogs", "add-familyfiles", "select-admitted", "write-member",
    }  # fmt: skip
    assert commands <= allowed, commands - allowed


def test_cli_writes_the_script(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "collect.ps1"
    with pytest.raises(SystemExit) as exc:
        main(["collect", "script", "--out", str(out), "--since", "2021-01-03", "--max-bytes", "2GB"])
    assert exc.value.code == 0
    text = out.read_bytes().decode("ascii")
    assert "[long]$MaxBytes = 2000000000" in text and _errors(text) == []
    with pytest.raises(SystemExit) as exc:
        main(["collect", "script", "--max-bytes", "lots"])
    assert exc.value.code == 2
    assert "--max-bytes 'lots' is not a size" in capsys.readouterr().err
