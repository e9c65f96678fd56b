"""On lab triage packages of every scenario: every planted attack item is found with its expected
detection (recall 100%), and no look-alike rises above review."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from exwatch.hunt import HuntOptions, HuntResult, hunt_paths
from exwatch.lab import triage

SCENARIOS = ["proxylogon", "proxyshell", "proxynotshell", "lookalikes", "clean", "all"]


def _loc(item: dict[str, Any]) -> int | None:
    return item.get("line", item.get("record"))


def _at(result: HuntResult, file: str, loc: int | None) -> list:  # type: ignore[type-arg]
    return [
        f
        for f in result.findings
        if f.evidence.file == file and (loc is None or loc in (f.evidence.line, f.evidence.record))
    ]


def _check(result: HuntResult, truth: dict[str, Any]) -> None:
    missed = []
    loud = []
    for item in truth["items"]:
        here = _at(result, item["file"], _loc(item))
        if item["kind"] == "attack" and not [f for f in here if f.rule == item["detection"]]:
            missed.append((item["detection"], item["file"], _loc(item)))
        if item["kind"] == "lookalike":
            loud += [
                (f.rule, f.confidence, item["file"], _loc(item)) for f in here if f.confidence != "review"
            ]
    assert not missed, f"missed attack items: {missed}"
    assert not loud, f"look-alikes above review: {loud}"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = {}
    for i, scenario in enumerate(SCENARIOS):
        root = tmp_path_factory.mktemp(scenario) / "EXCH01"
        truth = triage.write_triage(root, seed=10 + i, size=1_500_000, scenarios=(scenario,))
        out[scenario] = (root, truth)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_recall_and_lookalikes(packages: dict[str, tuple[Path, dict[str, Any]]], scenario: str) -> None:
    root, truth = packages[scenario]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
    result = hunt_paths([root], HuntOptions(jobs=2))
    _check(result, truth)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()} == before
    attacks = [i for i in truth["items"] if i["kind"] == "attack"]
    if scenario not in ("clean", "lookalikes"):
        assert attacks, f"scenario {scenario} planted no attack: the recall check above was empty"
    if scenario in ("lookalikes", "all"):
        assert any(i["kind"] == "lookalike" for i in truth["items"]), "no look-alike was planted"
    if scenario == "clean":
        assert not attacks and result.hosts[0].verdict == "clean"
        assert not [f for f in result.findings if f.confidence != "review"]
    elif attacks:
        assert result.hosts[0].verdict == "compromised"
    else:
        assert result.hosts[0].verdict == "clean"
    assert result.errors == [], "a generated package is readable from end to end"
    logs = result.hosts[0].coverage.logs
    assert logs["httpproxy"].first and logs["iis"].first


def test_archive_of_a_package(packages: dict[str, tuple[Path, dict[str, Any]]], tmp_path: Path) -> None:
    root, truth = packages["all"]
    archive = tmp_path / "EXCH01.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted(root.rglob("*")):
            tf.add(p, arcname=p.relative_to(root).as_posix(), recursive=False)
    result = hunt_paths([archive], HuntOptions(jobs=2))
    assert result.hosts[0].host == "EXCH01"
    _check(result, json.loads((root / "truth.json").read_text()))
