"""Every tokenizer accepts each quoting and encoding variant of its format and recovers the same fields.

Property tests over exwatch.logformats (Exchange CSV, IIS W3C, ECP EventData items and cmdlets, the OAB
generator message), then the whole hunt over one log written in each real file variant (BOM, CRLF,
UTF-16, a #Fields header restarted mid-file with another field order, a value cut by Exchange).
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.logformats import (
    build_record,
    join_exchange_csv,
    oab_temp_path,
    parse_ecp_cmd,
    parse_ecp_eventdata,
    split_exchange_csv,
    split_w3c,
    url_decode,
    w3c_text,
)

TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=30
)


@given(st.lists(TEXT, min_size=1, max_size=12))
def test_csv_every_quoting_gives_the_same_fields(values: list[str]) -> None:
    minimal = join_exchange_csv(values)
    everything = ",".join('"' + v.replace('"', '""') + '"' for v in values)
    assert split_exchange_csv(minimal) == values
    assert split_exchange_csv(everything) == values


@given(st.lists(TEXT, min_size=2, max_size=8), st.integers(min_value=0, max_value=200))
def test_csv_cut_line_keeps_what_was_written(values: list[str], cut: int) -> None:
    line = join_exchange_csv(values)
    cut_line = line[: min(cut, len(line))]
    got = split_exchange_csv(cut_line)
    # The fields before the cut come back whole; the cut field is a prefix of the value written.
    full = split_exchange_csv(line)
    for i, v in enumerate(got[:-1]):
        assert v == full[i]
    assert full[len(got) - 1].startswith(got[-1]) or got[-1] == ""


W3C_FIELDS = [
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
TOKEN = st.text(
    alphabet=st.characters(blacklist_characters=" \r\n\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=15,
)


@given(st.lists(TOKEN, min_size=15, max_size=15), st.text(alphabet="abc ;()/.", min_size=1, max_size=30))
def test_w3c_fields_and_user_agent_spaces(values: list[str], ua: str) -> None:
    values = ["-" if v == "-" else v.replace("-", "x") for v in values]
    line = " ".join(values)
    assert split_w3c(line, W3C_FIELDS) == ["" if v == "-" else v for v in values]
    # IIS writes '+' for a space; a raw space (another writer) is kept inside the User-Agent field.
    plus = values[:9] + [ua.replace(" ", "+") or "x"] + values[10:]
    raw = values[:9] + [ua] + values[10:]
    rec_plus = build_record("iis", W3C_FIELDS, " ".join(plus))
    rec_raw = build_record("iis", W3C_FIELDS, " ".join(raw))
    assert rec_plus["c-useragent"] == w3c_text(plus[9])
    if ua.strip(" ") and not ua.startswith(" ") and not ua.endswith(" ") and "  " not in ua:
        assert rec_raw["c-useragent"] == ua
        assert rec_raw["sc-status"] == values[11]
        assert rec_raw["time-taken"] == values[14]


SCRIPT_URL = 'http://f/<script language="JScript" runat="server">function Page_Load(){eval(Request["k"],"unsafe");}</script>'
CMD_VALUE = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=40
)


def _sq(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


@given(CMD_VALUE, CMD_VALUE)
def test_ecp_item_quoting_variants_give_the_same_cmd(url: str, ident: str) -> None:
    cmd = f"Set-OabVirtualDirectory.ExternalUrl={_sq(url)}.Identity={_sq(ident)}"
    forms = [
        # The item as is, and the whole item wrapped in single quotes (inner quotes doubled).
        f"S:TIME=12;S:CMD={cmd};S:BLD=15.1.2106.2",
        f"S:TIME=12;{_sq('S:CMD=' + cmd)};S:BLD=15.1.2106.2",
    ]
    for event_data in forms:
        # ...each inside a CSV field quoted only when needed and quoted always.
        for line in (
            join_exchange_csv(["2021-03-03T06:59:18.200Z", "EXCH01", "ECP.Request", event_data]),
            ",".join(
                '"' + v.replace('"', '""') + '"'
                for v in ["2021-03-03T06:59:18.200Z", "EXCH01", "ECP.Request", event_data]
            ),
        ):
            fields = split_exchange_csv(line)
            assert fields[3] == event_data
            items = parse_ecp_eventdata(fields[3])
            assert items["S:CMD"] == cmd
            assert items["S:BLD"] == "15.1.2106.2"
            cmdlet, params = parse_ecp_cmd(items["S:CMD"])
            assert cmdlet == "Set-OabVirtualDirectory"
            assert params["ExternalUrl"] == url
            assert params["Identity"] == ident


@given(st.integers(min_value=len("Set-OabVirtualDirectory.ExternalUrl='http://f/<script"), max_value=140))
def test_ecp_cut_script_is_still_read(cut: int) -> None:
    cmd = f"Set-OabVirtualDirectory.ExternalUrl={_sq(SCRIPT_URL)}.Identity='x'"[:cut]
    line = join_exchange_csv(["2021-03-03T06:59:18.200Z", "EXCH01", "ECP.Request", f"S:TIME=1;S:CMD={cmd}"])
    rec = build_record("ecp", ["TimeStamp", "ServerName", "EventId", "EventData"], line)
    assert rec["Cmdlet"] == "Set-OabVirtualDirectory"
    assert SCRIPT_URL.startswith(rec["CmdUrlValue"])
    assert rec["CmdUrlValue"].startswith("http://f/<script")


@given(
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n\x00'\"", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=40,
    )
)
def test_oab_path_quoting_variants(path: str) -> None:
    path = path.strip() or "x"
    for msg in (
        f"Download failed and temporary file '{path}' needs to be removed",
        f'Download failed and temporary file "{path}" needs to be removed',
        f"Download failed and temporary file {path} needs to be removed",
    ):
        assert oab_temp_path(f"2021-03-03T07:01:00.000Z,OABGenerator,Error,{msg}") == path


def test_url_decoding_is_what_rules_judge() -> None:
    assert (
        url_decode("/owa/mastermailbox%40outlook.com/powershell")
        == "/owa/mastermailbox@outlook.com/powershell"
    )
    assert url_decode("autodiscover.json%253F%2540evil.com") == "autodiscover.json?@evil.com"
    rec = build_record(
        "iis",
        W3C_FIELDS,
        "2021-08-20 11:00:00 10.0.0.5 GET /autodiscover/autodiscover.json %40evil.com%2Fmapi%2Femsmdb 443 - 1.2.3.4 x - 404 0 0 1",
    )
    assert rec["cs-uri-decoded"] == "/autodiscover/autodiscover.json?@evil.com/mapi/emsmdb"


# --- The whole hunt over one log written in every file variant --------------------------------------

ECP_HEADER = [
    "#Software: Microsoft Exchange Server",
    "#Version: 15.0.0.0",
    "#Log-type: ECP Server Log",
    "#Date: 2021-03-03T00:00:00.000Z",
    "#Fields: TimeStamp,ServerName,EventId,EventData",
]
IIS_HEADER = [
    "#Software: Microsoft Internet Information Services 10.0",
    "#Version: 1.0",
    "#Date: 2022-12-20 00:00:00",
    "#Fields: " + " ".join(W3C_FIELDS),
]
# The same IIS logging restarted with another field order (c-ip first, no s-ip, User-Agent moved).
IIS_RESTART = [
    "#Software: Microsoft Internet Information Services 10.0",
    "#Version: 1.0",
    "#Date: 2022-12-20 12:00:00",
    "#Fields: date time c-ip cs-method cs-uri-stem cs-uri-query sc-status cs(User-Agent) cs-username s-port time-taken",
]


def _ecp_lines() -> list[str]:
    closed = f"Set-OabVirtualDirectory.ExternalUrl={_sq(SCRIPT_URL)}.Identity='7c8a3d55'"
    cut = f"Set-OabVirtualDirectory.ExternalUrl={_sq(SCRIPT_URL)}"[:90]  # Exchange cut the value
    return ECP_HEADER + [
        join_exchange_csv(
            [
                "2021-03-03T06:59:18.200Z",
                "EXCH01",
                "ECP.Request",
                f"S:TIME=115;S:CMD={closed};S:BLD=15.1.2106.2",
            ]
        ),
        join_exchange_csv(
            [
                "2021-03-03T07:10:00.000Z",
                "EXCH01",
                "ECP.Request",
                f"S:TIME=9;{_sq('S:CMD=' + closed)};S:BLD=15.1.2106.2",
            ]
        ),
        join_exchange_csv(["2021-03-03T07:20:00.000Z", "EXCH01", "ECP.Request", f"S:TIME=9;S:CMD={cut}"]),
    ]


def _iis_lines() -> list[str]:
    return (
        IIS_HEADER
        + [
            "2022-12-20 14:03:11 10.0.0.5 POST /owa/mastermailbox%40outlook.com/powershell - 443 CONTOSO\\jane 198.51.100.40 Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64) - 200 0 0 1002",
        ]
        + IIS_RESTART
        + [
            "2022-12-20 14:05:00 198.51.100.41 POST /owa/jane%40contoso.com/powershell - 200 python-requests/2.28.1 - 443 20",
        ]
    )


VARIANTS = {
    "utf8-lf": lambda text: text.encode("utf-8"),
    "utf8-bom-crlf": lambda text: codecs.BOM_UTF8 + text.replace("\n", "\r\n").encode("utf-8"),
    "utf16le-bom-crlf": lambda text: codecs.BOM_UTF16_LE + text.replace("\n", "\r\n").encode("utf-16-le"),
    "utf16be-bom": lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hunt_reads_every_file_variant_the_same(variant: str, tmp_path: Path) -> None:
    root = tmp_path / "EXCH01"
    ecp = root / "Logging/ECP/Server/ECPServer20210303-1.LOG"
    iis = root / "inetpub/logs/LogFiles/W3SVC1/u_ex221220.log"
    for path, lines in ((ecp, _ecp_lines()), (iis, _iis_lines())):
        path.parent.mkdir(parents=True)
        path.write_bytes(VARIANTS[variant]("\n".join(lines) + "\n"))
    res = hunt_paths([root], HuntOptions(jobs=1))
    got = sorted(
        (f.rule, f.evidence.file.rsplit("/", 1)[-1], f.evidence.line)
        for f in res.findings
        if f.confidence != "review"
    )
    assert got == [
        ("proxylogon.ecp_set_vdir_script", "ECPServer20210303-1.LOG", 6),
        ("proxylogon.ecp_set_vdir_script", "ECPServer20210303-1.LOG", 7),
        ("proxylogon.ecp_set_vdir_script", "ECPServer20210303-1.LOG", 8),
        ("proxynotshell.owassrf", "u_ex221220.log", 5),
        ("proxynotshell.owassrf", "u_ex221220.log", 10),
    ], got
    assert not res.errors
    times = {f.evidence.line: f.time for f in res.findings if f.rule == "proxylogon.ecp_set_vdir_script"}
    assert times[6] is not None and times[6].isoformat().startswith("2021-03-03T06:59:18.2")
