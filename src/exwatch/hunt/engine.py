"""The hunt: find the evidence files under each PATH, hunt them on a process pool, assemble the result."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from exwatch.collect.hunthook import adjust_files as collection_files
from exwatch.collect.hunthook import coverage as collection_coverage
from exwatch.collect.hunthook import open_for_hunt
from exwatch.collect.hunthook import warnings as collection_warnings
from exwatch.collect.manifest import Manifest
from exwatch.errors import InputError
from exwatch.hunt.model import (
    CollectionCoverage,
    Coverage,
    FileError,
    FileHunt,
    FilesCoverage,
    Finding,
    HostResult,
    HuntOptions,
    HuntResult,
    HuntStats,
    HuntTask,
    RuleSpec,
)
from exwatch.hunt.nextsteps import fix_by_wave, fix_from_build, next_steps
from exwatch.hunt.packages import find_packages, holds_volume_folder, package_host
from exwatch.hunt.sources.files import TEXT_LOG_FAMILIES, EvidenceFile, batches, cleanup, walk
from exwatch.hunt.sources.textlog import default_strategy
from exwatch.hunt.timeline import coverage_warnings, link_chain, merge_coverage, order, verdict
from exwatch.hunt.worker import hunt_file, load_bundle
from exwatch.pools import ignore_sigint, stop_pool


def live_install_paths(options: HuntOptions) -> list[Path]:
    """The Exchange logging folder, web folders and IIS logs of the local server (Windows only)."""
    paths: list[Path] = []
    if options.exchange_path:
        paths.append(options.exchange_path)
    if options.iis_logs:
        paths.append(options.iis_logs)
    if paths:
        return paths
    if sys.platform != "win32":
        raise InputError(
            "hunting a live Exchange install needs Windows (the install is found through the registry); "
            "on this system give a triage folder or archive, or --exchange-path and --iis-logs"
        )
    import winreg  # type: ignore[import-not-found,unused-ignore]

    try:
        key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\ExchangeServer\v15\Setup")  # type: ignore[attr-defined,unused-ignore]
        install, _ = winreg.QueryValueEx(key, "MsiInstallPath")  # type: ignore[attr-defined,unused-ignore]
    except OSError as exc:
        raise InputError(
            "no Exchange 2013 or later install found in the registry (HKLM\\SOFTWARE\\Microsoft\\ExchangeServer\\v15\\Setup)"
        ) from exc
    from pathlib import PureWindowsPath

    drive = PureWindowsPath(install).drive or "C:"
    return [Path(install), Path(f"{drive}\\inetpub")]


def rule_spec(options: HuntOptions, strategy: str | None = None) -> RuleSpec:
    """The rules ``options`` asks for, as the workers get them."""
    strategy = strategy or options.strategy or default_strategy()
    return RuleSpec(
        builtin=options.builtin_rules,
        rule_dirs=tuple(str(p) for p in options.rule_dirs),
        yara_files=tuple(str(p) for p in options.yara_files),
        ioc_files=tuple(str(p) for p in options.ioc_files),
        strategy=strategy if options.prefilter else "none",
    )


def _task(ev: EvidenceFile, options: HuntOptions, spec: RuleSpec) -> HuntTask:
    return HuntTask(
        path=ev.path,
        rel=ev.rel,
        family=ev.family,
        size=ev.size,
        mtime=ev.mtime,
        rules=spec,
        since=options.since.astimezone(UTC) if options.since else None,
        until=options.until.astimezone(UTC) if options.until else None,
        max_line=options.max_line,
        chunk_size=options.chunk_size,
        max_file_bytes=options.max_file_bytes,
        temp=ev.temp,
        # A log last written before --since holds no event in the window: read its coverage only
        # (the file-time pre-filter of Velociraptor PR 4367, used only for files older than the window).
        coverage_only=bool(
            options.since and ev.family in TEXT_LOG_FAMILIES and ev.mtime < options.since.timestamp()
        ),
    )


def _protocol(rel: str) -> str | None:
    """The protocol folder of an HttpProxy log (``Logging/HttpProxy/<Protocol>/file``), if any."""
    parts = rel.replace("\\", "/").split("/")
    low = [p.lower() for p in parts]
    if "httpproxy" not in low:
        return None
    i = len(low) - 1 - low[::-1].index("httpproxy")
    return parts[i + 1] if i + 1 < len(parts) - 1 else None


def _host_name(path: Path, options: HuntOptions) -> str:
    return options.host or package_host(path)


@dataclass(frozen=True)
class Progress:
    """Where a hunt is: hosts, files and bytes done (the totals grow while archives are walked)."""

    host: str
    hosts_done: int
    hosts_total: int
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    elapsed: float
    host_finished: bool = False

    @property
    def rate(self) -> float:
        """Bytes hunted per second so far."""
        return self.bytes_done / self.elapsed if self.elapsed > 0 else 0.0


def packages(paths: Sequence[Path], options: HuntOptions) -> list[Path]:
    """The triage packages under ``paths``, one host each: a folder holding several packages (sub-folders
    or archives, as ``exwatch cluster hunt`` splits them with ``find_packages``) is several hosts."""
    out: list[Path] = []
    for p in paths:
        found = find_packages([p]) if p.is_dir() and not p.is_symlink() else [p]
        if len(found) < 2 or not all(holds_volume_folder(f) for f in found):
            # One package inside a folder, or a sub-folder without a volume folder (W3SVC1, a KAPE "C"
            # folder): the PATH is one package, named and hunted as given.
            found = [p]
        if options.host and len(found) > 1:
            names = ", ".join(package_host(f) for f in found[:5])
            raise InputError(
                f"{p} holds {len(found)} triage packages ({names}{', ...' if len(found) > 5 else ''}); "
                "--host names one host: give one package with --host, or none to name each after its package"
            )
        out.extend(found)
    return out


def _evidence_in_window(results: list[FileHunt]) -> tuple[list[str], list[str]]:
    """(log files hunted with events in the --since/--until window, all log files): a host with no
    Exchange evidence at all, or none in the window, is incomplete, never clean."""
    logs = [r.file for r in results if r.family != "file"]
    usable = [r.file for r in results if r.family != "file" and r.in_window]
    return usable, logs


def _paths_to_hunt(paths: Sequence[Path], options: HuntOptions) -> list[Path]:
    """The packages to hunt: those under ``paths``, or the live install's folders when none is given."""
    if not paths:
        paths = live_install_paths(options)
    for p in paths:
        if not p.exists() and not p.is_symlink():
            raise InputError(f"{p}: no such file or folder")
    if not (options.exchange_path or options.iis_logs):
        return packages(paths, options)
    return list(paths)


def hunt_paths(
    paths: Sequence[Path],
    options: HuntOptions | None = None,
    *,
    executor: Executor | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> HuntResult:
    """Hunt every PATH (triage folder, archive, or live install); one host per package: a PATH is one
    package unless it is a folder of packages (see ``packages``). ``progress`` is called after each file."""
    options = options or HuntOptions()
    spec = rule_spec(options)
    bundle = load_bundle(spec)  # compile once here: a bad user rule is an InputError before any work starts
    roots = _paths_to_hunt(paths, options)
    # Collection packages (exwatch collect) are verified before any work starts and name their host.
    collections = {p: open_for_hunt(p, check=options.verify_collections) for p in roots}
    run = _Run(options, spec, len(roots), progress, list(bundle.notes))
    tmp_root = tempfile.mkdtemp(prefix="exwatch-hunt-")
    own_pool = None
    try:
        jobs = options.jobs or os.cpu_count() or 1
        if executor is None and jobs > 1:
            own_pool = ProcessPoolExecutor(max_workers=jobs, initializer=ignore_sigint)
            executor = own_pool
        for root in roots:
            run.hunt_host(root, collections[root], tmp_root, executor)
    except KeyboardInterrupt as exc:
        if own_pool is not None:
            stop_pool(own_pool)
            own_pool = None
        raise HuntInterrupted(run.files_done, run.files_total, run.found) from exc
    finally:
        if own_pool is not None:
            own_pool.shutdown()
        cleanup(tmp_root)
    return HuntResult(hosts=run.hosts, findings=order(run.findings), errors=run.errors, stats=run.stats())


class HuntInterrupted(KeyboardInterrupt):
    """A hunt stopped by Ctrl-C (SIGINT): its workers are stopped, nothing is stored, and it says how
    far it got: files hunted of those found so far, and findings of likely or confirmed confidence
    among them (the CLI's exit code: 1 if any, else 3)."""

    def __init__(self, files_done: int, files_total: int, found: int) -> None:
        super().__init__("interrupted")
        self.files_done = files_done
        self.files_total = files_total
        self.found = found


class _Run:
    """One hunt under way: the hosts done so far, their findings and errors, counters and progress."""

    def __init__(
        self,
        options: HuntOptions,
        spec: RuleSpec,
        hosts_total: int,
        progress: Callable[[Progress], None] | None,
        notes: list[str],
    ) -> None:
        self.options = options
        self.spec = spec
        self.hosts_total = hosts_total
        self.progress = progress
        self.hosts: list[HostResult] = []
        self.findings: list[Finding] = []
        self.errors: list[FileError] = []
        self.notes = tuple(notes)
        self.clock = time.monotonic()
        self.files_done = self.bytes_done = self.files_total = self.bytes_total = 0
        self.candidates = self.parsed = self.files = self.bytes = 0
        self.found = 0  # findings of likely or confirmed confidence in the files hunted so far

    def stats(self) -> HuntStats:
        return HuntStats(self.files, self.bytes, self.candidates, self.parsed, self.notes)

    def tick(self, host: str, finished: bool = False) -> None:
        if self.progress is not None:
            self.progress(
                Progress(
                    host,
                    len(self.hosts),
                    self.hosts_total,
                    self.files_done,
                    self.files_total,
                    self.bytes_done,
                    self.bytes_total,
                    time.monotonic() - self.clock,
                    finished,
                )
            )

    def hunt_host(
        self, root: Path, collection: Manifest | None, tmp_root: str, executor: Executor | None
    ) -> None:
        """Walk one package, hunt its files, and add its host result."""
        options = self.options
        host = collection.host if collection and not options.host else _host_name(root, options)
        host_errors: list[FileError] = []
        walked = walk(root, tmp_root, options.limits, host_errors)
        groups: Iterable[list[EvidenceFile]]
        if collection:
            groups = [collection_files(list(walked), collection, tmp_root)]
        else:
            # Archive members are hunted (and deleted by the worker) in batches while the walk goes on.
            groups = batches(walked)
        tasks: list[HuntTask] = []
        results: list[FileHunt] = []
        for group in groups:
            group_tasks = [_task(ev, options, self.spec) for ev in group]
            results.extend(self._hunt_group(host, group_tasks, executor))
            tasks.extend(group_tasks)
        host_findings: list[Finding] = []
        for res in results:
            host_errors.extend(res.errors)
            self.candidates += res.stats.candidates
            self.parsed += res.stats.parsed
            host_findings.extend(replace(f, host=host) for f in res.findings)
        self.files += len(tasks)
        self.bytes += sum(t.size for t in tasks)
        host_findings = link_chain(host_findings)
        self.hosts.append(_host_result(host, root, tasks, results, host_findings, host_errors, collection))
        self.findings.extend(host_findings)
        self.errors.extend(host_errors)
        self.tick(host, finished=True)

    def _hunt_group(self, host: str, tasks: list[HuntTask], executor: Executor | None) -> list[FileHunt]:
        # Big files first, so the pool is not left waiting on one large log at the end.
        tasks.sort(key=lambda t: -t.size)
        self.files_total += len(tasks)
        self.bytes_total += sum(t.size for t in tasks)
        hunted: Iterable[FileHunt]
        if executor is not None:
            hunted = executor.map(hunt_file, tasks, chunksize=1 if len(tasks) < 64 else 4)
        else:
            hunted = (hunt_file(t) for t in tasks)
        results = []
        for task, res in zip(tasks, hunted, strict=True):
            results.append(res)
            self.found += sum(1 for f in res.findings if f.above_review)
            self.files_done += 1
            self.bytes_done += task.size
            self.tick(host)
        return results


def _host_coverage(tasks: list[HuntTask], results: list[FileHunt], collection: Manifest | None) -> Coverage:
    """The coverage of one host per log family (and HttpProxy protocol), of its other files, and the
    collection's own account of what it copied."""
    per_file = [(r.file, r.coverage) for r in results if r.coverage is not None]
    logs = merge_coverage(
        [(f, c) for f, c in per_file if c.family != "files"],
        {t.rel: _protocol(t.rel) or "" for t in tasks},
    )
    files_cov = [c for _, c in per_file if c.family == "files"]
    return Coverage(
        logs=logs,
        files=FilesCoverage(len(files_cov), sum(c.bytes for c in files_cov)) if files_cov else None,
        collection=_collection_coverage(collection) if collection else None,
    )


def _collection_coverage(collection: Manifest) -> CollectionCoverage:
    """The collection's account of itself (exwatch.collect.hunthook.coverage, read at this seam)."""
    c = collection_coverage(collection)
    return CollectionCoverage(
        collected_at=datetime.fromisoformat(str(c["collected_at"]).replace("Z", "+00:00")),
        files=int(c["files"]),
        bytes=int(c["bytes"]),
        skipped={str(k): int(v) for k, v in c["skipped"].items()},
        listed_not_copied=int(c["listed_not_copied"]),
        build=c.get("build"),
    )


def _host_result(
    host: str,
    root: Path,
    tasks: list[HuntTask],
    results: list[FileHunt],
    findings: list[Finding],
    errors: list[FileError],
    collection: Manifest | None,
) -> HostResult:
    """One host's verdict, coverage, warnings, counts and next steps."""
    coverage = _host_coverage(tasks, results, collection)
    counts = {c: sum(1 for f in findings if f.confidence == c) for c in ("confirmed", "likely", "review")}
    usable, logs = _evidence_in_window(results)
    gap = (
        ["no Exchange, IIS or event log found: nothing says this host is clean"]
        if not logs
        else [f"--since/--until leave none of the {len(logs)} log files in the window: nothing was hunted"]
        if not usable
        else []
    )
    steps = next_steps(findings)
    build = coverage.collection.build if coverage.collection else None
    fix = (fix_from_build(build, steps.waves, "collection") if build else None) or fix_by_wave(steps.waves)
    return HostResult(
        host=host,
        source=str(root),
        next_steps=replace(steps, fix=fix),
        collection=collection,
        verdict=verdict(findings, errors, len(usable)),
        coverage=coverage,
        warnings=gap + coverage_warnings(coverage) + (collection_warnings(collection) if collection else []),
        counts=counts,
        errors=errors,
    )
