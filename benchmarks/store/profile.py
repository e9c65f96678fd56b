"""Where the store's ingest time goes: ``python -m benchmarks.store.profile [--hosts 50000] [--days 5]``.

``--label NAME`` keeps the summary in profiles.json, which RESULTS.md shows.

Ingests the benchmark's records (benchmarks.store.run) into a fresh store under cProfile and prints:

- the wall time of add_observations and of finish_scan, per snapshot and in total;
- the functions with the most cumulative and own time (``--top``, default 25);
- the SQL statements that took the most time (one line each, with their count and seconds).

With ``--db URL`` it profiles that store (PostgreSQL: a fresh database on the same server, as the
benchmark does); the default is a fresh SQLite file.  Only the client's side is profiled: time spent
in the database server shows up as time waiting in the driver (``execute``, ``copy``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from benchmarks.store.run import BATCH, DAY0, fresh_database, make_plan, records
from exwatch.fleet import open_store

HERE = Path(__file__).resolve().parent


def profile(url: str, hosts: int, days: int, top: int) -> str:
    url, drop = fresh_database(url)
    try:
        return _profile(url, hosts, days, top)
    finally:
        drop()


def _profile(url: str, hosts: int, days: int, top: int) -> str:
    plan = make_plan(hosts, days, 1)
    prof = cProfile.Profile()
    sql: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    add_s = finish_s = 0.0
    lines: list[str] = []
    with open_store(url) as store:
        started: dict[int, float] = {}

        @event.listens_for(store.engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            started[id(cursor)] = time.perf_counter()

        @event.listens_for(store.engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            seconds = time.perf_counter() - started.pop(id(cursor), time.perf_counter())
            entry = sql[" ".join(statement.split())[:160]]
            entry[0] += 1
            entry[1] += seconds

        for day in range(days):
            sid = store.start_scan({"bench": True, "day": day}, started_at=DAY0 + timedelta(days=day))
            add = 0.0
            for start in range(0, hosts, BATCH):
                batch = records(plan, day, start, min(hosts, start + BATCH))
                t0 = time.perf_counter()
                prof.enable()
                store.add_observations(sid, batch)
                prof.disable()
                add += time.perf_counter() - t0
            t0 = time.perf_counter()
            prof.enable()
            store.finish_scan(sid)
            prof.disable()
            finish = time.perf_counter() - t0
            add_s += add
            finish_s += finish
            lines.append(
                f"- snapshot {day + 1}: add_observations {add:.2f} s, finish_scan {finish:.2f} s "
                f"({hosts / (add + finish):,.0f} obs/s)"
            )
    total = add_s + finish_s
    out = [
        f"{hosts:,} hosts x {days} snapshots on {url.split('@')[-1] if '@' in url else 'SQLite'}: "
        f"{hosts * days / total:,.0f} obs/s under the profiler (add_observations {add_s:.1f} s, "
        f"finish_scan {finish_s:.1f} s)",
        "",
        *lines,
        "",
        "SQL statements by time (client-side wall time; executemany counts once):",
        "",
        "| seconds | count | statement |",
        "|---|---|---|",
    ]
    for statement, (count, seconds) in sorted(sql.items(), key=lambda kv: -kv[1][1])[:15]:
        out.append(f"| {seconds:.2f} | {count:,} | `{statement.replace('|', '/')}` |")
    for sort in ("cumulative", "tottime"):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.strip_dirs().sort_stats(sort).print_stats(top)
        text = buf.getvalue()
        body = text[text.find("   ncalls") :] if "   ncalls" in text else text
        out += ["", f"Top {top} by {sort} time:", "", "```", body.rstrip(), "```"]
    return "\n".join(out) + "\n"


def save(label: str, text: str, where: Path, measured: str | None = None) -> None:
    """Keep a profile's summary in profiles.json (benchmarks/store/run.py puts it in RESULTS.md)."""
    profiles: dict[str, Any] = json.loads(where.read_text()) if where.exists() else {}
    lines = text.splitlines()
    keep = [line for line in lines[1:] if line.startswith("- snapshot")]
    sql = [line for line in lines if line.startswith("|")][:12]  # header, rule and the first ten
    tottime = text[text.find("by tottime") :].splitlines()[2:16] if "by tottime" in text else []
    when = (
        measured
        or f"measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, load average {os.getloadavg()[0]:.2f}"
    )
    profiles[label] = {
        "summary": f"{lines[0]} ({when})",
        "lines": [*keep, "", "SQL statements by time:", "", *sql, "", "Functions by own time:", "", *tottime],
    }
    where.write_text(json.dumps(profiles, indent=1) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--db", default=None, help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--label", help="keep the summary under this name in profiles.json (for RESULTS.md)")
    parser.add_argument(
        "--from-file", type=Path, help="with --label: keep this earlier output instead of profiling"
    )
    parser.add_argument("--measured", help="with --from-file: when and under what load it was measured")
    args = parser.parse_args()
    if args.from_file:
        text = args.from_file.read_text(encoding="utf-8")
    else:
        with tempfile.TemporaryDirectory(prefix="exwatch-profile-") as tmp:
            url = args.db or f"sqlite:///{tmp}/profile.db"
            text = profile(url, args.hosts, args.days, args.top)
    sys.stdout.write(text)
    if args.label:
        save(args.label, text, HERE / "profiles.json", args.measured)
    return 0


if __name__ == "__main__":
    sys.exit(main())
