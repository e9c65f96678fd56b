"""Ingest of two revisions of exwatch side by side: ``python -m benchmarks.store.compare REV [REV2]``.

The machine's speed moves by half over an hour here (other work on the shared cores), so a figure
measured today is not comparable with one from yesterday.  This runs the store benchmark's ingest
(``--hosts`` x ``--days``, SQLite, a fresh file each run) from the source of each revision (``git
archive`` into a temporary directory; REV2 defaults to the working tree) in separate processes, after
benchmarks.method: each warmed once, then alternated, medians of ``--runs`` (at least 3), with the
load average.  It prints the table and, with ``--out FILE``, writes it there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from benchmarks.method import Contestant, compare, machine_line

ROOT = Path(__file__).resolve().parents[2]

INGEST = """
import json, sys, tempfile, time
from datetime import timedelta
from benchmarks.store.run import BATCH, DAY0, make_plan, records
from exwatch.fleet import open_store
hosts, days = int(sys.argv[1]), int(sys.argv[2])
plan = make_plan(hosts, days, 1)
spent = 0.0
with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{tmp}/c.db") as store:
    for day in range(days):
        sid = store.start_scan({"day": day}, started_at=DAY0 + timedelta(days=day))
        for start in range(0, hosts, BATCH):
            batch = records(plan, day, start, min(hosts, start + BATCH))
            t0 = time.perf_counter()
            store.add_observations(sid, batch)
            spent += time.perf_counter() - t0
        t0 = time.perf_counter()
        store.finish_scan(sid)
        spent += time.perf_counter() - t0
print(json.dumps({"seconds": spent, "obs_per_s": hosts * days / spent}))
"""


def source_tree(rev: str, into: Path) -> Path:
    """The ``src`` of a revision, unpacked under ``into``."""
    data = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="a git revision (the baseline)")
    parser.add_argument("rev2", nargs="?", help="another revision (default: the working tree)")
    parser.add_argument("--hosts", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="exwatch-compare-") as tmp:
        trees = {args.rev: source_tree(args.rev, Path(tmp) / "a")}
        second = args.rev2 or "working tree"
        trees[second] = source_tree(args.rev2, Path(tmp) / "b") if args.rev2 else ROOT / "src"
        contestants = [
            Contestant(
                name,
                command=[sys.executable, "-c", INGEST, str(args.hosts), str(args.days)],
                # the benchmark's own code (records) from this checkout, exwatch from the revision
                env={"PYTHONPATH": f"{src}:{ROOT}"},
            )
            for name, src in trees.items()
        ]
        result = compare(
            contestants, runs=args.runs, log=lambda line: print(line, file=sys.stderr, flush=True)
        )
    rates = {}
    for name, timing in result.timings.items():
        out = timing.last
        if out.get("exit"):
            print(out.get("stderr", ""), file=sys.stderr)
            return 1
        rates[name] = json.loads(out["stdout"].strip().splitlines()[-1])["obs_per_s"]
    n = args.hosts * args.days
    lines = [
        f"Ingest of {args.hosts:,} hosts x {args.days} snapshots ({n:,} observations, SQLite), "
        f"`python -m benchmarks.store.compare {args.rev}{' ' + args.rev2 if args.rev2 else ''}`. {machine_line()}; "
        f"{result.load_text()}.",
        "",
        "| revision | median s (process, ingest and start-up) | min-max s | ingest obs/s of the last run |",
        "|---|---|---|---|",
    ]
    for name, timing in result.timings.items():
        lines.append(f"| {name} | {timing.median:.1f} | {timing.spread()} | {rates[name]:,.0f} |")
    base, new = list(result.timings)
    lines += ["", f"Ratio of medians {base} / {new}: {result.ratio(base, new):.2f}x."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
