"""Store benchmark: ingest N hosts x D daily snapshots, then time the headline report and one host's history.

    python -m benchmarks.store.run [--hosts 400000] [--days 30] [--db URL] [--runs 5] [--out RESULTS.md]
    bash scripts/with-postgres.sh .venv/bin/python -m benchmarks.store.run --backend postgresql
    python -m benchmarks.store.run --db sqlite:////tmp/bench.db ...      # the store file is kept
    python -m benchmarks.store.run --db sqlite:////tmp/bench.db --reads-only ...   # reads of newer code on it

With no --db it runs on a fresh SQLite file, and on PostgreSQL too when EXWATCH_TEST_PG_URL is set
(``--backend`` picks one).  Goals: >= 50,000 observations/s ingested, headline report <= 2 s, one
host's history <= 50 ms.  The method is benchmarks.method's: the ingest is one timed pass (it is the
work itself: every snapshot is written once, timed snapshot by snapshot); the reads are warmed, then
alternated (report, history, report, ...) ``--runs`` times and given as medians with their spread.
The load average is printed and kept with every figure.  On SQLite it also measures what the store's
health check costs on the full-size file (quick_check, bounded and whole).  RESULTS.md is rewritten
from results.json (every configuration measured, newest kept) and profiles.json
(``python -m benchmarks.store.profile --label NAME``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.method import Contestant, compare, machine_line
from exwatch.fleet import open_store
from exwatch.fleet import queries as q
from exwatch.report import ReportOptions, build_report

DAY0 = datetime(2021, 3, 2, tzinfo=UTC)
BATCH = 5000
BUILDS = [
    "15.1.2176.2",
    "15.1.2176.9",
    "15.2.792.3",
    "15.2.792.10",
    "15.0.1497.2",
    "15.0.1497.12",
    "15.2.858.5",
]
FIX = {
    "security_update": ["15.1.2176.9"],
    "cumulative_update": "15.1.2242.4",
    "text": "install the March 2021 security update KB5000871 for this CU",
}


def make_plan(hosts: int, days: int, seed: int) -> dict[str, Any]:
    """Per host: the day it gets patched or mitigated (or never), its build and tags."""
    rng = np.random.default_rng(seed)
    # Share protected rises like March 2021 (about 77% by day 8, 92% by day 20); 5% never move.
    patch_day = np.floor(rng.exponential(5.0, hosts)).astype(int)
    patch_day[rng.random(hosts) < 0.05] = 10_000
    mitigated = rng.random(hosts) < 0.15
    unknown = rng.random(hosts) < 0.03
    build = rng.integers(0, len(BUILDS), hosts)
    return {"patch_day": patch_day, "mitigated": mitigated, "unknown": unknown, "build": build}


def records(plan: dict[str, Any], day: int, start: int, stop: int) -> list[dict[str, Any]]:
    out = []
    pd, mit, unk, bld = plan["patch_day"], plan["mitigated"], plan["unknown"], plan["build"]
    base = DAY0 + timedelta(days=day)
    for i in range(start, stop):
        when = (base + timedelta(milliseconds=i)).isoformat()  # a scan sees each host at its own time
        if unk[i]:
            state = "unknown"
        elif day >= pd[i]:
            state = "mitigated" if mit[i] else "patched"
        else:
            state = "vulnerable"
        a, b = divmod(i, 65536)
        address = f"10.{a}.{b >> 8}.{b & 255}"
        out.append(
            {
                "target": address,
                "key": address,
                "address": address,
                "port": 443,
                "status": "exchange",
                "error": None,
                "build": BUILDS[bld[i]],
                "build_source": "x-owa-version",
                "cu_only": False,
                "probes": {"proxylogon": "vulnerable" if state == "vulnerable" else "patched"},
                "waves": {
                    "proxylogon": {"state": state, "reason": "build and probe", "fix": FIX},
                    "proxyshell": {"state": "not_affected", "reason": "older than the wave", "fix": {}},
                    "proxynotshell": {"state": "patched", "reason": "build", "fix": {}},
                },
                "fe_server": f"EXCH{i % 97:02d}",
                "cert_names": [f"mail{i}.example"],
                "tags": {"country": ("NL", "BE", "DE", "FR")[i % 4], "organisation": f"org{i % 1000}"},
                "time": when,
            }
        )
    return out


def fresh_database(url: str) -> tuple[str, Any]:
    """For PostgreSQL, a new empty database on the same server (and a function that drops it)."""
    if not url.startswith("postgresql"):
        return url, lambda: None
    from sqlalchemy import create_engine, text

    name = f"exwatch_bench_{os.getpid()}"
    admin = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.rsplit("/", 1)[0] + "/" + name, drop


def bench(url: str, hosts: int, days: int, runs: int, seed: int = 1) -> dict[str, Any]:
    url, drop = fresh_database(url)
    try:
        return _bench(url, hosts, days, runs, seed)
    finally:
        drop()


def _load() -> float:
    return os.getloadavg()[0]


def _ingest(store: Any, plan: dict[str, Any], hosts: int, days: int) -> dict[str, Any]:
    """Every snapshot written once; records are built outside the timing."""
    ingest = finish = 0.0
    first_day = (0, 0.0)
    n_obs = 0
    loads = [_load()]
    for day in range(days):
        sid = store.start_scan({"bench": True, "day": day}, started_at=DAY0 + timedelta(days=day))
        for start in range(0, hosts, BATCH):
            batch = records(plan, day, start, min(hosts, start + BATCH))
            t0 = time.perf_counter()
            store.add_observations(sid, batch)
            ingest += time.perf_counter() - t0
            n_obs += len(batch)
        t0 = time.perf_counter()
        store.finish_scan(sid)
        finish += time.perf_counter() - t0
        loads.append(_load())
        print(
            f"  day {day + 1}/{days}: {n_obs / (ingest + finish):,.0f} obs/s so far "
            f"(add {ingest:.1f} s, finish {finish:.1f} s; load {loads[-1]:.2f})",
            file=sys.stderr,
            flush=True,
        )
        if day == 0:
            first_day = (n_obs, ingest + finish)
    return {
        "observations": n_obs,
        "ingest_s": ingest,
        "finish_s": finish,
        "obs_per_s": n_obs / (ingest + finish),
        # after the first snapshot (which also inserts every host and tag): the rate of a repeat scan
        "steady_obs_per_s": (n_obs - first_day[0]) / (ingest + finish - first_day[1]) if days > 1 else None,
        "ingest_load": statistics.mean(loads),
        "ingest_load_max": max(loads),
    }


def _reads(store: Any, hosts: int, days: int, runs: int, seed: int) -> dict[str, Any]:
    """The headline report and one host's history, warmed and alternated (benchmarks.method)."""
    rng = np.random.default_rng(seed + 1)
    sample = [int(i) for i in rng.integers(0, hosts, 200)]
    state = {"next": 0, "per_host": [], "headline": "", "at_risk": 0}

    def report() -> dict[str, Any]:
        doc = build_report(store, ReportOptions(limit=50))
        state["headline"] = _field(doc, "headline")
        state["at_risk"] = len(_field(doc, "hosts_at_risk"))
        return {}

    def history() -> dict[str, Any]:
        # 20 hosts a run (others each run): the run's time is their mean, each host's time is kept
        for _ in range(20):
            i = sample[state["next"] % len(sample)]
            state["next"] += 1
            a, b = divmod(i, 65536)
            t0 = time.perf_counter()
            hist = q.host_history(store, f"10.{a}.{b >> 8}.{b & 255}")
            state["per_host"].append(time.perf_counter() - t0)
            assert len(_field(hist, "snapshots")) == days
        return {}

    contestants = [
        Contestant("headline report", function=report),
        Contestant("host history x20", function=history),
    ]
    result = compare(contestants, runs=runs, log=lambda line: print(line, file=sys.stderr, flush=True))
    timed = state["per_host"][20:]  # the warm-up's 20 left out
    reports = result.timings["headline report"].seconds
    histories = [s / 20 for s in result.timings["host history x20"].seconds]
    return {
        "report_s": statistics.median(reports),
        "report_min_s": min(reports),
        "report_max_s": max(reports),
        "history_ms": statistics.median(timed) * 1000,
        "history_run_medians_ms": [round(h * 1000, 2) for h in histories],
        "history_max_ms": max(timed) * 1000,
        "history_hosts": len(timed),
        "read_runs": runs,
        "read_load": (result.load_before[0], result.load_after[0]),
        "headline": state["headline"],
        "at_risk": state["at_risk"],
    }


def _field(doc: Any, name: str) -> Any:
    return doc[name] if isinstance(doc, dict) else getattr(doc, name)


def health_costs(url: str) -> dict[str, Any]:
    """What the store's health check costs on this (SQLite) file: the whole quick_check (cold and
    warm), quick_check(1), the bounded check scans and serve run, and opening the store."""
    import sqlite3

    from exwatch.fleet.database import CHECK_BUDGET, check_store

    path = Path(url.removeprefix("sqlite:///"))
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    out: dict[str, Any] = {"file_gb": path.stat().st_size / 1e9, "budget_s": CHECK_BUDGET}
    for name, pragma in (
        ("quick_check_s", "PRAGMA quick_check"),
        ("quick_check_again_s", "PRAGMA quick_check"),
        ("quick_check_1_s", "PRAGMA quick_check(1)"),
    ):
        t0 = time.perf_counter()
        rows = con.execute(pragma).fetchall()
        out[name] = time.perf_counter() - t0
        assert rows == [("ok",)], rows
    con.close()
    from exwatch.fleet.database import engine_for

    engine = engine_for(url)
    try:
        for name, kwargs in (("bounded_check_s", {}), ("cheap_check_s", {"thorough": False})):
            t0 = time.perf_counter()
            check_store(engine, **kwargs)  # type: ignore[arg-type]
            out[name] = time.perf_counter() - t0
    finally:
        engine.dispose()
    for name, profile in (("open_s", "write"), ("open_scan_s", "scan")):
        t0 = time.perf_counter()
        open_store(url, profile=profile).close()
        out[name] = time.perf_counter() - t0
    print(
        f"  health check on {out['file_gb']:.2f} GB: quick_check {out['quick_check_s']:.1f} s "
        f"(again {out['quick_check_again_s']:.1f} s, quick_check(1) {out['quick_check_1_s']:.1f} s); "
        f"bounded check {out['bounded_check_s']:.2f} s; open {out['open_s']:.2f} s, "
        f"open for a scan {out['open_scan_s']:.2f} s",
        file=sys.stderr,
        flush=True,
    )
    return out


def _bench(url: str, hosts: int, days: int, runs: int, seed: int = 1) -> dict[str, Any]:
    plan = make_plan(hosts, days, seed)
    load_before = _load()
    with open_store(url) as store:
        ingest = _ingest(store, plan, hosts, days)
        ingest["settle_s"] = settle(url)
        reads = _reads(store, hosts, days, runs, seed)
    sqlite_file = url.startswith("sqlite:///")
    return {
        "url": url.split("@")[-1] if "@" in url else "sqlite",
        "backend": "postgresql" if url.startswith("postgresql") else "sqlite",
        "hosts": hosts,
        "days": days,
        **ingest,
        **reads,
        "health": health_costs(url) if sqlite_file else None,
        "load_before": load_before,
        "load_after": _load(),
    }


def reads_only(url: str, hosts: int, days: int, runs: int, seed: int = 1) -> dict[str, Any]:
    """The reads again on a store this benchmark built (``--db URL --reads-only``, the same --hosts and
    --days): its first open (migrations, the picture's tally on a store from before it), what the tally
    costs a finishing scan (refresh, median of 3), then the reads as in a full run."""
    from exwatch.fleet import tally

    load_before = _load()
    t0 = time.perf_counter()
    store = open_store(url)
    first_open = time.perf_counter() - t0
    try:
        refresh = []
        for _ in range(3):
            with store.engine.begin() as conn:
                t0 = time.perf_counter()
                tally.refresh(conn)
                refresh.append(time.perf_counter() - t0)
        print(
            f"  first open {first_open:.2f} s; tally refresh {statistics.median(refresh):.2f} s "
            f"(median of {len(refresh)}; load {_load():.2f})",
            file=sys.stderr,
            flush=True,
        )
        settled = settle(url)
        reads = _reads(store, hosts, days, runs, seed)
    finally:
        store.close()
    return {
        "backend": "postgresql" if url.startswith("postgresql") else "sqlite",
        "hosts": hosts,
        "days": days,
        **reads,
        "reads_only": True,
        "settle_s": settled,
        "first_open_s": first_open,
        "tally_refresh_s": statistics.median(refresh),
        "load_before": load_before,
        "load_after": _load(),
    }


def settle(url: str) -> float | None:
    """PostgreSQL: VACUUM ANALYZE every table before the reads, timed (None on SQLite).  After a big
    ingest autovacuum works through the bulk tables for a minute or more; reads timed during it saw
    one host's history spike (131 ms at 400,000 x 30; 69 ms at 100,000 x 30 during a VACUUM, against
    27 ms without), which measures the vacuum rather than the read."""
    if not url.startswith("postgresql"):
        return None
    from sqlalchemy import create_engine, text

    engine = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    try:
        t0 = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
        spent = time.perf_counter() - t0
    finally:
        engine.dispose()
    print(
        f"  VACUUM ANALYZE before the reads: {spent:.1f} s (load {_load():.2f})", file=sys.stderr, flush=True
    )
    return spent


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def write_results(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Keep every measured configuration in results.json (newest per backend and size) and rewrite RESULTS.md."""
    store_file = args.out.with_name("results.json")
    runs: list[dict[str, Any]] = json.loads(store_file.read_text()) if store_file.exists() else []
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for r in results:
        key = (r["backend"], r["hosts"], r["days"])
        kept = [x for x in runs if (x["backend"], x["hosts"], x["days"]) == key]
        if r.get("reads_only"):
            # the reads of newer code on a store of the same size; the ingest figures stay the kept run's
            r = {**(kept[0] if kept else {}), **r, "reads_measured": stamp, "reads_commit": _commit()}
            r.pop("reads_only")
        else:
            r = {**r, "measured": stamp, "load_average": r.get("load_after", os.getloadavg()[0])}
            for name in ("reads_measured", "reads_commit", "first_open_s", "tally_refresh_s"):
                r.pop(name, None)
        runs = [x for x in runs if (x["backend"], x["hosts"], x["days"]) != key]
        runs.append(r)
    runs.sort(key=lambda x: (x["backend"], x["hosts"] * x["days"]))
    store_file.write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")
    args.out.write_text(render(runs, args.out.with_name("profiles.json")), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


def _commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def render(runs: list[dict[str, Any]], profiles_file: Path) -> str:
    """RESULTS.md from every kept run and profile."""
    lines = [
        "# Store benchmark results",
        "",
        "Written by `benchmarks/store/run.py` (do not edit by hand). "
        + machine_line()
        + "; the load average (1-minute) during each run is given.",
        "",
        "Commands: `.venv/bin/python -m benchmarks.store.run --hosts N --days D` (SQLite) and",
        "`bash scripts/with-postgres.sh .venv/bin/python -m benchmarks.store.run --backend postgresql --hosts N --days D`",
        "(PostgreSQL 15 in the script's throwaway cluster: fsync off, as a benchmark of exwatch rather than of the disk).",
        "Ingest = add_observations + finish_scan of every snapshot, each written once (records of the scanner's shape:",
        "three waves with reasons and fixes, probes, tags; built outside the timing).",
        "Reads (benchmarks/method.py): warmed once, then report and history alternated; the report is `build_report`",
        "(headline, trend, change, breakdowns, 50 hosts at risk, compromise), median and spread of its runs; the",
        "history is `host_history` of 20 random hosts a run, median and max over every host timed.",
        "",
        "| backend | hosts x snapshots | observations | ingest obs/s (goal 50,000) | after the first snapshot "
        "| load during ingest (mean / max) | report (build_report) s, median (min-max) (goal 2) "
        "| host history ms median / max (goal 50) | measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    earlier = [r for r in runs if "ingest_load" not in r and not r.get("reads_measured")]
    runs = [r for r in runs if "ingest_load" in r or r.get("reads_measured")]
    again = [r for r in runs if r.get("reads_measured")]
    for r in runs:
        load = f"{r['ingest_load']:.1f} / {r['ingest_load_max']:.1f}" if "ingest_load" in r else "-"
        spread = (
            f" ({r['report_min_s']:.2f}-{r['report_max_s']:.2f}, {r['read_runs']} runs"
            + (f"; load {r['read_load'][0]:.1f} / {r['read_load'][1]:.1f}" if r.get("read_load") else "")
            + ")"
            if "report_min_s" in r
            else ""
        )
        if r.get("reads_measured"):
            spread += " *"
        lines.append(
            f"| {r['backend']} | {r['hosts']:,} x {r['days']} | {r['hosts'] * r['days']:,} | {_rate(r.get('obs_per_s'))} "
            f"| {_rate(r.get('steady_obs_per_s'))} | {load} | {r['report_s']:.2f}{spread} "
            f"| {r['history_ms']:.1f} / {r['history_max_ms']:.1f} | {r.get('measured', r.get('reads_measured'))} |"
        )
    for r in again:
        lines += [
            "",
            f"\\* {r['backend']} {r['hosts']:,} x {r['days']}: reads measured again {r['reads_measured']} with the code "
            f"of commit {r['reads_commit']} (`--reads-only`), on a store of that size built by this benchmark's records "
            + (
                "(the ingest figures are those of the full run)"
                if "obs_per_s" in r
                else "(its ingest not timed by run.py)"
            )
            + f"; opening the store took {r['first_open_s']:.1f} s in this run (on a store from before migration "
            f"0008 the first open also counts the picture's tally: see FLOOR.md); "
            f"counting the tally, added to every finishing scan, took {r['tally_refresh_s']:.2f} s (median of 3). "
            f"Load (1-minute) {r['load_before']:.1f} before the reads, {r['load_after']:.1f} after."
            + (
                f" The reads were timed after a VACUUM ANALYZE ({r['settle_s']:.0f} s; see `settle` in run.py)."
                if r.get("settle_s") is not None
                else ""
            ),
        ]
    if earlier:
        lines += [
            "",
            "Earlier runs (older code, before this method: reads timed once each, not alternated):",
            "",
            "| backend | hosts x snapshots | ingest obs/s | headline report s | host history ms median / max "
            "| measured | load at the end |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in earlier:
            lines.append(
                f"| {r['backend']} | {r['hosts']:,} x {r['days']} | {r['obs_per_s']:,.0f} | {r['report_s']:.2f} "
                f"| {r['history_ms']:.1f} / {r['history_max_ms']:.1f} | {r['measured']} | {r['load_average']:.1f} |"
            )
    compared = profiles_file.with_name("compare.md")
    if compared.exists():
        lines += [
            "",
            "## Before and after, side by side (`python -m benchmarks.store.compare`)",
            "",
            "The machine's speed moves by half within an hour (shared cores), so figures of different hours",
            "do not compare; this runs two revisions alternately, after benchmarks/method.",
            "",
            compared.read_text(encoding="utf-8").strip(),
        ]
    health = [r for r in runs if r.get("health")]
    if health:
        lines += [
            "",
            "## The store's health check on a full-size file (SQLite)",
            "",
            "`check_store` runs before every `scan` and at `serve` start; opening a store reads one row of every table.",
            "",
            "| hosts x snapshots | file GB | quick_check s (first / again) | quick_check(1) s | bounded check s (budget) "
            "| one row per table and index s | open s | open for a scan s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in health:
            h = r["health"]
            lines.append(
                f"| {r['hosts']:,} x {r['days']} | {h['file_gb']:.2f} | {h['quick_check_s']:.1f} / {h['quick_check_again_s']:.1f} "
                f"| {h['quick_check_1_s']:.1f} | {h['bounded_check_s']:.2f} ({h['budget_s']} s) | {h['cheap_check_s']:.2f} "
                f"| {h['open_s']:.2f} | {h['open_scan_s']:.2f} |"
            )
    if profiles_file.exists():
        profiles = json.loads(profiles_file.read_text())
        lines += ["", "## Where the ingest time goes (cProfile, `python -m benchmarks.store.profile`)", ""]
        for label, p in profiles.items():
            lines += [f"### {label}", "", p["summary"], "", *p["lines"], ""]
    floor = profiles_file.with_name("FLOOR.md")
    if floor.exists():
        lines += ["", floor.read_text(encoding="utf-8").strip()]
    last = runs[-1] if runs else None
    if last:
        lines += [
            "",
            f"Headline of the {last['backend']} {last['hosts']:,} x {last['days']} run: {last['headline']}",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=400_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--db", action="append", default=None, help="store URL (repeatable)")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "both"),
        default=None,
        help="without --db: SQLite, PostgreSQL (EXWATCH_TEST_PG_URL) or both (default: both when that is set)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each read (at least 3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--no-write", action="store_true", help="print only, do not write RESULTS.md")
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from the kept results")
    parser.add_argument(
        "--reads-only",
        action="store_true",
        help="with --db URL of a store this benchmark built with the same --hosts and --days (keep one with "
        "--db sqlite:////tmp/PATH.db: a given file is kept): time only the reads",
    )
    args = parser.parse_args()
    if args.render:
        runs = json.loads(args.out.with_name("results.json").read_text())
        args.out.write_text(render(runs, args.out.with_name("profiles.json")), encoding="utf-8")
        return 0
    if args.runs < 3:
        parser.error("--runs must be at least 3 (a median)")
    if args.reads_only and not args.db:
        parser.error("--reads-only needs --db URL of a store this benchmark built")
    tmp = tempfile.mkdtemp(prefix="exwatch-bench-")
    pg = os.environ.get("EXWATCH_TEST_PG_URL")
    backend = args.backend or ("both" if pg else "sqlite")
    if args.db:
        urls = args.db
    else:
        urls = [f"sqlite:///{tmp}/bench.db"] if backend in ("sqlite", "both") else []
        if backend in ("postgresql", "both"):
            if not pg:
                parser.error("PostgreSQL needs EXWATCH_TEST_PG_URL (run through scripts/with-postgres.sh)")
            urls.append(pg)
    print(machine_line() + f"; load average {_load():.2f}", file=sys.stderr, flush=True)
    results = []
    try:
        results = run_all(urls, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the SQLite file of a full run is gigabytes
    if not args.no_write:
        write_results(results, args)
    return 0


def run_all(urls: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for url in urls:
        print(
            f"== {url.split('@')[-1]}: {args.hosts:,} hosts x {args.days} snapshots",
            file=sys.stderr,
            flush=True,
        )
        if args.reads_only:
            r = reads_only(url, args.hosts, args.days, args.runs)
            results.append(r)
            print(
                f"{r['backend']}: headline report {r['report_s']:.2f} s median of {r['read_runs']} "
                f"({r['report_min_s']:.2f}-{r['report_max_s']:.2f}; goal 2 s); host history {r['history_ms']:.1f} ms "
                f"median, {r['history_max_ms']:.1f} ms max over {r['history_hosts']} hosts (goal 50 ms); "
                f"load {r['load_before']:.2f} before, {r['load_after']:.2f} after"
            )
            continue
        r = bench(url, args.hosts, args.days, args.runs)
        results.append(r)
        print(
            f"{r['backend']}: {r['observations']:,} observations in {r['ingest_s'] + r['finish_s']:.1f} s "
            f"= {r['obs_per_s']:,.0f} obs/s (goal 50,000: x{r['obs_per_s'] / 50_000:.2f}; after the first "
            f"snapshot {r['steady_obs_per_s'] or 0:,.0f} obs/s; load {r['ingest_load']:.2f} mean); "
            f"headline report {r['report_s']:.2f} s median of {r['read_runs']} "
            f"({r['report_min_s']:.2f}-{r['report_max_s']:.2f}; goal 2 s); host history {r['history_ms']:.1f} ms "
            f"median, {r['history_max_ms']:.1f} ms max over {r['history_hosts']} hosts (goal 50 ms); "
            f"load {r['load_before']:.2f} before, {r['load_after']:.2f} after"
        )
    return results


if __name__ == "__main__":
    sys.exit(main())
