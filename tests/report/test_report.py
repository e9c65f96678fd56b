"""The report on a known store: JSON figures, headline, table/Markdown/HTML, STIX, and the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import stix2
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.fleet import open_store
from exwatch.report import ReportOptions, build_report
from exwatch.report.html import render_html
from exwatch.report.stix import findings_bundle
from exwatch.report.text import render_markdown, render_table


def test_report_figures(report_db: str) -> None:
    with open_store(report_db) as store:
        rep = build_report(store)
        doc = rep.to_dict()
    assert [s["time"][:10] for s in doc["snapshots"]] == ["2021-03-08", "2021-03-15", "2021-03-22"]
    last = doc["snapshots"][-1]["waves"]["proxylogon"]
    assert (last["vulnerable"], last["patched"], last["unknown"]) == (1, 8, 1)
    assert last["protected_share"] == pytest.approx(8 / 9)
    assert last["protected_bounds"] == pytest.approx([8 / 10, 9 / 10])
    ch = doc["change_7d"]["waves"]["proxylogon"]
    assert doc["change_7d"]["days"] == 7
    assert ch["unprotected_rel_change"] == pytest.approx((1 - 3) / 3)
    assert ch["delta_pp"] == pytest.approx((8 / 9 - 7 / 10) * 100)
    assert doc["headline"].startswith(
        "ProxyLogon: 88.9% of 9 classified servers patched or mitigated (+18.9 pp, vulnerable count -67% against 7 days earlier, 2021-03-15)"
    )
    assert [(h["address"], h["exposed_days"]) for h in doc["hosts_at_risk"]] == [("127.40.2.1", 14)]
    assert doc["hosts_at_risk"][0]["fix"] == "install KB5000871"
    cbp = doc["compromised_before_protected"]
    assert [(c["address"], c["protected_at"][:10]) for c in cbp] == [("127.40.2.3", "2021-03-22")]
    assert {c["address"]: c["compromised_before_protected"] for c in doc["compromise"]} == {
        "127.40.2.3": True,
        "127.40.2.8": False,
    }
    assert doc["breakdown"]["cu"]["15.1.2176"]["classified"] == 9
    assert doc["breakdown"]["tag:country"]["NL"]["vulnerable"] == 1
    fit = doc["attempts"]["fit"]
    # 1, 2, 4, ... 32 findings per hour, then one late finding: the default window ends at the busiest hour
    assert fit["points"] == 6 and fit["doubling_hours"] == pytest.approx(1.0)
    assert sum(n for _, n in doc["attempts"]["per_hour"]) == 64


def test_doubling_fit_window(report_db: str) -> None:
    from datetime import UTC, datetime

    with open_store(report_db) as store:
        doc = build_report(
            store,
            ReportOptions(
                fit_since=datetime(2021, 3, 9, tzinfo=UTC), fit_until=datetime(2021, 3, 10, tzinfo=UTC)
            ),
        ).to_dict()
    fit = doc["attempts"]["fit"]
    assert fit["points"] == 6
    assert fit["doubling_hours"] == pytest.approx(1.0)
    assert fit["rate_per_hour"] == pytest.approx(math.log(2))


def test_filters(report_db: str) -> None:
    with open_store(report_db) as store:
        nl = build_report(store, ReportOptions(tag=("country", "NL"))).to_dict()
    assert nl["snapshots"][0]["waves"]["proxylogon"]["vulnerable"] == 3  # hosts 1, 3, 5
    assert {h["address"] for h in nl["hosts_at_risk"]} == {"127.40.2.1"}


def test_renderings(report_db: str) -> None:
    with open_store(report_db) as store:
        rep = build_report(store)
    table = render_table(rep)
    assert "88.9%" in table and "127.40.2.1" in table and "install KB5000871" in table
    md = render_markdown(rep)
    assert md.startswith("# exwatch report") and "| 2021-03-22" in md.replace("T00:00", "")


def test_html_is_self_contained_with_charts(report_db: str) -> None:
    with open_store(report_db) as store:
        rep = build_report(store)
        doc = rep.to_dict()
    page = render_html(rep, note="simulated")
    assert page.count("<svg") == 3
    for chart in ("chart-share", "chart-states", "chart-attempts"):
        assert f"id='{chart}'" in page
    loads = re.findall(
        r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", page, re.I
    )
    assert loads == []
    assert "<script" not in page.lower()
    assert doc["headline"] in page.replace("&#x27;", "'")


def test_stix_validates(report_db: str) -> None:
    with open_store(report_db) as store:
        bundle = findings_bundle(store)
    parsed = stix2.parse(bundle.serialize(), allow_custom=False)
    kinds = [o.type for o in parsed.objects]
    assert kinds.count("sighting") == 64  # 63 + 1 findings
    assert kinds.count("indicator") == 1
    assert {o.name for o in parsed.objects if o.type == "identity"} == {"exwatch", "127.40.2.3", "127.40.2.8"}
    sighting = next(o for o in parsed.objects if o.type == "sighting")
    host_ids = {o.id for o in parsed.objects if o.type == "identity" and o.name.startswith("127.")}
    assert set(sighting.where_sighted_refs) <= host_ids


def test_cli_report_and_hosts(report_db: str, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["report", "--db", report_db, "--format", "json", "--by-build"])
    assert result.exit_code == 1, result.output  # an exposed server: something found
    doc = json.loads(result.stdout)
    assert doc["breakdown"]["build"]["15.1.2176.2"]["vulnerable"] == 1
    assert set(doc) >= {"snapshots", "change_7d", "hosts_at_risk", "compromised_before_protected"}
    html_out = tmp_path / "r.html"
    result = runner.invoke(cli, ["report", "--db", report_db, "--format", "html", "--out", str(html_out)])
    assert result.exit_code == 1 and html_out.read_text().count("<svg") == 3
    result = runner.invoke(cli, ["report", "stix", "--db", report_db])
    assert result.exit_code == 0
    assert stix2.parse(result.stdout).type == "bundle"
    result = runner.invoke(cli, ["report", "--db", report_db, "--format", "stix"])
    assert result.exit_code == 0 and '"type": "bundle"' in result.stdout
    result = runner.invoke(cli, ["hosts", "tag", "EXCH01", "organisation=Acme", "--db", report_db])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["hosts", "list", "--db", report_db, "--tag", "organisation=Acme", "--format", "json"]
    )
    assert [h["address"] for h in json.loads(result.stdout)] == ["127.40.2.1"]
    result = runner.invoke(cli, ["hosts", "show", "127.40.2.1", "--db", report_db, "--format", "json"])
    shown = json.loads(result.stdout)
    assert [s["waves"]["proxylogon"] for s in shown["snapshots"]] == ["vulnerable"] * 3
    result = runner.invoke(cli, ["hosts", "show", "127.40.2.1", "--db", report_db])
    assert "EXCH01".lower() in result.stdout.lower()
    result = runner.invoke(cli, ["hosts", "show", "127.9.9.9", "--db", report_db])
    assert result.exit_code == 2 and "no host" in result.output
    result = runner.invoke(cli, ["report", "--db", report_db, "--tag", "bad"])
    assert result.exit_code == 2


def test_since_and_wave_filters(report_db: str) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["report", "--db", report_db, "--format", "json", "--since", "2021-03-15", "--wave", "proxylogon"],
    )
    doc = json.loads(result.stdout)
    assert [s["time"][:10] for s in doc["snapshots"]] == ["2021-03-15", "2021-03-22"]
    assert doc["change_7d"]["against_time"][:10] == "2021-03-15"
    assert doc["filters"] == {
        "since": "2021-03-15T00:00:00+00:00",
        "wave": "proxylogon",
        "tag": None,
        "max_age_days": 30.0,
    }
    result = runner.invoke(cli, ["report", "--db", report_db, "--since", "yesterday"])
    assert result.exit_code == 2


def test_empty_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with open_store(url) as store:
        rep = build_report(store)
        doc = rep.to_dict()
    assert doc["snapshots"] == [] and doc["change_7d"] is None
    assert "No finished scan" in doc["headline"]
    assert render_html(rep).count("<svg") == 3
