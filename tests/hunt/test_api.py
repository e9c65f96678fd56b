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
    "ArchiveLimits",
    "CONFIDENCES",
    "CONFIDENCE_RANK",
    "Evidence",
    "FileCoverage",
    "FileError",
    "FileHunt",
    "FileStats",
    "Finding",
    "HostResult",
    "HuntOptions",
    "HuntResult",
    "HuntTask",
    "PACKAGE_MARKERS",
    "Progress",
    "RuleSpec",
    "StoredHunt",
    "VERDICTS",
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
IMPORTERS = ("cli/hunt.py", "cli/cluster.py", "cluster/hunt.py", "demo.py")
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
    for cls in (HuntTask, RuleSpec, FileHunt, Finding, Evidence, FileError):
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
    host = HostResult("H", "clean", {}, [], {"confirmed": 0, "likely": 0, "review": 0})
    assert HuntResult([host], [], []).exit_code == 0
    assert HuntResult([host], [dataclasses.replace(finding, confidence="review")], []).exit_code == 0
    assert HuntResult([host], [finding], [FileError("f", "e")]).exit_code == 1
    assert HuntResult([host], [], [FileError("f", "e")]).exit_code == 3
    assert HuntResult([dataclasses.replace(host, verdict="incomplete")], [], []).exit_code == 3
    assert HuntResult([], [], []).exit_code == 3
