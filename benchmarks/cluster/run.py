"""Cluster benchmark: a 1,000-server lab scan and a hunt of N triage packages, 1 vs 2 Dask workers.

Run: ``python -m benchmarks.cluster.run`` (``--quick`` for a smaller run).

1. A lab fleet of 1,000 HTTPS Exchange servers (``exwatch lab serve``, its own process) in 127.50.0.0/16
   on a high port.
2. The single-process scanner (``exwatch.scan.engine.run_scan``), then ``cluster_scan`` on a LocalCluster
   of 1 and of 2 worker processes: seconds, hosts per second, and every verdict checked against the
   manifest's ``truth_passive``.
3. N small triage packages (``exwatch.lab.triage.write_triage``): ``hunt_paths`` one package after the
   other in one process (the reference), then ``cluster_hunt`` on 1 and 2 workers, with a same-findings check.

The machine's load average is recorded with every figure (it is shared). Results go to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASE = "127.50.64.1"
PORT = 18943


def start_lab(n: int, manifest: Path) -> subprocess.Popen[str]:
    """``exwatch lab serve`` in its own process; returns once its manifest is written."""
    cmd = [sys.executable, "-m", "exwatch", "lab", "serve", "--fleet", str(n), "--seed", "2021"]
    cmd += ["--base-address", BASE, "--https-port", str(PORT), "--only-exchange", "--manifest", str(manifest)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not manifest.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the lab did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    time.sleep(0.5)  # the manifest is written once every listener accepts; let the file settle
    return proc


def unlearnable(server: dict[str, Any]) -> bool:
    """Exchange 2010 behind ADFS: no response carries its build (tests/scan/test_lab_truth.py)."""
    return server["variant"] == "adfs" and str(server["build"]).startswith("14.")


def wrong_verdicts(manifest: dict[str, Any], records: dict[str, dict[str, Any]]) -> int:
    """Hosts whose per-wave states differ from the lab's passive truth (or that are missing)."""
    wrong = 0
    for srv in manifest["servers"]:
        rec = records.get(f"{srv['scheme']}://{srv['address']}:{srv['port']}")
        want = dict(srv["truth_passive"])
        if unlearnable(srv):
            want = {w: "unknown" for w in want}
        if rec is None or {w: v["state"] for w, v in rec["waves"].items()} != want:
            wrong += 1
    return wrong


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return sorted(json.dumps(f, sort_keys=True) for f in a) == sorted(
        json.dumps(f, sort_keys=True) for f in b
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_scan(n: int, work: Path) -> list[dict[str, Any]]:
    from exwatch.cluster import cluster_scan, open_client
    from exwatch.scan.engine import ScanOptions, run_scan

    manifest_file = work / "manifest.json"
    lab = start_lab(n, manifest_file)
    rows: list[dict[str, Any]] = []
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        options = ScanOptions(timeout=5.0, targets_files=(str(manifest_file),))
        records: dict[str, dict[str, Any]] = {}
        before = load()
        t0 = time.perf_counter()
        run_scan([], options, "memory:", on_record=lambda r: records.__setitem__(r["key"], r))
        secs = time.perf_counter() - t0
        rows.append(
            {
                "run": "run_scan (1 process)",
                "seconds": secs,
                "hosts": len(records),
                "wrong": wrong_verdicts(manifest, records),
                "load": before,
            }
        )
        print(f"scan single process: {secs:.1f} s, {len(records)} hosts, load {before}", flush=True)
        for workers in (1, 2):
            t_start = time.perf_counter()
            with open_client(None, workers) as client:
                startup = time.perf_counter() - t_start
                for shard_size in (125, 500):
                    records.clear()
                    before = load()
                    t0 = time.perf_counter()
                    res = cluster_scan(
                        client,
                        [],
                        options,
                        "memory:",
                        shard_size=shard_size,
                        on_record=lambda r: records.__setitem__(r["key"], r),
                    )
                    secs = time.perf_counter() - t0
                    rows.append(
                        {
                            "run": f"cluster_scan, {workers} worker(s), shards of {shard_size}",
                            "seconds": secs,
                            "startup": startup,
                            "hosts": len(records),
                            "wrong": wrong_verdicts(manifest, records),
                            "load": before,
                            "shards": res.shards,
                        }
                    )
                    print(
                        f"scan {workers} worker(s), shards of {shard_size}: {secs:.1f} s (+{startup:.1f} s start), "
                        f"load {before}",
                        flush=True,
                    )
    finally:
        lab.terminate()
        lab.wait(30)
    return rows


def bench_hunt(n_packages: int, size: int, work: Path) -> list[dict[str, Any]]:
    from exwatch.cluster import cluster_hunt, open_client
    from exwatch.hunt import HuntOptions, hunt_paths
    from exwatch.lab.triage import write_triage

    root = work / "packages"
    scenarios = ("proxylogon", "proxyshell", "proxynotshell", "lookalikes", "clean", "all")
    for i in range(n_packages):
        name = f"EXCH{i + 1:02d}"
        write_triage(
            root / name,
            seed=100 + i,
            size=size,
            scenarios=(scenarios[i % len(scenarios)],),
            host=name,
            days=2,
        )
    packages = sorted(root.iterdir())
    total_bytes = sum(f.stat().st_size for p in packages for f in p.rglob("*") if f.is_file())
    rows: list[dict[str, Any]] = []
    before = load()
    t0 = time.perf_counter()
    reference = [hunt_paths([p], HuntOptions(jobs=1)).to_dict()["findings"] for p in packages]
    secs = time.perf_counter() - t0
    ref_findings = [f for part in reference for f in part]
    rows.append(
        {
            "run": "hunt_paths per package (1 process)",
            "seconds": secs,
            "findings": len(ref_findings),
            "same": True,
            "load": before,
        }
    )
    print(f"hunt single process: {secs:.1f} s, {len(ref_findings)} findings, load {before}", flush=True)
    before = load()
    t0 = time.perf_counter()
    pooled = hunt_paths(packages, HuntOptions(jobs=2)).to_dict()["findings"]
    secs = time.perf_counter() - t0
    rows.append(
        {
            "run": "hunt_paths, all packages, its own pool of 2 processes",
            "seconds": secs,
            "findings": len(pooled),
            "same": _same(pooled, ref_findings),
            "load": before,
        }
    )
    print(f"hunt own pool of 2: {secs:.1f} s, load {before}", flush=True)
    for workers in (1, 2):
        t_start = time.perf_counter()
        with open_client(None, workers) as client:
            startup = time.perf_counter() - t_start
            for attempt in ("first run: rules compiled on each worker", "second run"):
                before = load()
                t0 = time.perf_counter()
                result = cluster_hunt(client, [root])
                secs = time.perf_counter() - t0
                got = result.to_dict()["findings"]
                rows.append(
                    {
                        "run": f"cluster_hunt, {workers} worker(s), {attempt}",
                        "seconds": secs,
                        "startup": startup,
                        "findings": len(got),
                        "same": _same(got, ref_findings),
                        "load": before,
                    }
                )
                print(f"hunt {workers} worker(s) {attempt}: {secs:.1f} s, load {before}", flush=True)
    for row in rows:
        row["mb"] = total_bytes / 1e6
    return rows


def write_results(
    scan_rows: list[dict[str, Any]], hunt_rows: list[dict[str, Any]], args: argparse.Namespace
) -> str:
    ref_scan = scan_rows[0]["seconds"]
    ref_hunt = hunt_rows[0]["seconds"]
    lines = [
        "# Cluster benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores shared with",
        "other engineers' work (the 1/5/15-minute load average before each run is in the table), Python",
        f"{platform.python_version()}. Command: `python -m benchmarks.cluster.run{' --quick' if args.quick else ''}`.",
        "",
        f"## Scan: {args.fleet} lab HTTPS Exchange servers (lab in its own process), passive",
        "",
        "| run | seconds | hosts/s | vs 1 process | cluster start (s) | hosts | wrong verdicts | load before |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in scan_rows:
        lines.append(
            f"| {r['run']} | {r['seconds']:.1f} | {r['hosts'] / r['seconds']:.0f} | {ref_scan / r['seconds']:.2f}x | "
            f"{r.get('startup', 0):.1f} | {r['hosts']} | {r['wrong']} | {r['load']} |"
        )
    lines += [
        "",
        f"## Hunt: {args.packages} triage packages, {hunt_rows[0]['mb']:.0f} MB in all",
        "",
        "| run | seconds | MB/s | vs 1 process | cluster start (s) | findings | same findings | load before |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in hunt_rows:
        lines.append(
            f"| {r['run']} | {r['seconds']:.1f} | {r['mb'] / r['seconds']:.1f} | {ref_hunt / r['seconds']:.2f}x | "
            f"{r.get('startup', 0):.1f} | {r['findings']} | {r['same']} | {r['load']} |"
        )
    lines += [
        "",
        "Seconds exclude starting the LocalCluster (its own column). The lab (scan), the client and the",
        "workers share the same 2 cores with each other and with other engineers' jobs, so a second worker",
        "competes for CPU: these figures show the overhead and the correctness of sharding here, not the",
        "speed-up of separate machines. A cluster hunt's first run includes compiling the rules once in each",
        "worker process.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 servers and 3 packages")
    parser.add_argument("--fleet", type=int, default=1000)
    parser.add_argument("--packages", type=int, default=6)
    parser.add_argument("--size", type=int, default=40_000_000, help="bytes per package")
    args = parser.parse_args()
    if args.quick:
        args.fleet, args.packages, args.size = 200, 3, 1_000_000
    with tempfile.TemporaryDirectory(prefix="exwatch-cluster-bench-") as tmp:
        work = Path(tmp)
        scan_rows = bench_scan(args.fleet, work)
        hunt_rows = bench_hunt(args.packages, args.size, work)
    text = write_results(scan_rows, hunt_rows, args)
    print(text)
    if not args.quick:
        (HERE / "RESULTS.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
