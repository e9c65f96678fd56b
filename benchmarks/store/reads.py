"""Where the report's time goes on a kept store: ``python -m benchmarks.store.reads --db URL [--runs 3]``.

Times each part of ``build_report`` alone (fleet series, hosts at risk, compromise, attempts, the
breakdowns from the store's tally, in one exact pass, and one exact pass each as before), then the
whole report, medians of ``--runs``, with the load average; checks that the report with the tally and
with the exact pass are the same.  Keep a store with ``python -m benchmarks.store.run --db
sqlite:////tmp/bench.db ...`` (a given file is kept).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from exwatch.fleet import open_store
from exwatch.fleet import queries as q
from exwatch.report import ReportOptions, build_report, model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="store URL")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    store = open_store(args.db, profile="read")
    opts = ReportOptions(limit=50)
    report = build_report(store, opts)
    wave = report.wave
    if wave is None:
        print("no finished scan in the store", file=sys.stderr)
        return 2
    keys = list(report.breakdown)
    exact_breakdowns = q.breakdowns

    def exact_report() -> dict[str, Any]:
        def exact(*a: Any, **k: Any) -> Any:
            return exact_breakdowns(*a, **{**k, "tallied": False})

        q.breakdowns = exact  # type: ignore[assignment]
        try:
            return build_report(store, opts).to_dict()
        finally:
            q.breakdowns = exact_breakdowns  # type: ignore[assignment]

    parts: dict[str, Callable[[], Any]] = {
        "fleet series (picture_summary)": lambda: q.fleet_series(store, max_age=opts.max_age),
        "hosts at risk (50)": lambda: q.hosts_at_risk(store, limit=50, max_age=opts.max_age),
        "compromise": lambda: q.compromise(store),
        "attempts per hour": lambda: model._attempts(store, opts),
        "breakdowns from the tally": lambda: q.breakdowns(store, wave, keys, max_age=opts.max_age),
        "breakdowns, one exact pass": lambda: q.breakdowns(
            store, wave, keys, max_age=opts.max_age, tallied=False
        ),
        "breakdowns, one exact pass each": lambda: [
            q.breakdowns(store, wave, [k], max_age=opts.max_age, tallied=False) for k in keys
        ],
        "build_report": lambda: build_report(store, opts),
        "build_report, exact breakdowns": exact_report,
    }
    with_tally = build_report(store, opts).to_dict()
    without = exact_report()
    for doc in (with_tally, without):
        doc.pop("generated_at")
    assert with_tally == without, "the tally's report differs from the exact one"
    times: dict[str, list[float]] = {k: [] for k in parts}
    load_before = os.getloadavg()[0]
    for _ in range(args.runs):
        for name, part in parts.items():
            t0 = time.perf_counter()
            part()
            times[name].append(time.perf_counter() - t0)
    print(
        f"breakdowns {', '.join(keys)} of {wave}; load {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print("| part of build_report | s, median | min-max |\n|---|---|---|")
    for name, spent in times.items():
        print(f"| {name} | {statistics.median(spent):.3f} | {min(spent):.3f}-{max(spent):.3f} |")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
