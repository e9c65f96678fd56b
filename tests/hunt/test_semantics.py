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


# --- a folder of triage packages is several hosts; a stored hunt says when it matches no scanned host ---


def _packages(tmp_path: Path) -> Path:
    from exwatch.lab import triage

    case = tmp_path / "case"
    triage.write_triage(case / "EXCH01", seed=31, size=200_000, scenarios=("proxylogon",), host="EXCH01")
    triage.write_triage(case / "EXCH02", seed=32, size=200_000, scenarios=("clean",), host="EXCH02")
    return case


def test_folder_of_packages_is_several_hosts(tmp_path: Path) -> None:
    import shutil

    case = _packages(tmp_path)
    code, doc = _hunt(str(case))
    assert code == 1
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert set(hosts) == {"EXCH01", "EXCH02"}
    assert hosts["EXCH01"]["verdict"] == "compromised"
    assert (
        hosts["EXCH02"]["verdict"] in ("clean", "attempted") and hosts["EXCH02"]["counts"]["confirmed"] == 0
    )
    assert hosts["EXCH01"]["source"].endswith("EXCH01")
    assert {f["host"] for f in doc["findings"] if f["confidence"] == "confirmed"} == {"EXCH01"}
    # paths are relative to each package, not to the folder holding them
    assert not [f for f in doc["findings"] if f["evidence"]["file"].startswith(("EXCH01/", "EXCH02/"))]
    # archives in the folder are packages too
    shutil.make_archive(str(case / "EXCH03"), "zip", case / "EXCH02")
    code, doc = _hunt(str(case))
    assert {h["host"] for h in doc["hosts"]} == {"EXCH01", "EXCH02", "EXCH03"}
    # one package, or a folder whose sub-folders are not packages, stays one host named as given
    code, doc = _hunt(str(case / "EXCH01"))
    assert [h["host"] for h in doc["hosts"]] == ["EXCH01"]
    # --host names one host: refused for a folder of packages, with one line
    res = CliRunner().invoke(cli, ["hunt", str(case), "--host", "X", "--no-store", "--jobs", "1"])
    assert res.exit_code == 2
    assert "holds 3 triage packages" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def _scanned_store(url: str) -> int:
    """A store in which one scan saw mail.contoso.com (X-FEServer EXCH07) at build 15.1.2176.2."""
    from datetime import UTC, datetime

    from exwatch import kb
    from exwatch.fleet import open_store

    verdict = kb.verdict("15.1.2176.2")
    with open_store(url) as store:
        scan = store.start_scan(
            {"targets": ["mail.contoso.com"]}, started_at=datetime(2021, 3, 5, tzinfo=UTC)
        )
        store.add_observations(
            scan,
            [
                {
                    "target": "mail.contoso.com",
                    "key": "mail.contoso.com",
                    "address": "192.0.2.10",
                    "name": "mail.contoso.com",
                    "fe_server": "EXCH07",
                    "port": 443,
                    "status": "exchange",
                    "build": "15.1.2176.2",
                    "build_source": "x-owa-version",
                    "cu_only": False,
                    "waves": {w: v.to_dict() for w, v in verdict.waves.items()},
                }
            ],
        )
        store.finish_scan(scan)
        (host_id,) = store.find_hosts("mail.contoso.com")
    return host_id


def _hunt_stored(*args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    res = CliRunner().invoke(cli, ["hunt", *args, "--format", "json", "--jobs", "1"])
    return res.exit_code, json.loads(res.stdout), res.stderr


def test_unmatched_host_said_and_host_links(tmp_path: Path) -> None:
    from exwatch.fleet import open_store
    from exwatch.fleet.queries import host_history
    from exwatch.lab import triage

    url = f"sqlite:///{tmp_path / 'store.db'}"
    host_id = _scanned_store(url)
    pkg = tmp_path / "EXCH01"
    triage.write_triage(pkg, seed=33, size=200_000, scenarios=("proxylogon",), host="EXCH01")

    code, doc, err = _hunt_stored(str(pkg), "--db", url)
    assert code == 1
    store_info = doc["hosts"][0]["store"]
    assert store_info["linked"] is False and store_info["host_id"] is None
    assert "no scanned host in the store is named 'EXCH01'" in store_info["message"]
    notes = [line for line in err.splitlines() if "no scanned host" in line]
    assert len(notes) == 1 and "--host" in notes[0]
    assert doc["hosts"][0]["next_steps"]["fix"]["source"] == "kb"

    # --host NAME (a name, address or X-FEServer the store knows) links the hunt to that host
    code, doc, err = _hunt_stored(str(pkg), "--db", url, "--host", "EXCH07")
    assert code == 1 and "no scanned host" not in err
    h = doc["hosts"][0]
    assert h["store"]["linked"] is True and h["store"]["host_id"] == host_id and h["store"]["message"] is None
    fix = h["next_steps"]["fix"]
    assert fix["source"] == "store" and fix["build"] == "15.1.2176.2"
    assert "KB5000871" in fix["text"]  # the March 2021 update for Exchange 2016 CU19
    # --host #id: linked, and named after the stored host
    code, doc, err = _hunt_stored(str(pkg), "--db", url, "--host", f"#{host_id}")
    assert doc["hosts"][0]["host"] == "mail.contoso.com" and doc["hosts"][0]["store"]["linked"] is True
    assert {f["host"] for f in doc["findings"]} == {"mail.contoso.com"}
    with open_store(url) as store:
        hunts = host_history(store, f"#{host_id}").to_dict()["hunts"]
    assert len(hunts) == 2 and all(x["verdict"] == "compromised" for x in hunts)
