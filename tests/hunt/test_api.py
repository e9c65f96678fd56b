"""The hunt package's public API and its typed seams (issue 16).

``exwatch.hunt.__all__`` is pinned (as httpx pins its own); the CLI, the cluster and the demo import only
those names; a task and what a worker sends back are frozen, picklable dataclasses; findings become JSON
only through ``to_dict`` and come back with ``from_dict``.
"""

from __future__ import annotations

import ast
import dataclasses
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

import exwatch.hunt as hunt
from exwatch.hunt import (
    Evidence,
    FileError,
    FileHunt,
    Finding,
    HostResult,
    HuntOptions,
    HuntResult,
    HuntTask,
    RuleSpec,
    hunt_paths,
)
from exwatch.hunt.worker import hunt_file

SRC = Path(__file__).resolve().parents[2] / "src" / "exwatch"
PUBLIC = [
    "Account",
    "Address",
    "ArchiveLimits",
    "CONFIDENCES",
    "CONFIDENCE_RANK",
    "CollectionCoverage",
    "Coverage",
    "Evidence",
    "FileCoverage",
    "FileError",
    "FileHunt",
    "FileStats",
    "FileToAct",
    "FilesCoverage",
    "Finding",
    "Fix",
    "HostResult",
    "HuntInterrupted",
    "HuntOptions",
    "HuntResult",
    "HuntStats",
    "HuntTask",
    "LogCoverage",
    "NamedFile",
    "NextSteps",
    "PACKAGE_MARKERS",
    "Progress",
    "RuleSpec",
    "Seen",
    "StoredHunt",
    "VERDICTS",
    "Window",
    "apply_limits",
    "centre_excerpt",
    "find_packages",
    "hunt_paths",
    "is_archive",
    "iso_z",
    "limit_options",
    "live_install_paths",
    "order",
    "package_host",
    "packages",
    "record_hunt",
    "refuse_store_in_evidence",
    "safe_text",
]
IMPORTERS = ("cli/hunt.py", "cli/hunt_output.py", "cli/cluster.py", "cluster/hunt.py", "demo.py")
Y_JS_LINE = (
    "2021-03-03 07:00:00 10.0.0.5 POST /ecp/y.js - 443 - 203.0.113.7 "
    "Mozilla/5.0+(Windows+NT+10.0) - 200 0 0 20\n"
)
IIS_HEAD = (
    "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n#Date: 2021-03-03 00:00:00\n"
    "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
    "cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"
)


def test_public_api_is_pinned() -> None:
    assert hunt.__all__ == PUBLIC
    assert hunt.__all__ == sorted(hunt.__all__)
    for name in hunt.__all__:
        assert getattr(hunt, name) is not None
    # every public name the package module holds is listed (a new one is a decision, made here)
    held = {n for n, v in vars(hunt).items() if not n.startswith("_") and not isinstance(v, type(hunt))}
    assert held == set(PUBLIC)


@pytest.mark.parametrize("module", IMPORTERS)
def test_cli_cluster_and_demo_import_only_public_names(module: str) -> None:
    tree = ast.parse((SRC / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("exwatch.hunt"):
            assert node.module == "exwatch.hunt", f"{module}:{node.lineno} imports {node.module}"
            assert {a.name for a in node.names} <= set(PUBLIC), f"{module}:{node.lineno}"
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("exwatch.hunt.") for a in node.names), f"{module}:{node.lineno}"


def test_value_types_are_frozen() -> None:
    for cls in (
        HuntTask,
        RuleSpec,
        FileHunt,
        Finding,
        Evidence,
        FileError,
        *(getattr(hunt, n) for n in ("NextSteps", "FileToAct", "NamedFile", "Address", "Account", "Window")),
        *(
            getattr(hunt, n)
            for n in ("Fix", "Seen", "Coverage", "LogCoverage", "CollectionCoverage", "HuntStats")
        ),
    ):
        assert dataclasses.fields(cls) and cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]


def test_a_task_pickles_and_a_worker_answers_in_types(tmp_path: Path) -> None:
    """What the engine ships to a process or Dask worker and what comes back, through pickle."""
    log = tmp_path / "u_ex210303.log"
    log.write_text(IIS_HEAD + Y_JS_LINE)
    task = HuntTask(path=str(log), rel="W3SVC1/u_ex210303.log", family="iis", size=log.stat().st_size)
    assert pickle.loads(pickle.dumps(task)) == task
    res = pickle.loads(pickle.dumps(hunt_file(task)))
    assert isinstance(res, FileHunt) and res.file == task.rel and res.family == "iis" and res.in_window
    assert res.findings and all(isinstance(f, Finding) and f.host == "" for f in res.findings)
    f = res.findings[0]
    assert f.evidence.family == "iis" and f.evidence.line == 5 and f.evidence.sha256
    assert f.time == datetime(2021, 3, 3, 7, 0, tzinfo=UTC)
    assert (
        res.coverage is not None and res.coverage.first == f.time and res.coverage.bytes == log.stat().st_size
    )
    assert res.stats.candidates >= 1 and res.stats.parsed >= 1


def test_findings_round_trip_through_json_edge(tmp_path: Path) -> None:
    pkg = tmp_path / "EXCH09" / "inetpub/logs/LogFiles/W3SVC1"
    pkg.mkdir(parents=True)
    (pkg / "u_ex210303.log").write_text(IIS_HEAD + Y_JS_LINE)
    result = hunt_paths([tmp_path / "EXCH09"], HuntOptions(jobs=1))
    assert result.findings and all(f.host == "EXCH09" for f in result.findings)
    for f in result.findings:
        back = Finding.from_dict(f.to_dict())
        assert back.to_dict() == f.to_dict()
        assert back == dataclasses.replace(f, time=f.time.replace(microsecond=0) if f.time else None)
    e = FileError("a/b.log", "a/b.log: cannot read", "unreadable")
    assert FileError.from_dict(e.to_dict()) == e


def test_exit_code_of_a_result() -> None:
    ev = Evidence("x")
    finding = Finding("r", "proxylogon", "", "likely", None, "t", "d", "H", ev)
    host = HostResult("H", "clean", hunt.Coverage(), [], {"confirmed": 0, "likely": 0, "review": 0})
    assert HuntResult([host], [], []).exit_code == 0
    assert HuntResult([host], [dataclasses.replace(finding, confidence="review")], []).exit_code == 0
    assert HuntResult([host], [finding], [FileError("f", "e")]).exit_code == 1
    assert HuntResult([host], [], [FileError("f", "e")]).exit_code == 3
    assert HuntResult([dataclasses.replace(host, verdict="incomplete")], [], []).exit_code == 3
    assert HuntResult([], [], []).exit_code == 3


def _f(rule: str, confidence: str, family: str, file: str, minute: int, **facts: str) -> Finding:
    ev = Evidence(
        file, line=minute, family=family, sha256="ab" * 32 if family == "file" else None, facts=facts
    )
    t = datetime(2021, 3, 3, 7, minute, 30, 500_000, tzinfo=UTC)
    return Finding(rule, "proxylogon", "", confidence, t, "t", "d", "H", ev)


def test_next_steps_are_typed_and_their_json_keeps_its_shape() -> None:
    """Files, addresses and accounts as typed rows; the JSON edge keeps the keys (and their order)
    that ``--format json`` always printed."""
    from exwatch.hunt import Account, Address, FileToAct, NamedFile, NextSteps, Window
    from exwatch.hunt.nextsteps import next_steps

    findings = [
        _f("webshell.chopper", "confirmed", "file", "inetpub/x.aspx", 10),
        _f("webshell.known_path", "likely", "file", "inetpub/x.aspx", 12),
        _f(
            "proxylogon.ssrf",
            "likely",
            "iis",
            "u_ex.log",
            5,
            client_ip="203.0.113.7",
            user="NT AUTHORITY\\SYSTEM",
        ),
        _f(
            "proxylogon.write",
            "likely",
            "ecp",
            "ecp.log",
            6,
            client_ip="10.0.0.5",
            path="C:\\inetpub\\y.aspx",
        ),
        _f("context.attacker_ip", "review", "iis", "u_ex.log", 1, client_ip="203.0.113.7"),
        _f("noise", "review", "iis", "u_ex.log", 2, client_ip="198.51.100.1"),
    ]
    steps = next_steps(findings)
    assert isinstance(steps, NextSteps) and steps.waves == ("proxylogon",) and steps.fix is None
    # The window from the log times, not the files' modification times.
    assert steps.window == Window(findings[2].time, findings[3].time)  # type: ignore[arg-type]
    (file_row,) = steps.files
    assert (
        isinstance(file_row, FileToAct) and file_row.action == "remove" and file_row.confidence == "confirmed"
    )
    assert file_row.seen.findings == 2 and file_row.seen.rules == ("webshell.chopper", "webshell.known_path")
    (named,) = steps.files_named_in_logs
    assert isinstance(named, NamedFile) and named.named_in == "ecp.log:6"
    assert [a.address for a in steps.addresses] == [
        "203.0.113.7",
        "10.0.0.5",
    ]  # internal last, unlisted left out
    first = steps.addresses[0]
    assert isinstance(first, Address) and first.published and first.seen.findings == 2
    (account,) = steps.accounts
    assert isinstance(account, Account) and account.system
    doc = steps.to_dict()
    assert list(doc) == ["window", "files", "files_named_in_logs", "addresses", "accounts", "waves", "fix"]
    assert doc["window"] == {"first": "2021-03-03T07:05:30Z", "last": "2021-03-03T07:06:30Z"}
    files = doc["files"]
    assert isinstance(files, list) and list(files[0]) == [
        "path", "action", "findings", "first", "last", "rules", "sha256", "confidence"
    ]  # fmt: skip
    addresses = doc["addresses"]
    assert isinstance(addresses, list)
    assert addresses[0] == {
        "address": "203.0.113.7",
        "findings": 2,
        "first": "2021-03-03T07:01:30Z",
        "last": "2021-03-03T07:05:30Z",
        "rules": ["proxylogon.ssrf", "context.attacker_ip"],
        "internal": False,
        "published": True,
    }
    assert "published" not in addresses[1]
    assert next_steps([]).to_dict()["window"] is None


def test_fix_json_by_source() -> None:
    """A fix from kb, from a collection's build, and from a store that never read the build: the keys
    each source always printed."""
    from exwatch.hunt import Fix
    from exwatch.hunt.nextsteps import fix_by_wave, fix_from_build

    kb_fix = fix_by_wave(["proxylogon", "nosuchwave"])
    assert kb_fix is not None and list(kb_fix.waves) == ["proxylogon"] and kb_fix.build is None
    assert list(kb_fix.to_dict()) == ["source", "build", "waves", "text"]
    built = fix_from_build("15.2.792.3", ["proxylogon"], "collection")
    assert built is not None and built.states and built.states["proxylogon"] == "vulnerable"
    assert list(built.to_dict()) == ["source", "build", "states", "waves", "text"]
    assert fix_from_build("not a build", ["proxylogon"], "collection") is None
    unscanned = Fix(source="store", build=None, text="scan it", host_id=3)
    assert unscanned.to_dict() == {
        "source": "store",
        "build": None,
        "host_id": 3,
        "waves": {},
        "text": "scan it",
    }
    stored = dataclasses.replace(
        built, source="store", host_id=3, scanned_at=datetime(2021, 3, 4, tzinfo=UTC)
    )
    assert list(stored.to_dict())[-3:] == ["host_id", "scanned_at", "status"]
    assert stored.to_dict()["scanned_at"] == "2021-03-04T00:00:00+00:00"


def test_coverage_json_and_merge() -> None:
    """Per family in the order first seen (records only where counted), then files and collection."""
    from exwatch.hunt import CollectionCoverage, Coverage, FileCoverage, FilesCoverage, LogCoverage
    from exwatch.hunt.timeline import merge_coverage

    t = datetime(2021, 3, 3, 7, 0, 0, 900_000, tzinfo=UTC)
    logs = merge_coverage(
        [
            ("HttpProxy/Ecp/a.log", FileCoverage("httpproxy", t, t, 10)),
            ("evtx/App.evtx", FileCoverage("evtx", None, None, 0, records=4)),
            ("HttpProxy/Ecp/b.log", FileCoverage("httpproxy", t.replace(hour=5), None, 5)),
        ],
        {"HttpProxy/Ecp/a.log": "Ecp", "HttpProxy/Ecp/b.log": "Ecp"},
    )
    assert list(logs) == ["httpproxy", "httpproxy/Ecp", "evtx"]
    assert logs["httpproxy"] == LogCoverage(t.replace(hour=5), t, 2, 15)
    assert logs["evtx"].records == 4 and logs["evtx"].first is None
    cov = Coverage(
        logs=logs,
        files=FilesCoverage(2, 30),
        collection=CollectionCoverage(t, 3, 40, {"max_bytes": 1}, 2, "15.2.792.3"),
    )
    doc = cov.to_dict()
    assert list(doc) == ["httpproxy", "httpproxy/Ecp", "evtx", "files", "collection"]
    assert doc["httpproxy"] == {
        "first": "2021-03-03T05:00:00Z",
        "last": "2021-03-03T07:00:00Z",
        "files": 2,
        "bytes": 15,
    }
    assert doc["evtx"] == {"first": None, "last": None, "files": 1, "bytes": 0, "records": 4}
    assert doc["files"] == {"files": 2, "bytes": 30}
    collection = doc["collection"]
    assert isinstance(collection, dict) and collection["collected_at"] == "2021-03-03T07:00:00Z"


def test_hunt_stats_merge() -> None:
    from exwatch.hunt import HuntStats

    merged = HuntStats.merge(
        [HuntStats(1, 10, 3, 2, ("a", "b")), HuntStats(2, 5, 1, 1, ("b", "c")), HuntStats()]
    )
    assert merged == HuntStats(3, 15, 4, 3, ("a", "b", "c"))
