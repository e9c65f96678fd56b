"""A collection package's build reaches the store with its hunt, from ``HostResult.collection`` (the
package's manifest), for ``exwatch hunt`` and for a cluster hunt's merged result alike."""

from __future__ import annotations

from pathlib import Path

from exwatch.cluster.hunt import merge_results
from exwatch.collect.reference import collect_tree
from exwatch.fleet import open_store
from exwatch.fleet.queries import host_history
from exwatch.hunt import HuntOptions, HuntStats, hunt_paths, record_hunt
from exwatch.lab.triage import write_triage

BUILD = "15.2.792.3"  # Exchange 2019 CU8 before the March 2021 update


def test_collection_build_stored_with_the_hunt_and_gives_the_fix(tmp_path: Path) -> None:
    tree = tmp_path / "C"
    write_triage(tree, seed=5, size=200_000, days=1, scenarios=("proxylogon",), host="EXCH05")
    package = tmp_path / "EXCH05.zip"
    collect_tree(tree, package, host="EXCH05", build=BUILD)
    one = hunt_paths([package], HuntOptions(jobs=1))
    (host,) = one.hosts
    assert host.collection is not None and host.collection.build == BUILD
    assert host.coverage.collection is not None and host.coverage.collection.build == BUILD
    assert host.next_steps is not None and host.next_steps.fix is not None
    assert host.next_steps.fix.source == "collection" and host.next_steps.fix.build == BUILD
    # A cluster hunt's merged result keeps the manifest and adds up the counters.
    merged = merge_results([one])
    assert merged.hosts[0].collection is host.collection
    assert merged.stats == HuntStats.merge([one.stats]) and merged.stats.files == one.stats.files > 0
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as store:
        (stored,) = record_hunt(store, merged)
        assert stored.linked  # the collector's observation made the host the hunt links to
        history = host_history(store, f"#{stored.host_id}")
    assert [s.build for s in history.snapshots] == [BUILD]
    fix = merged.hosts[0].next_steps.fix if merged.hosts[0].next_steps else None
    assert fix is not None and fix.source == "store" and fix.host_id == stored.host_id
    assert fix.to_dict()["build"] == BUILD and "KB5000871" in fix.text
