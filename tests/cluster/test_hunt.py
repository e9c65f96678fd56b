"""A cluster hunt of three triage packages gives the findings of ``hunt_paths`` on each, stored per host."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from exwatch.cluster import cluster_hunt, find_packages
from exwatch.cluster.hunt import store_hunt
from exwatch.errors import InputError
from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.lab.triage import write_triage

pytestmark = [pytest.mark.integration]

PACKAGES = (
    ("EXCH01", 3, ("proxylogon",)),
    ("EXCH02", 4, ("proxyshell", "lookalikes")),
    ("EXCH03", 5, ("clean",)),
)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("packages")
    truths = {}
    for host, seed, scenarios in PACKAGES:
        truths[host] = write_triage(
            root / host, seed=seed, size=300_000, scenarios=scenarios, host=host, days=1
        )
    return root, truths


def test_cluster_hunt_equals_hunt_paths_per_package(
    dask_client: Any, packages: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    root, truths = packages
    result = cluster_hunt(dask_client, [root])  # a folder of packages
    got = result.to_dict()
    assert [h["host"] for h in got["hosts"]] == ["EXCH01", "EXCH02", "EXCH03"]
    for host, _seed, _scenarios in PACKAGES:
        alone = hunt_paths([root / host], HuntOptions(jobs=1)).to_dict()
        mine = [f for f in got["findings"] if f["host"] == host]
        assert mine == alone["findings"], host
        assert [h for h in got["hosts"] if h["host"] == host] == alone["hosts"]
        assert got["coverage"][host] == alone["coverage"][host]
    # The attacks in the truth are found; the clean package stays clean.
    verdicts = {h["host"]: h["verdict"] for h in got["hosts"]}
    assert verdicts["EXCH03"] == "clean" and verdicts["EXCH01"] == "compromised"
    rules = {f["rule"] for f in got["findings"] if f["host"] == "EXCH01"}
    wanted = {i["detection"] for i in truths["EXCH01"]["items"] if i["kind"] == "attack"}
    assert wanted and wanted <= rules
    # Stored per host with add_hunt.
    db = tmp_path / "store.db"
    assert len(store_hunt(result, f"sqlite:///{db}")) == 3
    with sqlite3.connect(db) as conn:
        hunts = dict(conn.execute("select host, verdict from hunts").fetchall())
        stored = conn.execute("select host, count(*) from findings group by host").fetchall()
    assert hunts == verdicts
    assert dict(stored) == {
        h: sum(1 for f in got["findings"] if f["host"] == h) for h in verdicts if h in dict(stored)
    }
    assert sum(n for _, n in stored) == len(got["findings"])


def test_several_paths_and_packages_found(packages: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    root, _ = packages
    assert find_packages([root]) == [root / "EXCH01", root / "EXCH02", root / "EXCH03"]
    assert find_packages([root / "EXCH02", root / "EXCH01"]) == [root / "EXCH02", root / "EXCH01"]
    with pytest.raises(InputError, match="no such"):
        find_packages([root / "nope"])
    with pytest.raises(InputError, match="same host"):
        find_packages([root / "EXCH01", root / "EXCH01"])


def test_batching_executor_keeps_the_order_of_the_calls(dask_client: Any) -> None:
    from exwatch.cluster.executor import BatchingExecutor

    ex = BatchingExecutor(dask_client, threads=2)
    assert list(ex.map(pow, range(50), [2] * 50)) == [i**2 for i in range(50)]
    assert list(ex.map(pow, [3], [3])) == [27]
    assert list(ex.map(pow, [], [])) == []
    with pytest.raises(ZeroDivisionError):
        list(BatchingExecutor(dask_client, threads=2, retries=0).map(divmod, [1, 2], [1, 0]))
