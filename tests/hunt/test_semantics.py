"""Semantics users rely on: a hunt with no Exchange evidence, or none in the window, is incomplete (exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from exwatch.cli.main import cli

IIS = (
    "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n#Date: 2021-03-05 00:00:00\n"
    "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"
    "2021-03-05 08:00:00 10.0.0.5 GET /owa/ - 443 - 192.0.2.1 x - 200 0 0 20\n"
)


def _hunt(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    res = CliRunner().invoke(cli, ["hunt", *args, "--format", "json", "--no-store", "--jobs", "1"])
    return res.exit_code, json.loads(res.stdout)


def test_no_exchange_evidence_is_incomplete(tmp_path: Path) -> None:
    root = tmp_path / "EXCH01"
    (root / "docs").mkdir(parents=True)
    (root / "docs/readme.txt").write_text("not a log\n")
    code, doc = _hunt(str(root))
    assert code == 3
    assert doc["hosts"][0]["verdict"] == "incomplete"
    assert any("nothing says this host is clean" in w for w in doc["hosts"][0]["warnings"])


def test_window_excluding_every_log_is_incomplete(tmp_path: Path) -> None:
    root = tmp_path / "EXCH01"
    (root / "inetpub/logs/LogFiles/W3SVC1").mkdir(parents=True)
    (root / "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log").write_text(IIS)
    code, doc = _hunt(str(root))
    assert (code, doc["hosts"][0]["verdict"]) == (0, "clean")
    code, doc = _hunt(str(root), "--since", "2022-01-01", "--until", "2022-02-01")
    assert (code, doc["hosts"][0]["verdict"]) == (3, "incomplete")
    assert any("none of the 1 log files in the window" in w for w in doc["hosts"][0]["warnings"])
