"""Output a responder can act on: the table's confidence filter, titles (never a bare Sigma id), safe
excerpts (binary, control characters, rich markup, very long lines), next steps on a lab triage package,
and one time form (``Z``) everywhere in hunt output."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.hunt.nextsteps import facts_of, safe_text
from exwatch.hunt.rules.catalog import catalogue
from exwatch.hunt.rules.sigma_engine import load_rules
from exwatch.lab import triage

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
TIME_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
IIS_HEAD = (
    "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n#Date: 2021-03-03 00:00:00\n"
    "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
    "cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"
)


def _run(*args: str) -> Any:
    # A wide terminal, so that no table cell is folded in the middle of what a test looks for.
    return CliRunner(env={"COLUMNS": "400"}).invoke(cli, ["hunt", *args, "--no-store", "--jobs", "1"])


def _has(rule: str, text: str) -> bool:
    """Whether the rule id is in the text as a whole id (not a prefix of a longer one)."""
    return re.search(re.escape(rule) + r"(?![\w.])", text) is not None


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("out") / "EXCH01"
    truth = triage.write_triage(root, seed=21, size=300_000, scenarios=("all",))
    return root, truth


@pytest.fixture(scope="module")
def hunted(package: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    res = _run(str(package[0]), "--format", "json")
    assert res.exit_code == 1, res.output
    return json.loads(res.stdout)


def _table_part(text: str) -> str:
    """The findings table of a table output (the next steps also name rules, for files)."""
    return text.split("Next steps for", 1)[0]


def test_table_shows_likely_and_confirmed_by_default(
    package: tuple[Path, dict[str, Any]], hunted: dict[str, Any]
) -> None:
    root, _ = package
    by_conf: dict[str, set[str]] = {}
    for f in hunted["findings"]:
        by_conf.setdefault(f["confidence"], set()).add(f["rule"])
    review_only = by_conf["review"] - by_conf["likely"] - by_conf["confirmed"]
    likely_only = by_conf["likely"] - by_conf["confirmed"] - by_conf["review"]
    assert review_only and likely_only
    n_review = sum(1 for f in hunted["findings"] if f["confidence"] == "review")

    default = _run(str(root))
    assert default.exit_code == 1
    table = _table_part(default.stdout)
    assert not [r for r in review_only if _has(r, table)], "a review-only rule is in the default table"
    assert all(_has(r, table) for r in by_conf["confirmed"])
    assert f"{n_review} finding(s) below likely not shown" in default.stdout

    everything = _table_part(_run(str(root), "--all").stdout)
    assert all(_has(r, everything) for r in review_only)
    assert "not shown" not in everything
    assert _table_part(_run(str(root), "--min-confidence", "review").stdout) == everything
    assert _table_part(_run(str(root), "--min-confidence", "low").stdout) == everything

    confirmed = _table_part(_run(str(root), "--min-confidence", "confirmed").stdout)
    assert not [r for r in likely_only if _has(r, confirmed)]
    assert all(_has(r, confirmed) for r in by_conf["confirmed"])

    # json keeps every finding unless asked; the exit code never depends on the filter
    assert {f["confidence"] for f in hunted["findings"]} == {"review", "likely", "confirmed"}
    only = _run(str(root), "--format", "json", "--min-confidence", "confirmed")
    assert only.exit_code == 1
    doc = json.loads(only.stdout)
    assert {f["confidence"] for f in doc["findings"]} == {"confirmed"}
    assert doc["hosts"][0]["counts"] == hunted["hosts"][0]["counts"]


def test_every_builtin_rule_has_a_title() -> None:
    """The catalogue, the built-in Sigma rules and the YARA rules all carry a title of words."""
    for rid, info in catalogue().items():
        assert info.meaning.strip() and info.meaning.strip() != rid, rid
        assert not UUID.match(info.meaning.strip()), rid
    sigma_dir = Path(__file__).parents[2] / "src/exwatch/hunt/rules/sigma"
    rules = load_rules([sigma_dir])
    assert len(rules) >= 40
    for r in rules:
        assert r.title.strip() and not UUID.match(r.title.strip()), r.path
        assert r.rule_id in catalogue(), f"{r.path}: id {r.rule_id} not in the catalogue"
    yar = (Path(__file__).parents[2] / "src/exwatch/hunt/rules/yara/exwatch_webshells.yar").read_text()
    assert yar.count("\nrule ") + yar.startswith("rule ") == yar.count("description = ")


def test_findings_titles_are_words(hunted: dict[str, Any]) -> None:
    for f in hunted["findings"]:
        assert f["title"].strip() and not UUID.match(f["title"].strip()) and f["title"] != f["rule"], f


def test_user_sigma_rule_shown_by_its_title(tmp_path: Path) -> None:
    root = tmp_path / "EXCH09" / "inetpub/logs/LogFiles/W3SVC1"
    root.mkdir(parents=True)
    (root / "u_ex210303.log").write_text(
        IIS_HEAD + "2021-03-03 07:00:00 10.0.0.5 GET /owa/auth/zz9.aspx - 443 - 203.0.113.9 x - 200 0 0 20\n"
    )
    rid = "0f06a3a5-6a09-413f-8743-e6cf35561297"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yml").write_text(
        yaml.safe_dump(
            {
                "title": "Our zz9 web shell",
                "id": rid,
                "logsource": {"category": "webserver"},
                "detection": {"sel": {"cs-uri-stem|contains": "/owa/auth/zz9.aspx"}, "condition": "sel"},
                "level": "high",
            }
        )
    )
    res = _run(str(tmp_path / "EXCH09"), "--rules", str(rules))
    assert res.exit_code == 1, res.output
    table = _table_part(res.stdout)
    assert "Our zz9 web shell" in table
    doc = json.loads(_run(str(tmp_path / "EXCH09"), "--rules", str(rules), "--format", "json").stdout)
    (f,) = [f for f in doc["findings"] if rid in f["rule"]]
    assert f["title"] == "Our zz9 web shell"


def test_safe_text_escapes_and_caps() -> None:
    assert safe_text("a\x00b\x1b[31mc\td\n") == "a\\x00b\\x1b[31mc\\td\\n"
    assert safe_text("evil\u202etxt.aspx\u200b") == "evil\\u202etxt.aspx\\u200b"
    assert safe_text("x" * 500, 50) == "x" * 50 + "..."
    # an escape is never cut in half
    out = safe_text("a" * 48 + "\x00\x00", 50)
    assert out == "a" * 48 + "..."
    assert safe_text("C:\\inetpub\\wwwroot [red]x[/red]") == "C:\\inetpub\\wwwroot [red]x[/red]"


def test_table_excerpt_is_safe(tmp_path: Path) -> None:
    """Attacker bytes in a log line or a web shell: rich markup shown literally, control characters
    and binary as escapes, a very long line cut; the evidence is read, never changed."""
    logs = tmp_path / "EXCH02" / "inetpub/logs/LogFiles/W3SVC1"
    logs.mkdir(parents=True)
    ua = "Mozilla/5.0+[red]ALERT[/red]+[link=http://evil.example]x[/link]"
    long_query = "a=" + "B" * 100_000
    lines = [
        f"2021-03-03 07:00:00 10.0.0.5 POST /ecp/y.js - 443 - 203.0.113.7 {ua} - 200 0 0 20\n",
        "2021-03-03 07:00:01 10.0.0.5 POST /ecp/y.js x=\x1b[31mRED\x07 443 - 203.0.113.7 ua - 200 0 0 20\n",
        f"2021-03-03 07:00:02 10.0.0.5 POST /ecp/y.js {long_query} 443 - 203.0.113.7 ua - 200 0 0 20\n",
    ]
    log = logs / "u_ex210303.log"
    log.write_bytes((IIS_HEAD + "".join(lines)).encode())
    shell_dir = tmp_path / "EXCH02" / "inetpub/wwwroot/aspnet_client"
    shell_dir.mkdir(parents=True)
    shell = shell_dir / "zz.aspx"
    shell.write_bytes(
        b'\x00\x01\xff\xfe\x1b[2J<script language="JScript" runat="server">function Page_Load()'
        b'{eval(Request["k"],"unsafe");}</script>\x00\x9b31m'
    )
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (log, shell)}
    res = _run(str(tmp_path / "EXCH02"), "--all")
    assert res.exit_code == 1, res.output
    out = res.stdout
    assert "[red]ALERT[/red]" in out  # markup shown as written, not applied
    assert "[link=http://evil.example]" in out
    assert "\\x1b[31mRED\\x07" in out
    assert not [c for c in out if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0], (
        "raw control characters"
    )
    assert "\\x00" in out or "\\xff" in out  # the web shell's binary bytes, escaped
    assert "B" * 200 not in out  # a 100 KB line is cut in the table
    doc = json.loads(_run(str(tmp_path / "EXCH02"), "--format", "json").stdout)
    long_hits = [f for f in doc["findings"] if f["evidence"].get("line") == 7]
    assert long_hits and all(len(f["evidence"]["excerpt"]) <= 600 for f in long_hits)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (log, shell)} == before


def test_next_steps_on_a_lab_package(package: tuple[Path, dict[str, Any]], hunted: dict[str, Any]) -> None:
    root, truth = package
    steps = hunted["hosts"][0]["next_steps"]
    attacks = [i for i in truth["items"] if i["kind"] == "attack"]
    shells = {i["file"] for i in attacks if i["detection"] == "webshell.known_path"}
    assert shells
    files = {r["path"]: r for r in steps["files"]}
    for path in shells:
        assert files[path]["action"] == "remove"
        assert files[path]["sha256"] == hashlib.sha256((root / path).read_bytes()).hexdigest()
    dumps = {i["file"] for i in attacks if i["detection"] == "postexploit.lsass_dump"}
    assert dumps and dumps <= set(files)
    attacker_ips = {i["match"] for i in attacks if i["detection"] == "context.attacker_ip"}
    addresses = {r["address"]: r for r in steps["addresses"]}
    assert attacker_ips and attacker_ips <= set(addresses)
    assert all(addresses[ip]["published"] for ip in attacker_ips)
    assert "10.0.0.10" not in addresses or addresses["10.0.0.10"]["internal"]
    # the window brackets every planted attack at likely or above
    times = sorted(
        i["time"][:19] + "Z"
        for i in attacks
        if i["detection"] not in ("context.attacker_ip", "context.user_agent")
    )
    assert steps["window"]["first"] <= times[0] and steps["window"]["last"] >= times[-1]
    assert TIME_Z.match(steps["window"]["first"]) and TIME_Z.match(steps["window"]["last"])
    # accounts: read from the evidence itself (a user field of a likely or confirmed line)
    assert steps["accounts"]
    excerpts = " ".join(f["evidence"]["excerpt"] for f in hunted["findings"])
    assert all(a["account"] in excerpts for a in steps["accounts"])
    # files the logs name that are not in the package (the OAB generator's shell path)
    named = [r["path"] for r in steps["files_named_in_logs"]]
    assert any(p.lower().endswith(".aspx") for p in named), named
    # the fix: no store, no build in a lab package: per wave from the knowledge base
    assert steps["fix"]["source"] == "kb" and "Mar21SU" in steps["fix"]["text"]
    # the table ends with the same next steps
    table = _run(str(root)).stdout
    tail = table.split("Next steps for EXCH01", 1)[1]
    for path in shells:
        assert path in tail and files[path]["sha256"] in tail
    for ip in attacker_ips:
        assert ip in tail
    assert steps["window"]["first"] in tail and "Mar21SU" in tail


def test_one_time_form_everywhere(hunted: dict[str, Any]) -> None:
    seen = 0

    def walk(node: Any, key: str = "") -> None:
        nonlocal seen
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif key in ("time", "first", "last", "collected_at") and node is not None:
            assert TIME_Z.match(str(node)), (key, node)
            seen += 1

    walk(hunted)
    assert seen > 100


def test_facts_of_lines_and_events() -> None:
    iis = {
        "c-ip": "203.0.113.7",
        "cs-username": "-",
        "cs-method": "POST",
        "cs-uri-stem": "/ecp/y.js",
        "cs-uri-query": "-",
    }
    assert facts_of("iis", iis) == {"client_ip": "203.0.113.7", "url": "POST /ecp/y.js"}
    cmdlet = {
        "Provider_Name": "MSExchange CmdletLogs",
        "Data0": "New-MailboxExportRequest",
        "Data1": '-Mailbox "a@b.c" -FilePath "\\\\127.0.0.1\\C$\\inetpub\\wwwroot\\aspnet_client\\x.aspx"',
        "Data2": "contoso.com/Users/Administrator",
    }
    got = facts_of("event", cmdlet)
    assert got["path"].endswith("aspnet_client\\x.aspx") and got["user"] == "contoso.com/Users/Administrator"
    sec = {
        "Provider_Name": "Microsoft-Windows-Security-Auditing",
        "SubjectUserName": "EXCH01$",
        "SubjectDomainName": "CONTOSO",
        "CommandLine": "cmd /c whoami",
    }
    assert facts_of("event", sec) == {"user": "CONTOSO\\EXCH01$", "command": "cmd /c whoami"}


def test_excerpt_of_a_long_line_is_centred_on_the_match(tmp_path: Path) -> None:
    """Issue 16: on a 10 KB line whose matched part is near the end, the JSON excerpt and the table show
    that part, with "…" where the line is cut (not its first 600 or 160 characters)."""
    logs = tmp_path / "EXCH03" / "inetpub/logs/LogFiles/W3SVC1"
    logs.mkdir(parents=True)
    padding = "a=" + "B" * 10_000
    query = f"{padding}&Email=autodiscover/autodiscover.json%3f@evil.example/mapi/nspi"
    line = f"2021-08-13 07:00:00 10.0.0.5 GET /autodiscover/autodiscover.json {query} 443 - 203.0.113.9 ua - 200 0 0 20\n"
    (logs / "u_ex210813.log").write_text(IIS_HEAD + line)
    doc = json.loads(_run(str(tmp_path / "EXCH03"), "--format", "json").stdout)
    hit = next(f for f in doc["findings"] if f["rule"] == "proxyshell.autodiscover_success")
    excerpt = hit["evidence"]["excerpt"]
    assert len(line) > 10_000 and len(excerpt) <= 600
    assert excerpt.startswith("\u2026") and "%3f@evil.example/mapi/nspi" in excerpt
    assert excerpt.endswith(" 200 0 0 20")  # the end of the line is in reach: no cut there
    assert excerpt[1:] == line.rstrip("\n")[-len(excerpt) + 1 :]  # a slice of the line as written
    table = _run(str(tmp_path / "EXCH03"), "--all").stdout
    shown = [row for row in table.splitlines() if "%3f@evil" in row]
    assert shown and "\u2026" in shown[0] and "B" * 200 not in table


def test_centre_excerpt_marks_each_cut() -> None:
    from exwatch.hunt import centre_excerpt

    text = "x" * 1000 + "MATCH" + "y" * 1000
    view, at = centre_excerpt(text, 160, 1000)
    assert len(view) == 160 and view[0] == view[-1] == "\u2026"
    assert at is not None and view[at : at + 5] == "MATCH"
    head, at = centre_excerpt(text, 160, 20)  # a match in reach of the start: the start, cut at the end
    assert head == "x" * 159 + "\u2026" and at == 20
    assert centre_excerpt("short", 160, 2) == ("short", 2)
    tail, at = centre_excerpt(text, 160, len(text) - 3)
    assert tail[0] == "\u2026" and tail.endswith("yyy") and len(tail) == 160 and at == 160 - 3
    assert centre_excerpt(text, 160, None)[0] == "x" * 159 + "\u2026"


def test_csv_lists_the_json_findings(hunted: dict[str, Any], package: tuple[Path, dict[str, Any]]) -> None:
    """`--format csv`: one row per finding, as many and the same as the JSON document's (every
    confidence by default, as json/jsonl), with the evidence's place and facts in columns."""
    import csv
    import io

    res = _run(str(package[0]), "--format", "csv")
    assert res.exit_code == 1, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    findings = hunted["findings"]
    assert len(rows) == len(findings) > 0
    key = lambda r, e: (r["rule"], e["file"], str(e.get("line") or ""), str(e.get("record") or ""))  # noqa: E731
    assert sorted(key(r, r) for r in rows) == sorted(key(f, f["evidence"]) for f in findings)
    assert {r["confidence"] for r in rows} == {f["confidence"] for f in findings}
    assert all(TIME_Z.match(r["time"]) for r in rows if r["time"])
    likely = _run(str(package[0]), "--format", "csv", "--min-confidence", "likely")
    shown = list(csv.DictReader(io.StringIO(likely.stdout)))
    assert 0 < len(shown) < len(rows) and {r["confidence"] for r in shown} <= {"likely", "confirmed"}


def test_csv_cells_never_run_as_formulas(tmp_path: Path) -> None:
    """Attacker text that a spreadsheet would run (=, +, -, @ first) is written with a leading
    apostrophe (OWASP CSV injection); the evidence keeps it as it was."""
    import csv
    import io

    logs = tmp_path / "EXCH03" / "inetpub/logs/LogFiles/W3SVC1"
    logs.mkdir(parents=True)
    user = '=HYPERLINK("http://evil.example","x")'
    log = logs / "u_ex210303.log"
    log.write_text(
        IIS_HEAD + f"2021-03-03 07:00:00 10.0.0.5 POST /ecp/y.js - 443 {user} 203.0.113.7 ua - 200 0 0 20\n"
    )
    res = _run(str(tmp_path / "EXCH03"), "--format", "csv")
    assert res.exit_code == 1, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows and all(r["user"] == "'" + user for r in rows), rows
    for row in rows:
        assert not any(v.startswith(("=", "+", "-", "@")) for v in row.values() if v), row
    assert user in log.read_text()
