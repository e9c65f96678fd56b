"""``exwatch kb`` commands through click: JSON contract, exit codes, catalogue listing."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner

from exwatch.cli.main import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_verdict_json_four_builds() -> None:
    code, out, _ = run(
        "kb", "verdict", "15.1.2176.2", "15.1.2242.4", "14.3.513.0", "15.1.2176", "--format", "json"
    )
    docs = json.loads(out)
    assert isinstance(docs, list) and len(docs) == 4
    states = {d["build"]: {w: v["state"] for w, v in d["waves"].items()} for d in docs}
    assert states == {
        "15.1.2176.2": {
            "proxylogon": "vulnerable",
            "proxyshell": "vulnerable",
            "proxynotshell": "vulnerable",
        },
        "15.1.2242.4": {"proxylogon": "patched", "proxyshell": "vulnerable", "proxynotshell": "vulnerable"},
        "14.3.513.0": {
            "proxylogon": "patched",
            "proxyshell": "not_affected",
            "proxynotshell": "not_affected",
        },
        "15.1.2176": {"proxylogon": "unknown", "proxyshell": "unknown", "proxynotshell": "vulnerable"},
    }
    assert code == 1
    assert docs[3]["waves"]["proxylogon"]["fix"]["security_update"] == ["15.1.2176.9"]


def test_verdict_json_one_build_is_an_object() -> None:
    code, out, _ = run("kb", "verdict", "15.2.2562.17", "--format", "json")
    doc = json.loads(out)
    assert isinstance(doc, dict)
    assert doc["product"] == "Exchange SE" and doc["cu"] == "RTM"
    assert code == 0


def test_verdict_exit_codes() -> None:
    assert run("kb", "verdict", "14.3.513.0")[0] == 0  # patched and not affected only
    assert run("kb", "verdict", "15.2.1258")[0] == 0
    assert run("kb", "verdict", "15.0.1497")[0] == 3  # unknown only
    assert run("kb", "verdict", "15.0.1497", "15.1.2176.2")[0] == 1


def test_verdict_bad_build_exit_2_one_line() -> None:
    code, out, err = run("kb", "verdict", "15.1.2176.2", "15.x.1")
    assert code == 2
    assert out == ""
    assert err.strip().count("\n") == 0
    assert err.startswith("exwatch: error: not an Exchange build: '15.x.1'")


def test_verdict_table_has_a_sentence_per_wave() -> None:
    code, out, _ = run("kb", "verdict", "15.1.2242.4")
    assert code == 1
    for name in ("ProxyLogon", "ProxyShell", "ProxyNotShell"):
        assert name in out
    assert "patched" in out and "vulnerable" in out


def test_builds_csv_product_filter() -> None:
    code, out, _ = run("kb", "builds", "--product", "2010", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["build"] for r in rows] == ["14.3.509.0", "14.3.513.0"]
    assert rows[1]["fixes"] == "CVE-2021-26857"
    assert rows[0]["proxylogon"] == "vulnerable" and rows[1]["proxylogon"] == "patched"


def test_builds_wave_filter_json() -> None:
    code, out, _ = run(
        "kb", "builds", "--wave", "proxynotshell", "--product", "Exchange 2016", "--format", "json"
    )
    assert code == 0
    docs = json.loads(out)
    builds = [d["build"] for d in docs]
    assert builds[0] == "15.1.2375.37"  # 2016 CU22 Nov22SU is the first 2016 build that fixes it
    assert all(d["waves"] == {"proxynotshell": "patched"} for d in docs)


def test_builds_bad_product() -> None:
    code, _, err = run("kb", "builds", "--product", "2042")
    assert code == 2 and "unknown product" in err


def test_waves_json() -> None:
    code, out, _ = run("kb", "waves", "--format", "json")
    assert code == 0
    docs = json.loads(out)
    assert [d["id"] for d in docs] == ["proxylogon", "proxyshell", "proxynotshell"]
    assert docs[0]["first_exploited"] == "2021-01-03" and "DIVD" in docs[0]["first_exploited_source"]
    c26857 = next(c for c in docs[0]["cves"] if c["id"] == "CVE-2021-26857")
    assert c26857["fixed_in_build"] == {"Exchange 2010": "14.3.513.0"}
    assert sum(len(d["cves"]) for d in docs) == 9


def test_waves_table() -> None:
    code, out, _ = run("kb", "waves")
    assert code == 0
    assert "ProxyNotShell" in out and "CVE-2022-41082" in out and "2022-08 (month)" in out


def test_verdict_reads_builds_from_stdin() -> None:
    text = "# builds from an inventory\n15.1.2176.2\n\n15.2.2562.17\nExchange/15.02.0858.002\n"
    result = CliRunner().invoke(cli, ["kb", "verdict", "-", "--format", "json"], input=text)
    assert result.exit_code == 1
    docs = json.loads(result.stdout)
    assert [d["build"] for d in docs] == ["15.1.2176.2", "15.2.2562.17", "15.2.858.2"]


def test_verdict_stdin_bad_line_is_named() -> None:
    result = CliRunner().invoke(cli, ["kb", "verdict", "-"], input="15.1.2176.2\nnonsense\n")
    assert result.exit_code == 2
    assert "stdin line 2" in result.stderr and result.stdout == ""
    empty = CliRunner().invoke(cli, ["kb", "verdict", "-"], input="\n# nothing\n")
    assert empty.exit_code == 2 and "no build given" in empty.stderr
