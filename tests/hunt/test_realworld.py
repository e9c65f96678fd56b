"""Hand-written real-world cases (shapes from detections.md / log_formats.md, defanged) are found."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.hunt import HuntOptions, hunt_paths, iso_z

DATA = Path(__file__).parent / "data" / "realworld"


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    before = _hashes(DATA)
    res = hunt_paths([DATA], HuntOptions(jobs=1))
    assert _hashes(DATA) == before, "evidence files changed"
    return res


def _hits(result, rule: str) -> list:  # type: ignore[no-untyped-def]
    return [f for f in result.findings if f.rule == rule]


@pytest.mark.parametrize(
    ("rule", "file", "line"),
    [
        ("proxylogon.ssrf_attempt", "Logging/HttpProxy/Ecp/HttpProxy_2021030306-1.LOG", 6),
        ("proxylogon.ssrf_progressed", "Logging/HttpProxy/Ecp/HttpProxy_2021030306-1.LOG", 7),
        ("proxylogon.ssrf_progressed", "Logging/HttpProxy/Ecp/HttpProxy_2021030306-1.LOG", 8),
        ("proxylogon.ecp_reset_vdir", "Logging/HttpProxy/Ecp/HttpProxy_2021030306-1.LOG", 9),
        ("proxylogon.ssrf_probe", "Logging/HttpProxy/Owa/HttpProxy_2021030710-1.LOG", 6),
        ("proxylogon.ecp_set_vdir_script", "Logging/ECP/Server/ECPServer20210303-1.LOG", 7),
        ("proxylogon.ecp_externalurl_change", "Logging/ECP/Server/ECPServer20210303-1.LOG", 9),
        ("proxylogon.oab_file_write", "Logging/OABGeneratorLog/OABGenerator_20210303.log", 2),
        ("webshell.access", "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log", 5),
        ("proxylogon.iis_static_post", "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log", 6),
        ("proxyshell.autodiscover_attempt", "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log", 7),
        ("proxyshell.autodiscover_success", "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log", 8),
        ("proxyshell.rps_cat", "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log", 8),
        ("proxynotshell.owassrf", "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log", 10),
        ("webshell.chopper", "inetpub/wwwroot/aspnet_client/system_web/Kr3Qx9aZ.aspx", 1),
    ],
)
def test_real_world_case_found(result, rule: str, file: str, line: int) -> None:  # type: ignore[no-untyped-def]
    hits = [f for f in _hits(result, rule) if f.evidence.file == file and f.evidence.line == line]
    assert hits, (
        f"{rule} not found at {file}:{line}; got {[(f.rule, f.evidence.file, f.evidence.line) for f in result.findings]}"
    )
    f = hits[0]
    assert f.evidence.sha256 and len(f.evidence.sha256) == 64
    assert f.evidence.offset is not None and f.evidence.excerpt


def test_ecp_hit_has_line_and_time(result) -> None:  # type: ignore[no-untyped-def]
    f = _hits(result, "proxylogon.ecp_set_vdir_script")[0]
    assert f.time is not None and f.time.isoformat().startswith("2021-03-03T06:59:18.2")
    raw = (DATA / f.evidence.file).read_bytes()
    assert raw[f.evidence.offset :].startswith(b"2021-03-03T06:59:18.200Z")


def test_lookalikes_stay_low(result) -> None:  # type: ignore[no-untyped-def]
    """The nmap probe, zgrab, Nessus, legit OAB temp path, legit remote PowerShell, logon.aspx: nothing above review."""
    quiet = {
        ("Logging/HttpProxy/Owa/HttpProxy_2021030710-1.LOG", 6),
        ("Logging/HttpProxy/Owa/HttpProxy_2021030710-1.LOG", 7),
        ("Logging/HttpProxy/Owa/HttpProxy_2021030710-1.LOG", 8),
        ("Logging/OABGeneratorLog/OABGenerator_20210303.log", 1),
        ("inetpub/logs/LogFiles/W3SVC1/u_ex210305.log", 9),
        ("inetpub/logs/LogFiles/W3SVC1/u_ex210305.log", 11),
        ("Logging/ECP/Server/ECPServer20210303-1.LOG", 10),
    }
    for f in result.findings:
        if (f.evidence.file, f.evidence.line) in quiet:
            assert f.confidence == "review", f
    assert not [f for f in result.findings if f.evidence.file.endswith("logon.aspx")]


def test_verdict_and_coverage(result) -> None:  # type: ignore[no-untyped-def]
    host = result.hosts[0]
    assert host.verdict == "compromised"
    assert iso_z(host.coverage.logs["ecp"].first) == "2021-03-03T06:59:18Z"
    assert host.coverage.logs["httpproxy/Ecp"].files == 1
    assert any("proxylogon was first exploited" in w for w in host.warnings)


def test_cli_json_and_exit_code(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["hunt", str(DATA), "--format", "json", "--no-store", "--jobs", "1"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert set(doc) == {"hosts", "findings", "coverage", "errors"}
    f = doc["findings"][0]
    assert set(f) >= {"rule", "wave", "cve", "confidence", "time", "title", "description", "host", "evidence"}
    assert not Path(f["evidence"]["file"]).is_absolute()


def test_cli_clean_is_zero(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    (clean / "Logging/HttpProxy/Owa").mkdir(parents=True)
    src = DATA / "Logging/HttpProxy/Owa/HttpProxy_2021030710-1.LOG"
    lines = src.read_text().splitlines()
    (clean / "Logging/HttpProxy/Owa/HttpProxy_2021030710-1.LOG").write_text(
        "\n".join(lines[:5] + [lines[6]]) + "\n"
    )
    res = CliRunner().invoke(cli, ["hunt", str(clean), "--format", "json", "--no-store"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["hosts"][0]["verdict"] == "clean"


def test_archive_gives_same_findings(tmp_path: Path, result) -> None:  # type: ignore[no-untyped-def]
    archive = shutil.make_archive(str(tmp_path / "EXCH01"), "zip", DATA)
    res = hunt_paths([Path(archive)], HuntOptions(jobs=1))
    got = {(f.rule, f.evidence.file, f.evidence.line) for f in res.findings}
    want = {(f.rule, f.evidence.file, f.evidence.line) for f in result.findings}
    assert got == want
    assert res.hosts[0].host == "EXCH01"


def test_findings_land_in_the_store(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "store.db"
    res = CliRunner().invoke(
        cli, ["hunt", str(DATA), "--format", "json", "--db", f"sqlite:///{db}", "--jobs", "1"]
    )
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    with sqlite3.connect(db) as conn:
        hunts = conn.execute("select host, verdict from hunts").fetchall()
        n_findings = conn.execute("select count(*) from findings").fetchone()[0]
    assert hunts == [("realworld", "compromised")]
    assert n_findings == len(doc["findings"])


@pytest.mark.parametrize("strategy", ["hyperscan", "re2", "ahocorasick", "regex"])
def test_prefilter_strategies_agree(strategy: str) -> None:
    from exwatch.hunt.sources.textlog import LiteralFinder

    body = (DATA / "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log").read_bytes()
    lits = ["/ECP/Y.JS", "autodiscover.json", "#fields:"]
    want = [
        i
        for i, line in enumerate(body.splitlines(keepends=True))
        if any(x.lower() in line.lower().decode() for x in lits)
    ]
    starts = list(LiteralFinder(lits, strategy).positions(body))
    line_starts = [0] + [i + 1 for i, c in enumerate(body) if c == 10]
    assert [line_starts.index(s) for s in starts] == want


def test_prefilter_loses_nothing(result) -> None:  # type: ignore[no-untyped-def]
    """Parsing every line and trying every rule finds exactly what the literal pre-filter finds."""
    full = hunt_paths([DATA], HuntOptions(jobs=1, prefilter=False))
    key = lambda f: (f.rule, f.evidence.file, f.evidence.line, f.evidence.record)  # noqa: E731
    assert sorted(map(key, full.findings)) == sorted(map(key, result.findings))


def test_since_until_and_jsonl() -> None:
    res = CliRunner().invoke(
        cli,
        [
            "hunt",
            str(DATA),
            "--format",
            "jsonl",
            "--no-store",
            "--jobs",
            "1",
            "--since",
            "2021-08-01",
            "--until",
            "2021-12-31T23:59:59Z",
        ],
    )
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    findings = [r for r in rows if r["type"] == "finding"]
    assert rows[0]["type"] == "host"
    assert findings and all(
        r["time"] and "2021-08-01" <= r["time"] <= "2021-12-31T23:59:59Z" for r in findings
    )
    rules = {r["rule"] for r in findings}
    assert "proxyshell.autodiscover_success" in rules
    assert not [r for r in rules if r.startswith(("proxylogon.", "webshell.", "proxynotshell.owassrf"))]


@pytest.mark.integration
def test_dask_executor_runs_the_same_tasks(result) -> None:  # type: ignore[no-untyped-def]
    import distributed  # exwatch[cluster], in [all]: installed by make test, so never a skip

    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        res = hunt_paths([DATA], HuntOptions(jobs=1), executor=client.get_executor())
    key = lambda f: (f.rule, f.evidence.file, f.evidence.line)  # noqa: E731
    assert sorted(map(key, res.findings)) == sorted(map(key, result.findings))


def test_two_paths_two_hosts(tmp_path: Path) -> None:
    other = tmp_path / "EXCH02"
    shutil.copytree(DATA / "inetpub", other / "inetpub")
    res = hunt_paths([DATA, other], HuntOptions(jobs=1))
    assert [h.host for h in res.hosts] == ["realworld", "EXCH02"]
    assert {f.host for f in res.findings} == {"realworld", "EXCH02"}
    assert res.hosts[1].coverage.logs["iis"].files == 1 and "ecp" not in res.hosts[1].coverage.logs


def test_ssrf_hit_names_the_ecp_line(result) -> None:  # type: ignore[no-untyped-def]
    """PL-2: the reset call in the HttpProxy log points at the ECP Server line that carried the script."""
    reset = _hits(result, "proxylogon.ecp_reset_vdir")[0]
    assert (
        "proxylogon.ecp_set_vdir_script at Logging/ECP/Server/ECPServer20210303-1.LOG:7 (-2 s)"
        in reset.description
    )


def test_logs_older_than_since_are_not_scanned(tmp_path: Path) -> None:
    import os

    root = tmp_path / "old"
    shutil.copytree(DATA / "inetpub", root / "inetpub")
    log = root / "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log"
    old = 1_600_000_000  # 2020-09-13: the file was last written before the window
    os.utime(log, (old, old))
    # Its lines claim 2021-08 times; a file not written since 2020 cannot hold them, so it is not scanned.
    res = hunt_paths([root], HuntOptions(jobs=1, since=datetime(2021, 1, 1, tzinfo=UTC)))
    assert not [f for f in res.findings if f.evidence.file.endswith("u_ex210305.log")]
    assert res.hosts[0].coverage.logs["iis"].files == 1


@pytest.mark.parametrize("strategy", ["re2", "ahocorasick", "regex"])
def test_every_prefilter_engine_finds_the_same(result, strategy: str) -> None:  # type: ignore[no-untyped-def]
    other = hunt_paths([DATA], HuntOptions(jobs=1, strategy=strategy))
    key = lambda f: (f.rule, f.evidence.file, f.evidence.line, f.evidence.record)  # noqa: E731
    assert sorted(map(key, other.findings)) == sorted(map(key, result.findings))
