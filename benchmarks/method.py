"""The method every benchmark follows: warm each contestant, alternate them, take medians of N runs.

A comparison measured once per contestant, one after the other, mostly measures the page cache and the
other work on the machine: the first contestant reads cold files, the second warm ones, and a burst of
load lands on one of them only. So every comparison here

1. runs each contestant once untimed (the warm-up: page cache, imports, compiled rules on disk);
2. then runs them in turn, A B C A B C ..., ``runs`` times each (at least 3);
3. reports the median of each and the ratios of medians, with the spread (min and max) and the load
   average before and after, so that a reader can tell a quiet run from a noisy one.

Timings are never asserted anywhere: machines here are shared and noisy.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Contestant:
    """One way of doing the work: a command line, or a function returning details of its run."""

    name: str
    command: Sequence[str] | None = None
    function: Callable[[], dict[str, Any]] | None = None
    env: dict[str, str] | None = None

    def run_once(self) -> tuple[float, dict[str, Any]]:
        """Seconds of wall time and what the run reported (exit code and output for a command)."""
        t0 = time.perf_counter()
        if self.command is not None:
            env = {**os.environ, **self.env} if self.env else None
            proc = subprocess.run(list(self.command), capture_output=True, text=True, check=False, env=env)
            seconds = time.perf_counter() - t0
            return seconds, {"exit": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
        assert self.function is not None
        detail = self.function()
        return time.perf_counter() - t0, detail


@dataclass
class Timing:
    """Every timed run of one contestant."""

    name: str
    seconds: list[float] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def spread(self) -> str:
        return f"{min(self.seconds):.2f}-{max(self.seconds):.2f}"


@dataclass
class Comparison:
    """The outcome of :func:`compare`."""

    timings: dict[str, Timing]
    runs: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    def median(self, name: str) -> float:
        return self.timings[name].median

    def ratio(self, numerator: str, denominator: str) -> float:
        """``median(numerator) / median(denominator)``."""
        return self.median(numerator) / self.median(denominator)

    def table(self) -> list[str]:
        """Markdown rows: contestant, median, min-max, runs."""
        rows = ["| Contestant | Median (s) | Min-max (s) | Runs |", "|---|---|---|---|"]
        for t in self.timings.values():
            rows.append(f"| {t.name} | {t.median:.2f} | {t.spread()} | {len(t.seconds)} |")
        return rows

    def load_text(self) -> str:
        b, a = self.load_before, self.load_after
        return f"load average {b[0]:.2f} before, {a[0]:.2f} after (1-minute), {os.cpu_count()} cores"


def compare(
    contestants: Sequence[Contestant],
    *,
    runs: int = 3,
    warm: bool = True,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Warm every contestant, then time them alternately ``runs`` times each."""
    if runs < 3:
        raise ValueError("at least 3 runs, to take a median")
    load_before = os.getloadavg()
    if warm:
        for c in contestants:
            seconds, _ = c.run_once()
            log(f"  warm-up {c.name}: {seconds:.2f} s")
    timings = {c.name: Timing(c.name) for c in contestants}
    for i in range(runs):
        for c in contestants:
            seconds, detail = c.run_once()
            timings[c.name].seconds.append(seconds)
            timings[c.name].last = detail
            log(f"  run {i + 1}/{runs} {c.name}: {seconds:.2f} s")
    return Comparison(timings, runs, load_before, os.getloadavg())


def machine_line() -> str:
    """One sentence naming the machine, for RESULTS.md."""
    return (
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work, Python {platform.python_version()}"
    )
