"""The scan summary and exit-code policy, the streaming fold and the one fix per host: no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from exwatch.scan.engine import ScanSummary, finish_host
from exwatch.scan.fold import HostFolder
from exwatch.scan.observation import build_verdict, host_fix


def host(n: int, status: str = "exchange", **waves: str) -> dict[str, Any]:
    return {
        "key": f"https://10.0.0.{n}:443",
        "address": f"10.0.0.{n}",
        "port": 443,
        "status": status,
        "error": "refused" if status == "unreachable" else None,
        "waves": {w: {"state": s} for w, s in waves.items()},
    }


def test_counts_per_host_and_exit_codes() -> None:
    s = ScanSummary(1)
    assert s.exit_code == 0
    s.add(host(1, proxylogon="patched", proxyshell="patched"))
    assert s.exit_code == 0
    s.add(host(2, "unreachable", proxylogon="unreachable"))
    assert (s.vulnerable, s.incomplete, s.exit_code) == (0, 1, 3)
    s.add(host(3, proxylogon="unknown"))
    assert (s.vulnerable, s.incomplete, s.exit_code) == (0, 2, 3)
    s.add(host(4, proxylogon="vulnerable", proxyshell="vulnerable"))
    assert (s.vulnerable, s.exit_code) == (1, 1)
    assert s.hosts == 4 and s.statuses == {"exchange": 3, "unreachable": 1}
    assert s.waves["proxylogon"] == {"patched": 1, "unreachable": 1, "unknown": 1, "vulnerable": 1}
    assert s.to_dict()["vulnerable_hosts"] == 1 and s.to_dict()["exposed_hosts"] == 2


def test_interrupted_with_nothing_found_is_3() -> None:
    s = ScanSummary(1)
    s.add(host(1, proxylogon="patched"))
    s.interrupted = True
    assert s.exit_code == 3


def test_max_exposed_does_not_turn_unknown_into_vulnerable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ScanSummary, "MAX_EXPOSED", 2)
    s = ScanSummary(1)
    for n in range(5):
        s.add(host(n, proxylogon="unknown"))
    assert len(s.exposed) == 2 and s.exposed_dropped == 3
    assert s.vulnerable == 0  # the bug: dropped unknown hosts were counted as vulnerable (exit 1)
    assert s.incomplete == 5  # and counted only from the capped list (2)
    assert s.exit_code == 3
    for n in range(5, 8):
        s.add(host(n, proxylogon="vulnerable"))
    assert (s.vulnerable, s.exposed_hosts, len(s.exposed), s.exit_code) == (3, 8, 2, 1)


def test_wave_selection_decides_exit_code_and_exposed_list() -> None:
    s = ScanSummary(1, waves_selected=("proxylogon",))
    s.add(host(1, proxylogon="patched", proxyshell="vulnerable"))
    assert (s.vulnerable, s.exit_code, s.exposed) == (0, 0, [])
    assert s.waves["proxyshell"] == {"vulnerable": 1}  # every wave is still counted
    s.add(host(2, proxylogon="vulnerable", proxyshell="patched"))
    assert (s.vulnerable, s.exit_code, [e["address"] for e in s.exposed]) == (1, 1, ["10.0.0.2"])


def test_not_exchange_and_unreachable_are_never_vulnerable() -> None:
    s = ScanSummary(1)
    s.add(host(1, "not_exchange", proxylogon="not_exchange"))
    assert (s.vulnerable, s.incomplete, s.exit_code) == (0, 0, 0)


def svc(addr: str, port: int, status: str, build: str | None = None) -> dict[str, Any]:
    return {"key": f"https://{addr}:{port}", "address": addr, "port": port, "status": status, "build": build}


def test_host_folder_streams_hosts_once_complete() -> None:
    folder = HostFolder()
    assert folder.expect("https://a:443", "a") == []
    assert folder.expect("https://a:80", "a") == []
    assert folder.add(svc("a", 80, "unreachable")) == []  # a:443 still out
    assert folder.expect("https://b:443", "b") == []  # a is closed, not complete
    done = folder.add(svc("a", 443, "exchange", "15.2.858.5"))
    assert [(h["address"], h["port"], h["status"]) for h in done] == [("a", 443, "exchange")]
    assert folder.add(svc("b", 443, "not_exchange")) == []  # b is the last host: still open
    assert folder.expect("https://c:443", "c") != []  # moving on closes b, complete: folded
    assert folder.open_hosts == 1
    assert [h["address"] for h in folder.finish()] == []  # c announced, nothing came back
    assert folder.open_hosts == 0


def test_host_folder_finish_folds_partial_hosts() -> None:
    folder = HostFolder()
    folder.expect("https://a:443", "a")
    folder.expect("https://a:80", "a")
    folder.add(svc("a", 80, "unreachable"))
    assert [(h["address"], h["status"]) for h in folder.finish()] == [("a", "unreachable")]


def _record(build: str, as_of: Any = None) -> dict[str, Any]:
    verdicts, _ = build_verdict(build, as_of)
    return {"build": build, "waves": {w: {"state": v[0], "fix": v[2]} for w, v in verdicts.items()}}


@pytest.mark.parametrize(
    ("build", "fix_build", "kb"),
    [
        ("15.2.1118.7", "15.2.1118.20", "KB5019758"),  # 2019 CU12: Nov22SU on the same CU
        ("15.1.2176.2", "15.1.2507.16", "KB5019758"),  # 2016 CU19: to CU23 and its Nov22SU
        ("14.3.509.0", "14.3.513.0", "KB5000978"),  # 2010 SP3 RU31: to RU32
    ],
)
def test_one_fix_per_host_covers_every_open_wave(build: str, fix_build: str, kb: str) -> None:
    rec = _record(build)
    fix = host_fix(rec)
    assert (fix["fix_build"], fix["fix_kb"]) == (fix_build, kb)
    assert fix_build in fix["fix"] and kb in fix["fix"]
    open_waves = [w for w, v in rec["waves"].items() if v["state"] in ("vulnerable", "unknown")]
    assert open_waves and all(w in fix["fix"] for w in open_waves)
    # every open wave's own fixing build is at or below the one fix
    for w in open_waves:
        own = rec["waves"][w]["fix"]
        for b in own["security_update"]:
            if b.split(".")[:3] == fix_build.split(".")[:3]:
                assert tuple(map(int, b.split("."))) <= tuple(map(int, fix_build.split(".")))


def test_fix_never_blank_for_an_exposed_host() -> None:
    assert host_fix(_record("15.2.1544.11"))["fix"] == ""  # nothing open: nothing to do
    no_build = {"build": None, "waves": {"proxylogon": {"state": "unknown", "fix": None}}}
    assert "exact build" in host_fix(no_build)["fix"]
    import datetime

    early = _record("15.1.2176.2", datetime.date(2021, 3, 1))
    assert "had been released by 2021-03-01" in host_fix(early)["fix"]
    rec = finish_host({"key": "https://10.0.0.1:443", "address": "10.0.0.1", **_record("15.2.1118.7")})
    assert rec["host"] == "10.0.0.1" and rec["fix_kb"] == "KB5019758"


def test_host_folder_end_of_stream_closes_the_last_host() -> None:
    folder = HostFolder()
    folder.expect("https://a:443", "a")
    assert folder.end_of_stream() == []  # announced, not back yet
    assert [h["address"] for h in folder.add(svc("a", 443, "exchange"))] == ["a"]
