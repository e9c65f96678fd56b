"""The sharded scan: the client streams shards to Dask workers and is the one writer of one snapshot."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exwatch.cluster.connect import require_distributed, worker_threads
from exwatch.cluster.shards import Scope, Shard, iter_shards, shard_budget, shard_options
from exwatch.cluster.tasks import scan_shard
from exwatch.errors import InputError
from exwatch.scan.engine import (
    ScanOptions,
    ScanSummary,
    build_target_set,
    finish_host,
    no_target_message,
    target_stream,
)
from exwatch.scan.fold import HostFolder
from exwatch.scan.observation import unreachable_record
from exwatch.scan.sink import open_sink
from exwatch.scan.targets import Target, TargetSet

ShardTask = Callable[[list[Target], ScanOptions, dict[str, str]], list[dict[str, Any]]]


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

    def to_dict(self) -> dict[str, Any]:
        """The summary's JSON form with a ``cluster`` object."""
        out = self.summary.to_dict()
        out["cluster"] = {
            "shards": self.shards,
            "shard_size": self.shard_size,
            "in_flight": self.in_flight,
            "worker_threads": self.workers,
            "rate_per_shard": round(self.shard_rate, 3),
            "failed_shards": self.failed_shards,
            "failed_targets": dict(self.failed_targets),
            "excluded_before_sharding": self.excluded,
        }
        return out


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
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int, list[str]], None] | None = None,
    task: ShardTask = scan_shard,
    on_host: Callable[[dict[str, Any]], None] | None = None,
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
    tags = dict(tags or {})
    tset = build_target_set(targets, options)
    total, problems = tset.check(options.yes_large)
    messages = [p.message for p in problems]
    if total == 0:
        raise InputError(no_target_message(tset, messages))
    scope = Scope(options.exclude)
    threads = worker_threads(client)
    window = in_flight or max(2, threads)
    if window < 1:
        raise InputError("--in-flight must be at least 1")
    base = shard_options(options, window, scope.worker_items())
    result = ClusterScanResult(
        ScanSummary(0, total=total),
        shard_size=shard_size,
        in_flight=window,
        workers=threads,
        shard_rate=base.rate,
    )
    summary = result.summary
    summary.problems = messages
    summary.waves_selected = tuple(options.waves)
    folder = HostFolder()

    def emit(hosts: list[dict[str, Any]], *, show: bool = True) -> None:
        for host in hosts:
            summary.add(finish_host(host))
            if show and on_host is not None:
                on_host(host)

    sink = open_sink(store_url)
    try:
        params = {
            "targets": list(tset.items),
            "options": options.to_params(),
            "tags": tags,
            "scan_time": None,
            "cluster": {"shard_size": shard_size, "in_flight": window, "worker_threads": threads},
        }
        scan_id = sink.start(params, None)
        summary.scan_id = scan_id
        if on_start is not None:
            on_start(scan_id, total, messages)
        t0 = time.monotonic()

        def take(records: list[dict[str, Any]]) -> None:
            if records:
                sink.add(scan_id, records)
            for rec in records:
                summary.add_service(rec)
                summary.requests += int(rec.get("requests") or 0)
                if on_record is not None:
                    on_record(rec)
                emit(folder.add(rec))

        def give_up(targets_: list[Target], error: str) -> None:
            now = datetime.now(UTC)
            recs = [unreachable_record(t, None, error, now, extra_tags=tags) for t in targets_]
            for rec in recs:
                rec["elapsed"] = 0.0
            result.failed_targets[error] = result.failed_targets.get(error, 0) + len(recs)
            take(recs)

        token = uuid.uuid4().hex[:12]
        shards = iter_shards(target_stream(tset, options), shard_size, scope)
        pending: dict[Any, _InFlight] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    shard = next(shards, None)
                    if shard is None:
                        exhausted = True
                        emit(folder.end_of_stream())
                        break
                    result.shards += 1
                    for t in (*shard.excluded, *shard.targets):
                        emit(folder.expect(t.key, t.host_id))
                    if shard.excluded:
                        result.excluded += len(shard.excluded)
                        now = datetime.now(UTC)
                        excl = [
                            unreachable_record(
                                t, t.host if t.name is None else None, "excluded", now, extra_tags=tags
                            )
                            for t in shard.excluded
                        ]
                        for rec in excl:
                            rec["elapsed"] = 0.0
                        take(excl)
                    if not shard.targets:
                        continue
                    opts = shard_options(options, window, scope.worker_items())
                    future = client.submit(
                        task,
                        shard.targets,
                        opts,
                        tags,
                        key=f"exwatch-shard-{token}-{shard.index}",
                        retries=retries,
                        pure=False,
                    )
                    budget = shard_timeout or shard_budget(opts, len(shard.targets)) * (retries + 2)
                    pending[future] = _InFlight(shard, time.monotonic() + budget)
                if not pending:
                    break
                try:
                    done, _ = distributed.wait(list(pending), timeout=2.0, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                for future in done:
                    item = pending.pop(future)
                    if future.status == "finished":
                        take(future.result())
                    else:
                        result.failed_shards += 1
                        give_up(item.shard.targets, "worker")
                    future.release()
                now_m = time.monotonic()
                for future, item in list(pending.items()):
                    if now_m > item.deadline:
                        pending.pop(future)
                        future.cancel()
                        result.failed_shards += 1
                        give_up(item.shard.targets, "budget")
            emit(folder.finish())
        except BaseException:
            summary.interrupted = True
            for future in pending:
                future.cancel()
            emit(folder.finish(), show=False)  # counted (the exit code), not printed
            raise
        finally:
            summary.seconds = time.monotonic() - t0
        sink.finish(scan_id, None)
    finally:
        sink.close()
    return result
