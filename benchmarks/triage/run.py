"""Benchmark: time to write a 2 GB triage package, against writing the same bytes raw (disk speed).

Run: ``python -m benchmarks.triage.run [--size 2GB] [--dir /tmp]``. Writes ``benchmarks/triage/RESULTS.md``
and deletes the package afterwards (disk matters on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from exwatch.cli.lab_triage import parse_size
from exwatch.lab.triage import write_triage

HERE = Path(__file__).resolve().parent
BLOCK = 8 * 1024 * 1024


def folder_bytes(root: Path) -> tuple[int, int]:
    total = files = 0
    for p in root.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
            files += 1
    return total, files


def _cpu() -> float:
    """User + system CPU seconds of this process and of its finished children (the pool's workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def raw_write(path: Path, total: int) -> float:
    """Seconds to write ``total`` bytes from one prepared buffer in 8 MiB blocks (the disk's pace)."""
    buf = os.urandom(BLOCK)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        left = total
        while left > 0:
            n = min(left, BLOCK)
            f.write(buf[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="2GB")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    size = parse_size(args.size)
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="exwatch-triage-bench-", dir=args.dir))
    try:
        out = work / "pkg"
        cpu0 = _cpu()
        t0 = time.perf_counter()
        truth = write_triage(out, seed=args.seed, size=size)
        os.sync()  # count the time to get the bytes to disk, as the raw write below does
        gen = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        total, files = folder_bytes(out)
        shutil.rmtree(out)
        raw = raw_write(work / "raw.bin", total)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mbs = total / gen / 1e6
    raw_mbs = total / raw / 1e6
    ratio = gen / raw
    print(f"triage package: {total / 1e9:.2f} GB in {files} files, {len(truth['items'])} truth items")
    print(f"generate: {gen:.1f} s ({mbs:.0f} MB/s), {cpu:.1f} CPU s in all processes")
    print(f"raw write of the same bytes (8 MiB blocks): {raw:.1f} s ({raw_mbs:.0f} MB/s)")
    print(f"ratio generate / raw write: {ratio:.2f}x (load average {load:.1f} at the start)")
    cpus = os.cpu_count()
    (HERE / "RESULTS.md").write_text(
        "# Triage package benchmark\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} with {cpus} CPUs "
        f"(shared with other work; load average {load:.1f} at the start), Python {platform.python_version()}.\n\n"
        f"Command: `python -m benchmarks.triage.run --size {args.size}` "
        f"(same as `exwatch lab triage --out DIR --size {args.size}` plus a sync).\n\n"
        "| what | bytes | files | seconds | MB/s |\n|---|---:|---:|---:|---:|\n"
        f"| `write_triage` (all scenarios, 3 days, seed {args.seed}) | {total:,} | {files} | {gen:.1f} | {mbs:.0f} |\n"
        f"| raw write of the same bytes (8 MiB blocks, fsync) | {total:,} | 1 | {raw:.1f} | {raw_mbs:.0f} |\n\n"
        f"Generation takes {ratio:.2f}x the time of writing the same bytes raw. It used {cpu:.1f} CPU seconds "
        "(user + system, all processes).\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
