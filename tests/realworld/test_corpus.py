"""The real-line corpus: lines from public write-ups, advisories and threads, retyped into their file
formats (tests/realworld/EXCH01, written by build_corpus.py), each with its source in manifest.csv.

The hunt runs over the corpus once; recall (expected attacks and attempts found by their expected rule)
and false alarms (benign lines and scanner noise flagged at likely or confirmed) are computed and
printed. Every expected detection must be found and no benign or scanner line may rise above review.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.hunt.rules.catalog import catalogue

HERE = Path(__file__).parent
ROOT = HERE / "EXCH01"
MANIFEST = list(csv.DictReader((HERE / "manifest.csv").open(encoding="utf-8")))


@pytest.fixture(scope="module")
def findings() -> dict[tuple[str, int], list[tuple[str, str]]]:
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in ROOT.rglob("*") if p.is_file()}
    res = hunt_paths([ROOT], HuntOptions(jobs=1))
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in ROOT.rglob("*") if p.is_file()}
    assert before == after, "evidence changed"
    assert not res.errors, res.errors
    out: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for f in res.findings:
        out.setdefault((f.evidence.file, f.evidence.line or 0), []).append((f.rule, f.confidence))
    return out


def test_manifest_is_complete() -> None:
    assert len(MANIFEST) >= 40
    classes = {r["class"] for r in MANIFEST}
    assert {"attack", "attempt", "scanner", "benign"} <= classes
    for r in MANIFEST:
        assert r["source"].startswith("https://"), r
        assert r["expected"] == "none" or r["expected"] in catalogue(), r
        line = (ROOT / r["file"]).read_bytes().split(b"\r\n")[int(r["line"]) - 1]
        assert line and not line.startswith(b"#"), r
    # The three waves are all in it.
    waves = {catalogue()[r["expected"]].wave for r in MANIFEST if r["expected"] != "none"}
    assert {"proxylogon", "proxyshell", "proxynotshell", "webshell"} <= waves


def test_corpus_recall_and_false_alarms(findings: dict[tuple[str, int], list[tuple[str, str]]]) -> None:
    expected = [r for r in MANIFEST if r["expected"] != "none" and r["class"] in ("attack", "attempt")]
    quiet = [r for r in MANIFEST if r["class"] in ("benign", "scanner")]
    missed = [
        r
        for r in expected
        if r["expected"] not in [g[0] for g in findings.get((r["file"], int(r["line"])), [])]
    ]
    alarms = [
        (r, findings.get((r["file"], int(r["line"]))))
        for r in quiet
        if any(c in ("likely", "confirmed") for _, c in findings.get((r["file"], int(r["line"])), []))
    ]
    scanners_seen = [
        r
        for r in quiet
        if r["expected"] != "none"
        and r["expected"] in [g[0] for g in findings.get((r["file"], int(r["line"])), [])]
    ]
    print(
        f"\ncorpus: {len(MANIFEST)} lines; recall {len(expected) - len(missed)}/{len(expected)} expected detections; "
        f"false alarms {len(alarms)}/{len(quiet)} benign and scanner lines at likely/confirmed; "
        f"scanner lines labelled as such {len(scanners_seen)}/{sum(1 for r in quiet if r['expected'] != 'none')}"
    )
    assert not missed, [(r["file"], r["line"], r["expected"]) for r in missed]
    assert not alarms, alarms
    assert len(scanners_seen) == sum(1 for r in quiet if r["expected"] != "none")
