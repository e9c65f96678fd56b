"""What a Dask worker runs: plain top-level functions over plain, picklable data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exwatch.cluster.shards import ShardTargets
from exwatch.record import Observation
from exwatch.scan.engine import ScanOptions, run_scan
from exwatch.scan.targets import Target


def scan_shard(targets: list[Target], options: ScanOptions, tags: dict[str, str]) -> list[Observation]:
    """Scan one shard with the scanner's asyncio engine on this worker; return its observation records.

    Nothing is stored here (the client is the store's only writer). The engine applies the scope
    check again at connection time, with the exclusions the client inlined into ``options``.
    """
    records: list[Observation] = []
    run_scan(ShardTargets(targets), options, "null:", tags=tags, on_record=records.append)
    return records


def run_batch(fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``fn`` over a batch of argument tuples on one worker (one Dask task for many small files)."""
    return [fn(*args) for args in calls]
