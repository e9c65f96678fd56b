"""The on-disk rule cache: used when intact, rebuilt when stale, damaged or edited, never required;
and the compiled rules it feeds behave as the rules parsed afresh (literal alternatives, string tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.hunt.rules import cache
from exwatch.hunt.rules import sigma_engine as se

RULE = """title: Test rule
id: 0b7ec9f5-3c65-4b1c-9d3e-6a1f4f0e2c11
logsource:
    category: webserver
detection:
    selection:
        cs-uri-stem|contains: '{needle}'
    condition: selection
level: high
"""

IIS_HEAD = "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"


def _rules(tmp_path: Path, needle: str = "/evil/page.aspx") -> Path:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "r.yml").write_text(RULE.format(needle=needle))
    return d


def _cache_files(home: Path) -> list[Path]:
    return sorted((home / "cache").glob("sigma-*.json"))


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object) -> None:
        raise AssertionError("rules parsed although an intact cache entry exists")

    monkeypatch.setattr(se, "_parse_rule_file", refuse)


def test_second_load_comes_from_the_cache(
    tmp_path: Path, exwatch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = _rules(tmp_path)
    first = se.load_rules([rules])
    files = _cache_files(exwatch_home)
    assert len(files) == 1
    _no_parsing(monkeypatch)
    again = se.load_rules([rules])
    assert [(r.rule_id, r.groups, r.alternatives) for r in again] == [
        (r.rule_id, r.groups, r.alternatives) for r in first
    ]
    assert again[0].predicate({"cs-uri-stem": "/EVIL/page.aspx"}, "")
    assert not again[0].predicate({"cs-uri-stem": "/owa/"}, "")


def test_changed_rule_is_never_served_stale(tmp_path: Path, exwatch_home: Path) -> None:
    rules = _rules(tmp_path)
    se.load_rules([rules])
    _rules(tmp_path, needle="/other/shell.aspx")
    fresh = se.load_rules([rules])
    assert fresh[0].predicate({"cs-uri-stem": "/other/shell.aspx"}, "")
    assert not fresh[0].predicate({"cs-uri-stem": "/evil/page.aspx"}, "")
    assert len(_cache_files(exwatch_home)) == 2  # one entry per content


@pytest.mark.parametrize(
    "damage",
    ["truncate", "garbage", "payload_edited", "valid_hash_bad_tree", "wrong_key"],
)
def test_damaged_cache_is_rebuilt(tmp_path: Path, exwatch_home: Path, damage: str) -> None:
    rules = _rules(tmp_path)
    se.load_rules([rules])
    (entry,) = _cache_files(exwatch_home)
    raw = entry.read_bytes()
    doc = json.loads(raw)
    if damage == "truncate":
        entry.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x00\xff not json")
    elif damage == "payload_edited":
        # The needle changed without the checksum: detected, not trusted.
        doc["payload"] = doc["payload"].replace("evil", "good")
        entry.write_text(json.dumps(doc))
    elif damage == "valid_hash_bad_tree":
        payload = json.loads(doc["payload"])
        payload[0]["conditions"] = [["exec", "import os"]]
        text = json.dumps(payload)
        doc["payload"] = text
        import hashlib

        doc["sha256"] = hashlib.sha256(text.encode()).hexdigest()
        entry.write_text(json.dumps(doc))
    else:
        doc["key"] = "0" * 64
        entry.write_text(json.dumps(doc))
    got = se.load_rules([rules])
    assert got[0].predicate({"cs-uri-stem": "/evil/page.aspx"}, "")
    assert not got[0].predicate({"cs-uri-stem": "/good/page.aspx"}, "")
    # Rebuilt and written again: intact now.
    assert cache.load("sigma", json.loads(entry.read_bytes())["key"]) is not None


def test_unwritable_cache_only_costs_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exwatch_home: Path
) -> None:
    (exwatch_home / "cache").write_text("a file where the cache folder would be")
    rules = _rules(tmp_path)
    got = se.load_rules([rules])
    assert got[0].predicate({"cs-uri-stem": "/evil/page.aspx"}, "")
    monkeypatch.setenv(cache.ENV_CACHE, "0")
    assert se.load_rules([rules])[0].rule_id == got[0].rule_id


def test_cache_location_follows_exwatch_home(exwatch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache.cache_dir() == exwatch_home / "cache"
    monkeypatch.delenv("EXWATCH_HOME")
    assert cache.cache_dir().name in ("exwatch", "cache")


def test_hunt_same_findings_cold_and_cached(tmp_path: Path, exwatch_home: Path) -> None:
    logs = tmp_path / "pkg" / "inetpub" / "logs" / "LogFiles" / "W3SVC1"
    logs.mkdir(parents=True)
    (logs / "u_ex210303.log").write_text(
        IIS_HEAD
        + "2021-03-03 12:01:42 10.0.0.10 POST /owa/mastermailbox@outlook.com/powershell - 443 - 203.0.113.66 python-requests/2.28.1 - 401 0 0 20\n"
        + "2021-03-03 12:01:43 10.0.0.10 POST /powershell - 443 HealthMailbox1@contoso.com 10.0.0.10 AMProbe/Local/ClientAccess - 200 0 0 9\n"
        + "2021-03-03 12:01:44 10.0.0.10 GET /autodiscover/autodiscover.json @evil.com/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@evil.com 443 - 192.0.2.20 python-requests/2.26.0 - 401 0 0 20\n"
    )

    def run() -> list[tuple[str, int | None]]:
        res = hunt_paths([tmp_path / "pkg"], HuntOptions(jobs=1))
        return sorted((f.rule, f.evidence.line) for f in res.findings)

    from exwatch.hunt import worker

    worker._bundle_cached.cache_clear()  # rules loaded in this test, not by an earlier one
    cold = run()
    assert _cache_files(exwatch_home)
    worker._bundle_cached.cache_clear()  # the next hunt loads its rules again, from the disk cache
    warm = run()
    assert cold == warm
    assert ("proxynotshell.owassrf_attempt", 2) in cold
    assert not any(line == 3 for _, line in cold)  # the health probe's /powershell is not OWASSRF


def test_alternatives_keep_an_or_of_ands_apart() -> None:
    a, b, c = frozenset({"/owa/"}), frozenset({"/powershell"}), frozenset({"/owa/mastermail"})
    alts = se.simplify_alternatives(se._or_alternatives([((a, b),), ((c,),)]))
    assert set(map(frozenset, alts)) == {frozenset({a, b}), frozenset({c})}
    # A product of ORs folds back into one alternative; a weaker alternative absorbs a stronger one.
    x1, x2, y = frozenset({"x1"}), frozenset({"x2"}), frozenset({"y"})
    (folded,) = se.simplify_alternatives(((x1, y), (x2, y)))
    assert set(folded) == {x1 | x2, y}
    assert se.simplify_alternatives(((x1,), (x1, y))) == ((x1,),)
    assert se.simplify_alternatives(((x1,), ())) == se.NO_REQUIREMENT


VALUES = st.text(alphabet=st.sampled_from("aAbB/.-_ %@İıſKkSs\u212a\n"), max_size=12)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["in", "start", "end", "eq"]), needle=VALUES, value=VALUES)
def test_string_methods_agree_with_the_sigma_regex(kind: str, needle: str, value: str) -> None:
    pattern = {
        "in": ".*" + re.escape(needle) + ".*",
        "start": re.escape(needle) + ".*",
        "end": ".*" + re.escape(needle),
        "eq": re.escape(needle),
    }[kind]
    rx = re.compile(pattern, re.IGNORECASE | re.DOTALL)
    node = ["str", "f", pattern, None, [kind, needle.lower()]]
    fast = se.compile_ir(node).predicate
    assert fast({"f": value}, "") == (rx.fullmatch(value) is not None)
    assert fast({}, "") is False
