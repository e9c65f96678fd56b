"""Hunting many triage packages on Dask: each package's per-file tasks run as Dask tasks."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from exwatch.cluster.connect import require_distributed, worker_threads
from exwatch.cluster.executor import BatchingExecutor
from exwatch.errors import InputError
from exwatch.hunt import (
    Coverage,
    FileError,
    HostResult,
    HuntOptions,
    HuntResult,
    HuntStats,
    find_packages,
    hunt_paths,
    order,
    package_host,
    record_hunt,
)

__all__ = ["cluster_hunt", "find_packages", "merge_results", "store_hunt"]


def _failed(path: Path, exc: BaseException) -> HuntResult:
    """A package whose tasks failed for good: an incomplete host with the error, never dropped."""
    error = FileError(
        str(path), f"{path.name}: hunt failed on the cluster: {type(exc).__name__}: {exc}", "worker"
    )
    host = HostResult(
        host=package_host(path),
        verdict="incomplete",
        coverage=Coverage(),
        warnings=[],
        counts={"confirmed": 0, "likely": 0, "review": 0},
        errors=[error],
    )
    return HuntResult(hosts=[host], findings=[], errors=[error])


def cluster_hunt(
    client: Any,
    paths: Sequence[Path],
    options: HuntOptions | None = None,
    *,
    packages_in_flight: int | None = None,
    retries: int = 2,
    on_package: Callable[[Path, HuntResult], None] | None = None,
) -> HuntResult:
    """Hunt every package under ``paths`` with the hunter's own ``hunt_paths``, its per-file tasks on Dask.

    Several packages are walked at once (``packages_in_flight``, default twice the worker threads) so
    that the workers always have files to hunt. The files must be readable by the workers at the same
    paths (local workers, or a shared file system); archives are unpacked on the client.
    """
    require_distributed()
    options = options or HuntOptions()
    if options.host:
        raise InputError("--host names one host; a cluster hunt names each host after its package")
    packages = find_packages(paths)
    threads = worker_threads(client)
    executor = BatchingExecutor(client, threads, retries=retries)
    window = packages_in_flight or max(2, 2 * threads)
    per_package = replace(options, jobs=1)

    def one(path: Path) -> HuntResult:
        try:
            return hunt_paths([path], per_package, executor=executor)
        except InputError:
            raise
        except Exception as exc:  # a worker lost for good, a task that kept failing
            return _failed(path, exc)

    results: dict[Path, HuntResult] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=window) as pool:
        futures = {pool.submit(one, p): p for p in packages}
        for fut in concurrent.futures.as_completed(futures):
            path = futures[fut]
            res = fut.result()
            results[path] = res
            if on_package is not None:
                on_package(path, res)
    return merge_results([results[p] for p in packages])


def merge_results(parts: Sequence[HuntResult]) -> HuntResult:
    """One result over many packages: hosts in package order, findings in the hunter's order."""
    hosts = [h for r in parts for h in r.hosts]
    findings = order([f for r in parts for f in r.findings])
    errors = [e for r in parts for e in r.errors]
    return HuntResult(
        hosts=hosts, findings=findings, errors=errors, stats=HuntStats.merge(r.stats for r in parts)
    )


def store_hunt(result: HuntResult, store_url: str | None, started_at: datetime | None = None) -> list[int]:
    """Record each host's verdict, coverage, findings and errors (``exwatch.hunt.record_hunt``); the hunt ids."""
    from exwatch.fleet import open_store

    with open_store(store_url) as store:
        return [s.hunt_id for s in record_hunt(store, result, started_at=started_at)]
