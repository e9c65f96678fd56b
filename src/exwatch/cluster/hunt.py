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
from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.hunt.model import FileError, HostResult, HuntResult
from exwatch.hunt.sources.files import is_archive
from exwatch.hunt.timeline import order

# Top-level folder names of a collected Windows/Exchange volume: a folder holding one of these is a
# triage package itself, not a folder of packages.
PACKAGE_MARKERS = frozenset(
    {
        "program files",
        "program files (x86)",
        "programdata",
        "windows",
        "inetpub",
        "eventlogs",
        "exchange server",
        "v15",
        "logging",
        "frontend",
        "clientaccess",
        "httpproxy",
        "logs",
    }
)


def _is_package_folder(path: Path) -> bool:
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        raise InputError(f"{path}: cannot list the folder: {exc.strerror or exc}") from exc
    if not entries:
        return True
    for entry in entries:
        if entry.is_dir():
            if entry.name.lower() in PACKAGE_MARKERS:
                return True
        elif not is_archive(entry.name):
            return True
    return False


def find_packages(paths: Sequence[Path]) -> list[Path]:
    """The triage packages (one host each) named by ``paths``.

    A PATH is a package if it is an archive, or a folder that holds files or a volume folder
    (``Program Files``, ``inetpub``, ``Windows``, ...); otherwise it is a folder of packages, and each
    of its sub-folders and archives is one package.
    """
    out: list[Path] = []
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir() and not _is_package_folder(p):
            out.extend(sorted(e for e in p.iterdir() if e.is_dir() or is_archive(e.name)))
        else:
            out.append(p)
    if not out:
        raise InputError("no triage package to hunt")
    names = [_host(p) for p in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"two packages would be the same host: {', '.join(dupes[:5])} (rename one)")
    return out


def _host(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".zip", ".7z", ".tar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _failed(path: Path, exc: BaseException) -> HuntResult:
    """A package whose tasks failed for good: an incomplete host with the error, never dropped."""
    error = FileError(
        str(path), f"{path.name}: hunt failed on the cluster: {type(exc).__name__}: {exc}", "worker"
    )
    host = HostResult(
        host=_host(path),
        verdict="incomplete",
        coverage={},
        warnings=[],
        counts={"confirmed": 0, "likely": 0, "review": 0},
        errors=[error],
    )
    return HuntResult(hosts=[host], findings=[], errors=[error], stats={"files": 0, "bytes": 0})


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
    stats: dict[str, Any] = {"files": 0, "bytes": 0, "candidates": 0, "parsed": 0, "notes": []}
    for r in parts:
        for key in ("files", "bytes", "candidates", "parsed"):
            stats[key] += int(r.stats.get(key, 0))
        for note in r.stats.get("notes", []):
            if note not in stats["notes"]:
                stats["notes"].append(note)
    return HuntResult(hosts=hosts, findings=findings, errors=errors, stats=stats)


def store_hunt(result: HuntResult, store_url: str | None, started_at: datetime | None = None) -> list[int]:
    """Record each host's verdict, coverage, findings and errors with the store's ``add_hunt``."""
    from exwatch.fleet import open_store

    ids: list[int] = []
    with open_store(store_url) as store:
        for h in result.hosts:
            ids.append(
                store.add_hunt(
                    h.host,
                    verdict=h.verdict,
                    coverage=h.coverage,
                    findings=[f.to_dict() for f in result.findings if f.host == h.host],
                    started_at=started_at,
                    errors=[e.to_dict() for e in h.errors],
                )
            )
    return ids
