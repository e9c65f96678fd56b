"""Process pools that a Ctrl-C stops cleanly (the hunt's workers, the lab's package writer).

A terminal's Ctrl-C sends SIGINT to every process of its group: a worker that dies of it mid-task
breaks the pool and prints its own traceback. The workers leave SIGINT to the parent
(``ignore_sigint`` as the pool's initializer), and the parent stops the pool with ``stop_pool``.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["ignore_sigint", "stop_pool"]


def ignore_sigint() -> None:
    """A pool's initializer: the worker leaves Ctrl-C to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_pool(pool: ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Stop a pool after Ctrl-C without hanging: pending work cancelled, each worker let finish the
    task it is on for up to ``grace`` seconds, then terminated.

    ``shutdown()`` alone left the process hanging at exit when only the parent had the signal (``kill
    -INT PID``, ``timeout``): the workers never got their stop sentinel.  Terminating the workers at once
    hung it too, 1 run in about 20: a worker killed while writing its result leaves the pool's manager
    thread blocked on half a message.  Python 3.11 keeps the workers in ``_processes`` (3.14 adds
    ``terminate_workers()``)."""
    workers = getattr(pool, "_processes", None)
    processes = list(workers.values()) if isinstance(workers, dict) else []
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
