"""Scan and host lifecycle on both backends: scans list/show/delete, retire, merge, split, undo, and the
fleet picture after each (stale hosts counted apart)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.errors import InputError
from exwatch.fleet import Store
from exwatch.fleet import lifecycle as lc
from exwatch.fleet import queries as q
from exwatch.fleet.rows import PictureDoc

T0 = datetime(2021, 3, 9, tzinfo=UTC)


def rec(address: str, state: str, port: int = 443, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target": address,
        "key": f"{address}:{port}",
        "address": address,
        "port": port,
        "status": "exchange",
        "build": "15.1.2176.2",
        "fe_server": f"EX{address.rsplit('.', 1)[1]}",
        "waves": {"proxylogon": {"state": state, "fix": {"text": "install KB5000871"}}},
    }
    out.update(extra)
    return out


def scan(store: Store, day: float, records: list[dict[str, Any]]) -> int:
    sid = store.start_scan(
        {"targets": sorted({r["address"] for r in records})}, started_at=T0 + timedelta(days=day)
    )
    store.add_observations(sid, records)
    store.finish_scan(sid)
    return sid


def latest(store: Store, **kw: Any) -> Any:
    return q.fleet_series(store, **kw)[-1]


def test_rescan_of_one_host_keeps_the_fleet(store: Store) -> None:
    scan(store, 0, [rec(f"127.75.0.{i}", "vulnerable") for i in range(1, 6)])
    scan(store, 1, [rec("127.75.0.1", "patched")])
    pic = latest(store)
    pl = pic.waves["proxylogon"]
    assert (pl.vulnerable, pl.patched, pic.statuses) == (4, 1, {"exchange": 5})
    assert pic.scope == ("127.75.0.1",) and pic.scan_statuses == {"exchange": 1}
    # a refused port 80 in a later scan does not hide the port-443 verdict
    scan(store, 2, [rec("127.75.0.2", "x", port=80, status="unreachable", build=None, waves=None)])
    assert latest(store).waves["proxylogon"].vulnerable == 4
    listed = {h.address: (h.status, h.port) for h in q.list_hosts(store)}
    assert listed["127.75.0.2"] == ("exchange", 443)


def test_stale_hosts_are_counted_apart(store: Store) -> None:
    scan(store, 0, [rec("127.75.1.1", "vulnerable"), rec("127.75.1.2", "patched")])
    scan(store, 40, [rec("127.75.1.2", "patched")])
    pic = latest(store)
    assert pic.stale == 1 and pic.statuses == {"exchange": 1}
    assert pic.waves["proxylogon"].vulnerable == 0 and pic.waves["proxylogon"].stale == 1
    assert q.hosts_at_risk(store) == []
    wider = latest(store, max_age=timedelta(days=60))
    assert wider.stale == 0 and wider.waves["proxylogon"].vulnerable == 1
    assert [h.address for h in q.list_hosts(store) if h.stale] == ["127.75.1.1"]


def test_retire_and_undo(store: Store) -> None:
    scan(store, 0, [rec("127.75.2.1", "vulnerable"), rec("127.75.2.2", "patched")])
    scan(store, 7, [rec("127.75.2.1", "vulnerable"), rec("127.75.2.2", "patched")])
    done = lc.retire(store, "127.75.2.1", at=T0 + timedelta(days=3))
    series = q.fleet_series(store)
    assert [s.waves["proxylogon"].vulnerable for s in series] == [1, 0]  # out from day 3 on
    assert [s.hosts for s in series] == [2, 1]
    lc.undo(store, done["change"])
    assert [s.waves["proxylogon"].vulnerable for s in q.fleet_series(store)] == [1, 1]
    with pytest.raises(InputError, match="already undone"):
        lc.undo(store, done["change"])


def test_merge_split_undo(store: Store) -> None:
    # one server seen at two addresses that identity matching could not join (no name, no certificate)
    scan(
        store,
        0,
        [rec("127.75.3.1", "vulnerable", fe_server="A"), rec("127.75.3.2", "patched", fe_server="B")],
    )
    assert latest(store).hosts == 2
    merged = lc.merge(store, "127.75.3.1", "127.75.3.2")
    pic = latest(store)
    assert pic.hosts == 1 and pic.waves["proxylogon"].vulnerable == 1  # most exposed of its answers
    assert store.find_hosts("127.75.3.2") == [merged["host_id"]]
    changes = lc.list_changes(store)
    assert [c["kind"] for c in changes] == ["merge"] and changes[0]["observations"] == 1
    lc.undo(store, merged["change"])
    assert latest(store).hosts == 2
    gone = store.find_hosts("127.75.3.2")[0]
    assert gone != merged["host_id"]
    assert [s.waves["proxylogon"] for s in q.host_history(store, f"#{gone}").snapshots] == ["patched"]
    with pytest.raises(InputError, match="nothing to split"):
        lc.split(store, f"#{gone}", ["127.75.3.2"])


def test_merged_identifiers_name_the_kept_host(store: Store) -> None:
    scan(
        store,
        0,
        [rec("127.75.7.1", "vulnerable", fe_server="A"), rec("127.75.7.2", "patched", fe_server="B")],
    )
    merged = lc.merge(store, "127.75.7.1", "127.75.7.2")
    # a later scan of the merged address lands on the kept host
    scan(store, 1, [rec("127.75.7.2", "patched", fe_server="B")])
    pic = latest(store)
    assert pic.hosts == 1 and pic.waves["proxylogon"].patched == 1
    assert store.find_hosts("127.75.7.2") == [merged["host_id"]]


def test_split_then_undo(store: Store) -> None:
    # two servers behind one DNS name: identity matching takes them for one host
    scan(store, 0, [rec("127.75.4.1", "vulnerable", name="mail.example")])
    scan(store, 1, [rec("127.75.4.2", "patched", name="mail.example")])
    assert latest(store).hosts == 1
    done = lc.split(store, "mail.example", ["127.75.4.1"])
    series = q.fleet_series(store)
    assert [s.hosts for s in series] == [1, 2]
    assert series[-1].waves["proxylogon"].vulnerable == 1 and series[-1].waves["proxylogon"].patched == 1
    with pytest.raises(InputError, match="no observation at"):
        lc.split(store, "mail.example", ["127.75.9.9"])
    lc.undo(store, done["change"])
    series = q.fleet_series(store)
    assert [s.hosts for s in series] == [1, 1]
    assert series[-1].waves["proxylogon"].patched == 1


def test_scans_list_show_delete(store: Store) -> None:
    first = scan(store, 0, [rec("127.75.5.1", "vulnerable"), rec("127.75.5.2", "vulnerable")])
    second = scan(store, 1, [rec("127.75.5.1", "patched")])
    third = scan(store, 2, [rec("127.75.5.3", "patched")])
    listed = lc.list_scans(store)
    assert [s["scan"] for s in listed] == [third, second, first]
    assert listed[-1]["scope"] == ["127.75.5.1", "127.75.5.2"] and listed[-1]["services"] == 2
    shown = lc.show_scan(store, second)
    assert shown["scope"] == ["127.75.5.1"] and shown["statuses"] == {"exchange": 1}
    assert shown["fleet_picture"]["hosts"] == 2
    assert latest(store).waves["proxylogon"].vulnerable == 1
    # deleting the rescan: host 1 is vulnerable again in every later picture
    done = lc.delete_scan(store, second)
    assert done["services"] == 1 and done["pictures_rebuilt"] == 1
    assert [s.waves["proxylogon"].vulnerable for s in q.fleet_series(store)] == [2, 2]
    assert [w.first_protected for w in q.exposure_windows(store)] == [None, None]
    # deleting the only scan of host 3 removes the host too
    done = lc.delete_scan(store, third)
    assert done["hosts_removed"] == 1 and store.find_hosts("127.75.5.3") == []
    with pytest.raises(InputError, match="no scan"):
        lc.show_scan(store, third)


def test_documents_have_their_declared_shape(store: Store) -> None:
    # the commands print these documents: their keys, in order, are the TypedDicts' (scans, hosts)
    first = scan(store, 0, [rec("127.75.8.1", "vulnerable", fe_server="A"), rec("127.75.8.2", "patched")])
    assert list(lc.list_scans(store)[0]) == list(lc.ScanEntry.__annotations__)
    shown = lc.show_scan(store, first)
    assert list(shown) == list(lc.ScanDetail.__annotations__)
    assert shown["fleet_picture"] is not None
    assert list(shown["fleet_picture"]) == list(PictureDoc.__annotations__)
    assert shown["ports"] == [{"port": 443, "status": "exchange", "services": 2}]
    merged = lc.merge(store, "127.75.8.1", "127.75.8.2")
    assert list(merged) == list(lc.Merged.__annotations__)
    assert list(lc.list_changes(store)[0]) == list(lc.ChangeEntry.__annotations__)
    assert list(lc.undo(store, merged["change"])) == list(lc.Undone.__annotations__)
    scan(store, 1, [rec("127.75.8.3", "vulnerable", name="mx.example")])
    scan(store, 2, [rec("127.75.8.4", "patched", name="mx.example")])
    assert list(lc.split(store, "mx.example", ["127.75.8.3"])) == list(lc.SplitOff.__annotations__)
    retired = lc.retire(store, "127.75.8.2")
    assert list(retired) == list(lc.Retired.__annotations__)
    assert list(lc.delete_scan(store, first)) == list(lc.ScanDeleted.__annotations__)


def test_scans_cli(store_url: str, store: Store) -> None:
    sid = scan(store, 0, [rec("127.75.6.1", "vulnerable")])
    runner = CliRunner()
    out = runner.invoke(cli, ["scans", "list", "--db", store_url, "--format", "json"])
    assert out.exit_code == 0 and json.loads(out.stdout)[0]["scope"] == ["127.75.6.1"]
    out = runner.invoke(cli, ["scans", "show", str(sid), "--db", store_url])
    assert out.exit_code == 0 and "scope: 127.75.6.1" in out.stdout
    out = runner.invoke(cli, ["scans", "delete", str(sid), "--db", store_url])
    assert out.exit_code == 2 and "--yes" in out.output  # no terminal: confirmation needed
    out = runner.invoke(cli, ["scans", "delete", str(sid), "--db", store_url, "--yes"])
    assert out.exit_code == 0, out.output
    assert lc.list_scans(store) == []
    out = runner.invoke(cli, ["scans", "show", "99", "--db", store_url])
    assert out.exit_code == 2 and "no scan 99" in out.output


def test_an_empty_scan_does_not_hide_the_fleet(store: Store) -> None:
    scan(store, 0, [rec("127.75.8.1", "vulnerable"), rec("127.75.8.2", "patched")])
    empty = store.start_scan({"targets": []}, started_at=T0 + timedelta(days=1))
    store.finish_scan(empty)
    series = q.fleet_series(store)
    assert [s.hosts for s in series] == [2, 2]
    assert series[-1].waves["proxylogon"].vulnerable == 1 and series[-1].scan_statuses == {}
    assert [h.address for h in q.hosts_at_risk(store)] == ["127.75.8.1"]


def test_scope_of_a_scan_names_its_targets_file(store_url: str, tmp_path: Path) -> None:
    """A scan given a targets file records the file in its scope (it used to show "(none)")."""
    targets = tmp_path / "fleet.txt"
    targets.write_text("127.75.9.1\n127.75.9.2\n")
    run = subprocess.run(
        [sys.executable, "-m", "exwatch", "-q", "scan", "127.75.9.3", "--targets-file", str(targets)]
        + ["--ports", "443", "--db", store_url, "--format", "json"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 3, run.stderr  # nothing answered: nothing found, not everything checked
    out = CliRunner().invoke(cli, ["scans", "list", "--db", store_url, "--format", "json"])
    assert json.loads(out.stdout)[0]["scope"] == ["127.75.9.3", f"@{targets.resolve()}"]
    out = CliRunner().invoke(cli, ["scans", "show", "1", "--db", store_url])
    assert f"scope: 127.75.9.3, @{targets.resolve()}" in out.stdout


def test_a_host_exposed_again_is_not_shown_closed(store_url: str, store: Store) -> None:
    """Vulnerable, mitigated, then vulnerable again (the mitigation rolled back): the first window
    stays the metrics' window, and `hosts show` and the host page say the host is exposed again."""
    for day, state in enumerate(("vulnerable", "mitigated", "vulnerable", "patched", "vulnerable")):
        scan(store, day, [rec("127.75.10.1", state)])
    doc = q.host_history(store, "127.75.10.1")
    (first,) = doc.exposure
    assert (first.first_vulnerable, first.first_protected) == (T0, T0 + timedelta(days=1))
    assert [(e.wave, e.first_vulnerable, e.first_protected) for e in doc.exposed_again] == [
        ("proxylogon", T0 + timedelta(days=2), T0 + timedelta(days=3)),
        ("proxylogon", T0 + timedelta(days=4), None),
    ]
    out = CliRunner().invoke(cli, ["hosts", "show", "127.75.10.1", "--db", store_url])
    assert "exposed again proxylogon: 2021-03-13T00:00:00+00:00 -> still exposed" in out.stdout
    assert "exposed again proxylogon: 2021-03-11T00:00:00+00:00 -> 2021-03-12T00:00:00+00:00" in out.stdout

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
    from webfill import Client

    from exwatch.web import create_app

    app = create_app(store_url)
    try:
        page = Client(app).get(f"/hosts/{doc.host_id}").text
    finally:
        app.state.store.close()
    assert page.count("(exposed again)") == 2 and "still exposed" in page


def test_end_of_input_at_the_delete_prompt_is_a_no(store_url: str, store: Store) -> None:
    """`scans delete` in a terminal, answered with Ctrl-D (end of input): "nothing deleted" and exit 0
    (it was click's "Aborted!" and 1, which the exit-code contract reads as "something found")."""
    import os
    import select

    sid = scan(store, 0, [rec("127.75.11.1", "vulnerable")])
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exwatch", "scans", "delete", str(sid), "--db", store_url],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    try:
        while b"[y/N]" not in seen:  # the prompt, then Ctrl-D
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, seen
            seen += os.read(master, 4096)
        os.write(master, b"\x04")
        assert proc.wait(timeout=30) == 0
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"nothing deleted" in seen and b"Aborted" not in seen
    assert [s["scan"] for s in lc.list_scans(store)] == [sid]
