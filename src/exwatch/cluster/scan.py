"""The sharded scan: the client streams shards to Dask workers and is the one writer of one snapshot."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from exwatch.cluster.connect import require_distributed, worker_threads
from exwatch.cluster.shards import Scope, Shard, iter_shards, shard_budget, shard_options
from exwatch.cluster.tasks import scan_shard
from exwatch.errors import InputError
from exwatch.record import HostRecord, Observation
from exwatch.scan.observation import unreachable_record
from exwatch.scan.options import ScanOptions
from exwatch.scan.run import ScanHooks, ScanRun
from exwatch.scan.summary import ScanSummary, SummaryDict
from exwatch.scan.targets import Target, TargetSet

ShardTask = Callable[[list[Target], ScanOptions, dict[str, str]], list[Observation]]


class ClusterDict(TypedDict):
    """What the cluster did, in the JSON summary of ``cluster scan`` (its ``cluster`` object)."""

    shards: int
    shard_size: int
    in_flight: int
    worker_threads: int
    rate_per_shard: float
    failed_shards: int
    failed_targets: dict[str, int]
    excluded_before_sharding: int


class ClusterSummaryDict(SummaryDict):
    """The scan's JSON summary with the ``cluster`` object."""

    cluster: ClusterDict


@dataclass
class ClusterScanResult:
    """The scan's summary (the scanner's own) plus what the cluster did."""

    summary: ScanSummary
    shards: int = 0
    shard_size: int = 0
    in_flight: int = 0
    workers: int = 0
    shard_rate: float = 0.0
    failed_shards: int = 0
    failed_targets: dict[str, int] = field(default_factory=dict)  # error class -> targets
    excluded: int = 0

    def to_dict(self) -> ClusterSummaryDict:
        """The summary's JSON form with a ``cluster`` object."""
        cluster: ClusterDict = {
            "shards": self.shards,
            "shard_size": self.shard_size,
            "in_flight": self.in_flight,
            "worker_threads": self.workers,
            "rate_per_shard": round(self.shard_rate, 3),
            "failed_shards": self.failed_shards,
            "failed_targets": dict(self.failed_targets),
            "excluded_before_sharding": self.excluded,
        }
        return {**self.summary.to_dict(), "cluster": cluster}


@dataclass
class _InFlight:
    shard: Shard
    deadline: float


def cluster_scan(
    client: Any,
    targets: Iterable[str] | TargetSet,
    options: ScanOptions | None = None,
    store_url: str | None = None,
    *,
    shard_size: int = 500,
    in_flight: int | None = None,
    retries: int = 2,
    shard_timeout: float | None = None,
    tags: Mapping[str, str] | None = None,
    on_record: Callable[[Observation], None] | None = None,
    on_start: Callable[[int, int, list[str]], None] | None = None,
    task: ShardTask = scan_shard,
    on_host: Callable[[HostRecord], None] | None = None,
) -> ClusterScanResult:
    """Scan ``targets`` across the workers of ``client``; one observation per target in ONE stored scan.

    At most ``in_flight`` shards (default: the cluster's worker threads, at least 2) are submitted at
    once, each with ``rate / in_flight``. A shard whose task fails is retried ``retries`` times by Dask
    (a dead worker's tasks are rescheduled); if it still fails its targets are stored as unreachable
    with error class ``worker``, and a shard past its wall-clock budget with ``budget``: never lost.
    ``shard_timeout`` overrides that budget (seconds from submission). ``task`` is the worker
    function (tests pass one that fails on purpose). ``on_record`` gets each service record,
    ``on_host`` each host record (its services folded, as ``exwatch scan`` prints them); the summary
    counts hosts. A target list with nothing to scan is an InputError before anything is stored.
    """
    distributed = require_distributed()
    options = options or ScanOptions()
    options.validate()
    if shard_size < 1:
        raise InputError("--shard-size must be at least 1")
    hooks = ScanHooks(on_record=on_record, on_host=on_host, on_start=on_start)
    run = ScanRun(targets, options, store_url, tags=tags, hooks=hooks)  # targets checked: InputError
    scope = Scope(options.exclude)
    threads = worker_threads(client)
    window = in_flight or max(2, threads)
    if window < 1:
        raise InputError("--in-flight must be at least 1")
    run.extra_params["cluster"] = {"shard_size": shard_size, "in_flight": window, "worker_threads": threads}
    pump = _ShardPump(client, distributed, run, scope, window, task, retries, shard_timeout)
    result = ClusterScanResult(
        run.summary,
        shard_size=shard_size,
        in_flight=window,
        workers=threads,
        shard_rate=shard_options(run.options, window, scope.worker_items()).rate,
    )
    pump.result = result
    try:
        run.start()
        result.summary = run.summary
        run.announce()
        t0 = time.monotonic()
        try:
            pump.pump(shard_size)
        except BaseException:
            pump.cancel()
            run.abort(time.monotonic() - t0)  # counted (the exit code), not printed
            raise
        run.finish(time.monotonic() - t0)
    finally:
        run.close()
    return result


class _ShardPump:
    """Keeps ``window`` shards in flight and hands every record they bring back to the run."""

    def __init__(
        self,
        client: Any,
        distributed: Any,
        run: ScanRun,
        scope: Scope,
        window: int,
        task: ShardTask,
        retries: int,
        shard_timeout: float | None,
    ) -> None:
        self.client = client
        self.distributed = distributed
        self.run = run
        self.scope = scope
        self.window = window
        self.task = task
        self.retries = retries
        self.shard_timeout = shard_timeout
        self.token = uuid.uuid4().hex[:12]
        self.pending: dict[Any, _InFlight] = {}
        self.result: ClusterScanResult | None = None

    def take(self, records: list[Observation]) -> None:
        for rec in records:
            self.run.summary.requests += int(rec.get("requests") or 0)
            self.run.add(rec)

    def give_up(self, targets: list[Target], error: str, *, address: bool = False) -> None:
        """Targets that no worker scanned, stored as unreachable with ``error`` as the class."""
        assert self.result is not None
        now = datetime.now(UTC)
        recs = []
        for t in targets:
            rec = unreachable_record(
                t, t.host if address and t.name is None else None, error, now, extra_tags=self.run.tags
            )
            rec["elapsed"] = 0.0
            recs.append(rec)
        if error != "excluded":
            self.result.failed_targets[error] = self.result.failed_targets.get(error, 0) + len(recs)
        self.take(recs)

    def pump(self, shard_size: int) -> None:
        shards = iter_shards(self.run.targets(), shard_size, self.scope)
        exhausted = False
        while True:
            while not exhausted and len(self.pending) < self.window:
                shard = next(shards, None)
                if shard is None:
                    exhausted = True
                    self.run.end_of_stream()
                    break
                self.submit(shard)
            if not self.pending:
                break
            self.collect()
        self.run.emit(self.run.folder.finish())

    def submit(self, shard: Shard) -> None:
        assert self.result is not None
        self.result.shards += 1
        for t in (*shard.excluded, *shard.targets):
            self.run.expect(t)
        if shard.excluded:
            self.result.excluded += len(shard.excluded)
            self.give_up(shard.excluded, "excluded", address=True)
        if not shard.targets:
            return
        opts = shard_options(self.run.options, self.window, self.scope.worker_items())
        future = self.client.submit(
            self.task,
            shard.targets,
            opts,
            self.run.tags,
            key=f"exwatch-shard-{self.token}-{shard.index}",
            retries=self.retries,
            pure=False,
        )
        budget = self.shard_timeout or shard_budget(opts, len(shard.targets)) * (self.retries + 2)
        self.pending[future] = _InFlight(shard, time.monotonic() + budget)

    def collect(self) -> None:
        assert self.result is not None
        try:
            done, _ = self.distributed.wait(list(self.pending), timeout=2.0, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        for future in done:
            item = self.pending.pop(future)
            if future.status == "finished":
                self.take(future.result())
            else:
                self.result.failed_shards += 1
                self.give_up(item.shard.targets, "worker")
            future.release()
        now = time.monotonic()
        for future, item in list(self.pending.items()):
            if now > item.deadline:
                self.pending.pop(future)
                future.cancel()
                self.result.failed_shards += 1
                self.give_up(item.shard.targets, "budget")

    def cancel(self) -> None:
        for future in self.pending:
            future.cancel()
