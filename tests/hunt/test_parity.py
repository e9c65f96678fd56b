"""docs/parity.md is a test: every Microsoft check in it flags its hit case and not its near-miss, and
exwatch flags every hit with one of the rules the row names (at least at review).

The Microsoft checks are re-implemented here as published (PowerShell ``-like`` wildcards are
case-insensitive ``fnmatch``; ``Select-String`` is a case-insensitive regular expression over the raw line;
``Import-Csv`` reads the ``#Fields`` columns), so the cases are proven to be what each check flags.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.logformats import HTTPPROXY_FIELDS, join_exchange_csv, split_exchange_csv

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "parity.md"
CASES = yaml.safe_load((Path(__file__).parent / "parity" / "cases.yaml").read_text(encoding="utf-8"))
INSTALL = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\"
NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def doc_rows() -> list[dict[str, Any]]:
    """The parity table of docs/parity.md: check, source, rules, case."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| ") or line.startswith("| Check"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, line
        check, source, rules, case = cells
        rows.append(
            {
                "check": check,
                "source": source,
                "rules": re.findall(r"`([a-z]+\.[a-z0-9_]+)`", rules),
                "case": case.strip("`"),
            }
        )
    return rows


ROWS = doc_rows()


def like(value: str, pattern: str) -> bool:
    """PowerShell ``-like``: case-insensitive wildcards (``*``, ``?``, ``[...]``)."""
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _line(ev: Any) -> str:
    return ev if isinstance(ev, str) else join_exchange_csv([str(ev.get(f, "")) for f in HTTPPROXY_FIELDS])


def _row(ev: Any) -> dict[str, str]:
    return dict(zip(HTTPPROXY_FIELDS, split_exchange_csv(_line(ev)), strict=True))


def _iis(line: str) -> dict[str, str]:
    names = [
        "date",
        "time",
        "s-ip",
        "cs-method",
        "cs-uri-stem",
        "cs-uri-query",
        "s-port",
        "cs-username",
        "c-ip",
        "cs(User-Agent)",
        "cs(Referer)",
        "sc-status",
        "sc-substatus",
        "sc-win32-status",
        "time-taken",
    ]
    return dict(zip(names, line.split(" "), strict=True))


def _event_text(ev: dict[str, Any]) -> str:
    return " ".join(str(x) for x in ev["data"])


def check_tpl_26855(ev: Any) -> bool:
    a = _row(ev)["AnchorMailbox"]
    return (
        like(a, "ServerInfo~*/*")
        and not like(a, "ServerInfo~*/autodiscover*")
        and not like(a, "ServerInfo~localhost*/*")
    )


def check_hafnium_26855(ev: Any) -> bool:
    r = _row(ev)
    return r["AuthenticatedUser"] == "" and like(r["AnchorMailbox"], "ServerInfo~*/*")


def check_tpl_26857(ev: dict[str, Any]) -> bool:
    return (
        ev["provider"] == "MSExchange Unified Messaging"
        and int(ev["level"]) == 2
        and like(_event_text(ev), "*System.InvalidCastException*")
    )


def check_tpl_26858(line: str) -> bool:
    m = re.search(r"Download failed and temporary file (.*?) needs to be removed", line, re.I)
    return bool(m) and not m.group(1).lower().startswith(("'" + INSTALL + "ClientAccess\\OAB").lower())


def check_tpl_27065_reset(ev: Any) -> bool:
    r = _row(ev)
    return like(r["AnchorMailbox"], "ServerInfo~*/*Reset*VirtualDirectory#") and r["HttpStatus"] == "200"


def check_tpl_27065_ecp(line: str) -> bool:
    rx = r"Set-.+VirtualDirectory.+?(?=Url).+<\w+.*>(.*?)<\/\w+>.+?(?=VirtualDirectory)"
    return re.search(rx, line, re.I) is not None


def check_hafnium_27065(line: str) -> bool:
    return re.search(r"Set-.+VirtualDirectory", line, re.I) is not None


def check_tpl_lsass(rel: str) -> bool:
    low = rel.lower()
    under = low.startswith("root/") or low.startswith("windows/temp/")
    return under and like(rel.rsplit("/", 1)[-1], "lsass.*dmp")


def check_tpl_archive(rel: str) -> bool:
    return rel.lower().startswith("programdata/") and rel.lower().endswith((".7z", ".zip", ".rar"))


def check_msrc_41040(line: str) -> bool:
    return re.search(r"powershell.*autodiscover\.json.*\@.*200", line, re.I) is not None


def check_sentinel_proxyshell(line: str) -> bool:
    r = _iis(line)
    q = "" if r["cs-uri-query"] == "-" else r["cs-uri-query"]
    if r["sc-status"] not in ("200", "302", "401") or not r["cs-uri-stem"].startswith(
        "/autodiscover/autodiscover.json"
    ):
        return False
    return bool(
        ("protocol" not in q.lower() and q)
        or any(x in q.lower() for x in ("/mapi/", "powershell"))
        or ("@" in q and re.search(r"\.[a-zA-Z]{2,4}?(?:[a-zA-Z]{2,4}\/)", q))
        or (":" in q and re.search(r"\:[0-9]{2,4}\/", q))
    )


def check_autodiscover_at(ev: Any) -> bool:
    if isinstance(ev, str):
        r = _iis(ev)
        url = r["cs-uri-stem"] + "?" + r["cs-uri-query"]
    else:
        row = _row(ev)
        url = row["UrlStem"] + row["UrlQuery"]
    url = unquote(url)
    k = url.lower().find("autodiscover.json")
    return k >= 0 and "@" in url[k:]


def check_mgmt_export(ev: dict[str, Any]) -> bool:
    return "new-mailboxexportrequest" in _event_text(ev).lower()


def check_mgmt_cert(ev: dict[str, Any]) -> bool:
    return "new-exchangecertificate" in _event_text(ev).lower()


def check_mgmt_set(ev: dict[str, Any]) -> bool:
    return re.search(r"(^|\s)Set-[A-Za-z]+", _event_text(ev)) is not None


def check_owassrf(line: str) -> bool:
    stem = _iis(line)["cs-uri-stem"]
    return (
        "/owa/mastermail" in stem.lower()
        or re.search(r"(?i)^/owa/[^/]+(@|%40)[^/]+/powershell", stem) is not None
    )


CHECKS: dict[str, Callable[[Any], bool]] = {
    name.removeprefix("check_"): fn for name, fn in globals().items() if name.startswith("check_")
}


def _xml_event(ev: dict[str, Any], rid: int) -> str:
    from xml.sax.saxutils import escape

    data = "".join(f"<Data>{escape(str(d))}</Data>" for d in ev["data"])
    return (
        f"<Event xmlns='{NS}'><System><Provider Name='{ev['provider']}'/><EventID>{ev['eid']}</EventID>"
        f"<Level>{ev['level']}</Level><TimeCreated SystemTime='{ev['time']}'/><EventRecordID>{rid}</EventRecordID>"
        f"<Channel>{ev['channel']}</Channel><Computer>EXCH01</Computer></System><EventData>{data}</EventData></Event>\n"
    )


def write_case(case: dict[str, Any], evidence: list[Any], root: Path) -> list[tuple[str, int]]:
    """Write the evidence of one side of a case under ``root``; returns (file, line or record) keys."""
    kind = case["kind"]
    if kind == "files":
        for rel in evidence:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(
                b"MDMP\x93\xa7" + b"\x00" * 64 if rel.endswith("dmp") else b"PK\x05\x06" + b"\x00" * 18
            )
        return [(rel, 0) for rel in evidence]
    path = root / case["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "events":
        body = "<Events>\n" + "".join(_xml_event(ev, i + 1) for i, ev in enumerate(evidence)) + "</Events>\n"
        path.write_text(body, encoding="utf-8")
        return [(case["file"], i + 1) for i in range(len(evidence))]
    header = list(case.get("header", []))
    if kind == "httpproxy":
        header = [
            "#Software: Microsoft Exchange Server",
            "#Version: 15.01.2106.002",
            "#Log-type: HttpProxy Logs",
            "#Date: 2021-03-03T00:00:00.000Z",
            "#Fields: " + ",".join(HTTPPROXY_FIELDS),
        ]
    lines = header + [_line(ev) for ev in evidence]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return [(case["file"], len(header) + i + 1) for i in range(len(evidence))]


def test_every_row_has_a_case_and_every_case_a_row() -> None:
    assert len(ROWS) >= 15
    assert {r["case"] for r in ROWS} == set(CASES)
    for r in ROWS:
        assert r["source"].startswith("https://"), r
        assert r["rules"], r
        assert CASES[r["case"]]["check"] in CHECKS, r


@pytest.mark.parametrize("row", ROWS, ids=[r["case"] for r in ROWS])
def test_parity_row(row: dict[str, Any], tmp_path: Path) -> None:
    case = CASES[row["case"]]
    check = CHECKS[case["check"]]
    for ev in case["hit"]:
        assert check(ev), f"the Microsoft check does not flag the hit case {ev!r}"
    for ev in case["miss"]:
        assert not check(ev), f"the Microsoft check flags the near-miss {ev!r}"

    hit_root = tmp_path / "hit" / "EXCH01"
    keys = write_case(case, case["hit"], hit_root)
    res = hunt_paths([hit_root], HuntOptions(jobs=1))
    for file, where in keys:
        found = [
            f
            for f in res.findings
            if f.evidence.file == file
            and (where == 0 or (f.evidence.line or f.evidence.record) == where)
            and f.rule in row["rules"]
        ]
        assert found, (
            f"{row['case']}: {file}:{where} not flagged by {row['rules']}; got "
            f"{[(f.rule, f.evidence.file, f.evidence.line, f.evidence.record) for f in res.findings]}"
        )

    miss_root = tmp_path / "miss" / "EXCH01"
    write_case(case, case["miss"], miss_root)
    res = hunt_paths([miss_root], HuntOptions(jobs=1))
    assert not [f for f in res.findings if f.rule in row["rules"]], res.findings
    assert not [f for f in res.findings if f.confidence != "review"], res.findings
