"""Reaching a Dask cluster: an existing scheduler by address, or a LocalCluster of worker processes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from exwatch.errors import ConfigError, InputError

INSTALL_HINT = "pip install 'exwatch[cluster]'"


def require_distributed() -> ModuleType:
    """The ``distributed`` package, or a ConfigError that names the extra to install."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"exwatch cluster needs Dask distributed: {INSTALL_HINT}") from exc
    return distributed


def worker_threads(client: Any) -> int:
    """Threads over all workers the scheduler knows now (at least 1)."""
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))


def _takes_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def open_client(
    scheduler: str | None = None,
    local_workers: int | None = None,
    *,
    threads_per_worker: int = 1,
    timeout: float = 30.0,
) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``scheduler`` (``tcp://host:port``), or to a new
    LocalCluster of ``local_workers`` worker processes on loopback with the dashboard off (default 2).
    """
    distributed = require_distributed()
    if scheduler and local_workers:
        raise InputError("give --scheduler or --local-workers, not both")
    if local_workers is not None and local_workers < 1:
        raise InputError("--local-workers must be at least 1")
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return
    cluster = distributed.LocalCluster(
        n_workers=local_workers or 2,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
