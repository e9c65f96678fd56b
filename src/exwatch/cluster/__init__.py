"""Scale-out on Dask: scan shards and per-package hunts as plain picklable tasks (the ``cluster`` extra)."""

from __future__ import annotations

from exwatch.cluster.connect import open_client, require_distributed
from exwatch.cluster.hunt import cluster_hunt, find_packages
from exwatch.cluster.scan import ClusterScanResult, cluster_scan

__all__ = [
    "ClusterScanResult",
    "cluster_hunt",
    "cluster_scan",
    "find_packages",
    "open_client",
    "require_distributed",
]
