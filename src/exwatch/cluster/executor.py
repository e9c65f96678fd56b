"""A ``concurrent.futures.Executor`` over a Dask client that batches many small calls into few tasks.

``Client.get_executor()`` makes one Dask task per call and ignores ``chunksize``. A triage package
holds hundreds of small files (web folders, short logs), and at a few milliseconds of scheduling per
task that overhead outweighs the hunting itself (benchmarks/cluster/RESULTS.md). ``map`` here cuts the
calls into about four batches per worker thread, dealt round-robin so that the hunter's biggest-first
order spreads the big files over the batches, and returns the results in the order of the calls.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from exwatch.cluster.tasks import run_batch

BATCHES_PER_THREAD = 4


class BatchingExecutor(concurrent.futures.Executor):
    """Dask-backed executor: ``submit`` is one task; ``map`` runs batches of calls as tasks."""

    def __init__(self, client: Any, threads: int, *, retries: int = 2) -> None:
        self._client = client
        self._threads = max(1, threads)
        self._retries = retries
        self._inner = client.get_executor(pure=False, retries=retries)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return self._inner.submit(fn, *args, **kwargs)  # type: ignore[no-any-return]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        calls = list(zip(*iterables, strict=False))
        n = len(calls)
        if n == 0:
            return iter(())
        k = min(n, self._threads * BATCHES_PER_THREAD)
        batches = [calls[j::k] for j in range(k)]
        futures = [
            self._client.submit(run_batch, fn, batch, pure=False, retries=self._retries) for batch in batches
        ]

        def results() -> Iterator[Any]:
            done: dict[int, list[Any]] = {}
            try:
                for i in range(n):
                    j = i % k
                    if j not in done:
                        done[j] = futures[j].result(timeout=timeout)
                    yield done[j][i // k]
            finally:
                self._client.cancel([f for f in futures if not f.done()])

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait)
