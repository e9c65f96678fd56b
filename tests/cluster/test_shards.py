"""Sharding (pure): each target once, lazily, in scope; shards round-trip through the scanner's TargetSet."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from exwatch.cluster.shards import Scope, ShardTargets, iter_shards, shard_budget, shard_options, target_spec
from exwatch.scan.engine import ScanOptions
from exwatch.scan.targets import Target, TargetSet, expand, parse_ports


def _targets(*items: str, ports: str = "443,80") -> list[Target]:
    return list(TargetSet(items, (), parse_ports(ports)))


@pytest.mark.parametrize(
    "item",
    [
        "10.1.2.3",
        "10.1.2.0/30",
        "mail.example.org",
        "https://mail.example.org:8443/owa",
        "http://10.9.9.9:8080",
        "2001:db8::7",
        "10.0.0.1 customer=acme region=eu",
    ],
)
def test_shard_targets_expand_to_the_same_targets(item: str) -> None:
    targets = _targets(item)
    assert list(expand(ShardTargets(targets).specs(), ())) == targets
    assert [list(expand([target_spec(t)], ()))[0] for t in targets] == targets


def test_shards_are_streamed_and_deduplicated() -> None:
    consumed = 0

    def stream() -> Iterator[Target]:
        nonlocal consumed
        for t in TargetSet(("10.0.0.0/8",), (), parse_ports("443")):
            consumed += 1
            yield t

    first = list(itertools.islice(iter_shards(stream(), 100), 3))
    assert [len(s.targets) for s in first] == [100, 100, 100]
    assert consumed <= 301  # 16,777,216 targets behind it, never materialised
    dupes = _targets("10.0.0.1", "10.0.0.0/30", "10.0.0.1", ports="443")
    shards = list(iter_shards(dupes, 3))
    keys = [t.key for s in shards for t in s.targets]
    assert len(keys) == len(set(keys)) == 4
    assert [s.index for s in shards] == [0, 1]
    with pytest.raises(ValueError):
        next(iter_shards(dupes, 0))


def test_scope_splits_excluded_targets_and_inlines_files(tmp_path: Path) -> None:
    optout = tmp_path / "optout.txt"
    optout.write_text("# asked\n10.0.0.7\nmail.example.org\n", encoding="utf-8")
    scope = Scope(("10.0.0.2-10.0.0.3", str(optout)))
    assert scope.worker_items() == ("10.0.0.2-10.0.0.3", "10.0.0.7", "mail.example.org")
    targets = _targets("10.0.0.0/29", "mail.example.org", "other.example.org", ports="443")
    shards = list(iter_shards(targets, 4, scope))
    excluded = {t.host for s in shards for t in s.excluded}
    kept = {t.host for s in shards for t in s.targets}
    assert excluded == {"10.0.0.2", "10.0.0.3", "10.0.0.7", "mail.example.org"}
    assert kept == {"10.0.0.0", "10.0.0.1", "10.0.0.4", "10.0.0.5", "10.0.0.6", "other.example.org"}
    assert all(len(s.targets) + len(s.excluded) <= 4 for s in shards)


def test_rate_is_split_over_the_shards_in_flight() -> None:
    options = ScanOptions(rate=1000.0, per_host=20.0, exclude=("x.txt",), targets_files=("t.txt",))
    shard = shard_options(options, 8, ("10.0.0.1",))
    assert shard.rate == 125.0 and shard.rate * 8 == options.rate
    assert shard.per_host == 20.0 and shard.exclude == ("10.0.0.1",) and shard.targets_files == ()
    assert shard_options(ScanOptions(), 8, ()).rate == 0.0  # no limit stays no limit
    slow = shard_budget(shard, 1000)
    assert slow > shard_budget(shard_options(ScanOptions(), 8, ()), 1000) > 0
