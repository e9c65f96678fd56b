"""The hunt: find the evidence files under each PATH, hunt them on a process pool, assemble the result."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exwatch.collect.hunthook import adjust_files as collection_files
from exwatch.collect.hunthook import coverage as collection_coverage
from exwatch.collect.hunthook import observation as collection_observation
from exwatch.collect.hunthook import open_for_hunt
from exwatch.collect.hunthook import warnings as collection_warnings
from exwatch.errors import InputError
from exwatch.hunt.model import Evidence, FileError, Finding, HostResult, HuntOptions, HuntResult, iso_text_z
from exwatch.hunt.nextsteps import fix_by_wave, fix_from_build, next_steps
from exwatch.hunt.sources.files import EvidenceFile, batches, cleanup, walk
from exwatch.hunt.sources.textlog import default_strategy
from exwatch.hunt.timeline import coverage_warnings, link_chain, merge_coverage, order, verdict
from exwatch.hunt.worker import hunt_file, load_bundle


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


def _rules_spec(options: HuntOptions, strategy: str | None = None) -> dict[str, Any]:
    strategy = strategy or options.strategy or default_strategy()
    return {
        "builtin": options.builtin_rules,
        "rule_dirs": [str(p) for p in options.rule_dirs],
        "yara_files": [str(p) for p in options.yara_files],
        "ioc_files": [str(p) for p in options.ioc_files],
        "strategy": strategy if options.prefilter else "none",
    }


def _task(ev: EvidenceFile, options: HuntOptions, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": ev.path,
        "rel": ev.rel,
        "family": ev.family,
        "size": ev.size,
        "mtime": ev.mtime,
        "rules": spec,
        "since": options.since.astimezone(UTC).isoformat() if options.since else None,
        "until": options.until.astimezone(UTC).isoformat() if options.until else None,
        "max_line": options.max_line,
        "chunk_size": options.chunk_size,
        "max_file_bytes": options.max_file_bytes,
        "temp": ev.temp,
        # A log last written before --since holds no event in the window: read its coverage only
        # (the file-time pre-filter of Velociraptor PR 4367, used only for files older than the window).
        "coverage_only": bool(
            options.since and ev.family in TEXT_LOG_FAMILIES and ev.mtime < options.since.timestamp()
        ),
    }


TEXT_LOG_FAMILIES = ("httpproxy", "ecp", "ecp_activity", "oabgenerator", "iis", "exchange_log")


def _protocol(rel: str) -> str | None:
    """The protocol folder of an HttpProxy log (``Logging/HttpProxy/<Protocol>/file``), if any."""
    parts = rel.replace("\\", "/").split("/")
    low = [p.lower() for p in parts]
    if "httpproxy" not in low:
        return None
    i = len(low) - 1 - low[::-1].index("httpproxy")
    return parts[i + 1] if i + 1 < len(parts) - 1 else None


def _host_name(path: Path, options: HuntOptions) -> str:
    if options.host:
        return options.host
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".zip", ".7z", ".tar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name or "localhost"


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
    from exwatch.cluster.hunt import find_packages

    out: list[Path] = []
    for p in paths:
        found = find_packages([p]) if p.is_dir() and not p.is_symlink() else [p]
        if len(found) < 2 or not all(_holds_volume_folder(f) for f in found):
            # One package inside a folder, or a sub-folder without a volume folder (W3SVC1, a KAPE "C"
            # folder): the PATH is one package, named and hunted as given.
            found = [p]
        if options.host and len(found) > 1:
            names = ", ".join(_host_name(f, HuntOptions()) for f in found[:5])
            raise InputError(
                f"{p} holds {len(found)} triage packages ({names}{', ...' if len(found) > 5 else ''}); "
                "--host names one host: give one package with --host, or none to name each after its package"
            )
        out.extend(found)
    return out


def _holds_volume_folder(path: Path) -> bool:
    """An archive, or a folder holding a volume folder (``inetpub``, ``Program Files``, ``Logging``, ...)."""
    from exwatch.cluster.hunt import PACKAGE_MARKERS

    if not path.is_dir():
        return True
    try:
        return any(e.is_dir() and e.name.lower() in PACKAGE_MARKERS for e in path.iterdir())
    except OSError:
        return False


def _evidence_in_window(results: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(log files hunted with events in the --since/--until window, all log files): a host with no
    Exchange evidence at all, or none in the window, is incomplete, never clean."""
    logs = [r["file"] for r in results if r["family"] != "file"]
    usable = [r["file"] for r in results if r["family"] != "file" and r.get("in_window", True)]
    return usable, logs


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
    spec = _rules_spec(options)
    bundle = load_bundle(spec)  # compile once here: a bad user rule is an InputError before any work starts
    if not paths:
        paths = live_install_paths(options)
    for p in paths:
        if not p.exists() and not p.is_symlink():
            raise InputError(f"{p}: no such file or folder")
    if not (options.exchange_path or options.iis_logs):
        paths = packages(paths, options)
    # Collection packages (exwatch collect) are verified before any work starts and name their host.
    collections = {p: open_for_hunt(p, check=options.verify_collections) for p in paths}
    tmp_root = tempfile.mkdtemp(prefix="exwatch-hunt-")
    hosts: list[HostResult] = []
    findings: list[Finding] = []
    errors: list[FileError] = []
    stats: dict[str, Any] = {
        "files": 0,
        "bytes": 0,
        "candidates": 0,
        "parsed": 0,
        "notes": list(bundle.notes),
    }
    own_pool = None
    clock = time.monotonic()
    done = {"files": 0, "bytes": 0, "files_total": 0, "bytes_total": 0}

    def tick(host: str, finished: bool = False) -> None:
        if progress is not None:
            progress(
                Progress(
                    host,
                    len(hosts),
                    len(paths),
                    done["files"],
                    done["files_total"],
                    done["bytes"],
                    done["bytes_total"],
                    time.monotonic() - clock,
                    finished,
                )
            )

    try:
        jobs = options.jobs or os.cpu_count() or 1
        if executor is None and jobs > 1:
            own_pool = ProcessPoolExecutor(max_workers=jobs)
            executor = own_pool
        for root in paths:
            collection = collections[root]
            host = collection.host if collection and not options.host else _host_name(root, options)
            host_errors: list[FileError] = []
            walked = walk(root, tmp_root, options.limits, host_errors)
            groups: Iterable[list[EvidenceFile]]
            if collection:
                groups = [collection_files(list(walked), collection, tmp_root)]
                stats.setdefault("collector_observations", []).extend(collection_observation(collection))
            else:
                # Archive members are hunted (and deleted by the worker) in batches while the walk goes on.
                groups = batches(walked)
            tasks: list[dict[str, Any]] = []
            results: list[dict[str, Any]] = []
            for group in groups:
                group_tasks = [_task(ev, options, spec) for ev in group]
                # Big files first, so the pool is not left waiting on one large log at the end.
                group_tasks.sort(key=lambda t: -int(t["size"]))
                done["files_total"] += len(group_tasks)
                done["bytes_total"] += sum(int(t["size"]) for t in group_tasks)
                if executor is not None:
                    chunk = 1 if len(group_tasks) < 64 else 4
                    hunted: Iterable[dict[str, Any]] = executor.map(hunt_file, group_tasks, chunksize=chunk)
                else:
                    hunted = (hunt_file(t) for t in group_tasks)
                for task, res in zip(group_tasks, hunted, strict=True):
                    results.append(res)
                    done["files"] += 1
                    done["bytes"] += int(task["size"])
                    tick(host)
                tasks.extend(group_tasks)
            host_findings: list[Finding] = []
            per_file_cov = []
            for res in results:
                for e in res["errors"]:
                    host_errors.append(FileError(e["file"], e["error"], e["kind"]))
                if res["coverage"]:
                    per_file_cov.append({**res["coverage"], "file": res["file"]})
                stats["candidates"] += int(res["stats"].get("candidates", 0))
                stats["parsed"] += int(res["stats"].get("parsed", 0))
                for f in res["findings"]:
                    ev = f["evidence"]
                    host_findings.append(
                        Finding(
                            rule=f["rule"],
                            wave=f["wave"],
                            cve=f["cve"],
                            confidence=f["confidence"],
                            time=datetime.fromisoformat(f["time"].replace("Z", "+00:00"))
                            if f["time"]
                            else None,
                            title=f["title"],
                            description=f["description"],
                            host=host,
                            evidence=Evidence(
                                file=ev["file"],
                                line=ev.get("line"),
                                record=ev.get("record"),
                                offset=ev.get("offset"),
                                excerpt=ev.get("excerpt", ""),
                                sha256=ev.get("sha256"),
                                family=res["family"],
                                facts=dict(ev.get("facts") or {}),
                            ),
                        )
                    )
            stats["files"] += len(tasks)
            stats["bytes"] += sum(int(t["size"]) for t in tasks)
            coverage = merge_coverage(
                [c for c in per_file_cov if c["family"] != "files"],
                {t["rel"]: _protocol(t["rel"]) or "" for t in tasks},
            )
            files_cov = [c for c in per_file_cov if c["family"] == "files"]
            if files_cov:
                coverage["files"] = {
                    "files": len(files_cov),
                    "bytes": sum(int(c.get("bytes", 0)) for c in files_cov),
                }
            counts = {
                c: sum(1 for f in host_findings if f.confidence == c)
                for c in ("confirmed", "likely", "review")
            }
            if collection:
                coverage["collection"] = collection_coverage(collection)
                coverage["collection"]["collected_at"] = iso_text_z(
                    coverage["collection"].get("collected_at")
                )
            usable, logs = _evidence_in_window(results)
            gap = (
                ["no Exchange, IIS or event log found: nothing says this host is clean"]
                if not logs
                else [
                    f"--since/--until leave none of the {len(logs)} log files in the window: nothing was hunted"
                ]
                if not usable
                else []
            )
            link_chain(host_findings)
            steps = next_steps(host_findings)
            build = coverage.get("collection", {}).get("build") if collection else None
            steps["fix"] = (
                fix_from_build(str(build), steps["waves"], "collection") if build else None
            ) or fix_by_wave(steps["waves"])
            hosts.append(
                HostResult(
                    host=host,
                    source=str(root),
                    next_steps=steps,
                    verdict=verdict(host_findings, host_errors, len(usable)),
                    coverage=coverage,
                    warnings=gap
                    + coverage_warnings(coverage)
                    + (collection_warnings(collection) if collection else []),
                    counts=counts,
                    errors=host_errors,
                )
            )
            findings.extend(host_findings)
            errors.extend(host_errors)
            tick(host, finished=True)
    finally:
        if own_pool is not None:
            own_pool.shutdown()
        cleanup(tmp_root)
    return HuntResult(hosts=hosts, findings=order(findings), errors=errors, stats=stats)
