"""Fleet metrics as pure functions: protected share and its bounds, week-over-week change, doubling time.

Definitions (exposure_timeline.md, section 6, and README "track"):

- **classified** = vulnerable + patched + mitigated: hosts whose state for the wave is known and to which
  the wave applies.  ``not_affected`` hosts are outside the wave; ``unknown`` hosts (e.g. only the CU is
  known and that CU had a security update) are not classified.
- **protected_share** = (patched + mitigated) / classified.
- **protected_bounds** = the share when every unknown host is counted as unprotected (lower) and as
  protected (upper): (p + m) / (classified + unknown) and (p + m + unknown) / (classified + unknown).
- **change_7d** against the snapshot nearest to 7 days earlier, three labelled readings of "improvement"
  (Microsoft's "43%" of 2021-03-22 is one of them, undefined by Microsoft): ``delta_pp`` = percentage points
  of the protected share; ``unprotected_rel_change`` = relative change of the vulnerable count
  (V[t] - V[t-7]) / V[t-7]; ``protected_share_rel_change`` = relative change of the protected share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from exwatch.errors import InputError
from exwatch.fleet.jsontypes import JSONObject

STATES = ("vulnerable", "patched", "mitigated", "unknown", "not_affected")
PROTECTED = ("patched", "mitigated")  # the states that count as protected in the share

# The week-over-week comparison accepts a snapshot within this distance of "7 days earlier".
WEEK = timedelta(days=7)
WEEK_TOLERANCE = timedelta(days=3, hours=12)


@dataclass(frozen=True)
class WaveCounts:
    """Counts of hosts per state for one wave in one snapshot."""

    hosts: int = 0
    vulnerable: int = 0
    patched: int = 0
    mitigated: int = 0
    unknown: int = 0
    not_affected: int = 0
    # hosts whose verdict is older than the max age: shown apart, outside every other count
    stale: int = 0

    @property
    def protected(self) -> int:
        return self.patched + self.mitigated

    @property
    def classified(self) -> int:
        return self.vulnerable + self.patched + self.mitigated

    @property
    def protected_share(self) -> float | None:
        """(patched + mitigated) / classified, or None when nothing is classified."""
        return self.protected / self.classified if self.classified else None

    @property
    def protected_bounds(self) -> tuple[float, float] | None:
        """The share with every unknown host counted unprotected (low) and protected (high)."""
        total = self.classified + self.unknown
        if not total:
            return None
        return self.protected / total, (self.protected + self.unknown) / total

    def to_dict(self) -> JSONObject:
        bounds = self.protected_bounds
        return {
            "hosts": self.hosts,
            "vulnerable": self.vulnerable,
            "patched": self.patched,
            "mitigated": self.mitigated,
            "unknown": self.unknown,
            "not_affected": self.not_affected,
            "stale": self.stale,
            "classified": self.classified,
            "protected_share": self.protected_share,
            "protected_bounds": list(bounds) if bounds else None,
        }


def counts_from(states: dict[str, int], hosts: int | None = None) -> WaveCounts:
    """WaveCounts from a {state: count} map (states outside STATES are ignored)."""
    return WaveCounts(
        hosts=hosts if hosts is not None else sum(states.get(s, 0) for s in STATES),
        **{s: int(states.get(s, 0)) for s in STATES},
    )


def nearest_earlier(
    times: Sequence[datetime], at: datetime, *, back: timedelta = WEEK, tolerance: timedelta = WEEK_TOLERANCE
) -> int | None:
    """Index of the time nearest to ``at - back`` among those before ``at`` and within ``tolerance``.

    Ties go to the earlier snapshot (a full week rather than less).
    """
    target = at - back
    best: tuple[timedelta, datetime, int] | None = None
    for i, when in enumerate(times):
        if when >= at:
            continue
        gap = abs(when - target)
        if gap > tolerance:
            continue
        key = (gap, when, i)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


@dataclass(frozen=True)
class Change:
    """The change of one wave's counts from an earlier picture to a later one, in three readings
    (None where undefined): percentage points of the protected share, the relative change of the
    vulnerable count, and the relative change of the protected share."""

    delta_pp: float | None
    unprotected_rel_change: float | None
    protected_share_rel_change: float | None
    vulnerable_before: int
    vulnerable_now: int
    classified_before: int
    classified_now: int
    universe_change: int

    def to_dict(self) -> JSONObject:
        return {
            "delta_pp": self.delta_pp,
            "delta_pp_label": "change of the protected share in percentage points",
            "unprotected_rel_change": self.unprotected_rel_change,
            "unprotected_rel_change_label": "relative change of the vulnerable count (V[t] - V[t-7d]) / V[t-7d]",
            "protected_share_rel_change": self.protected_share_rel_change,
            "protected_share_rel_change_label": "relative change of the protected share",
            "vulnerable_before": self.vulnerable_before,
            "vulnerable_now": self.vulnerable_now,
            "classified_before": self.classified_before,
            "classified_now": self.classified_now,
            "universe_change": self.universe_change,
        }


def change(now: WaveCounts, before: WaveCounts) -> Change:
    """The three labelled readings of the change from ``before`` to ``now`` (None where undefined)."""
    share_now, share_before = now.protected_share, before.protected_share
    delta_pp = None if share_now is None or share_before is None else (share_now - share_before) * 100
    rel_vuln = (now.vulnerable - before.vulnerable) / before.vulnerable if before.vulnerable else None
    rel_share = share_now / share_before - 1 if share_now is not None and share_before else None
    return Change(
        delta_pp=delta_pp,
        unprotected_rel_change=rel_vuln,
        protected_share_rel_change=rel_share,
        vulnerable_before=before.vulnerable,
        vulnerable_now=now.vulnerable,
        classified_before=before.classified,
        classified_now=now.classified,
        universe_change=now.hosts - before.hosts,
    )


# -- the doubling time of exploitation attempts ------------------------------------------------


def t_cdf(x: float, df: int) -> float:
    """The CDF of Student's t with ``df`` degrees of freedom (Simpson's rule on the density)."""
    if df < 1:
        raise InputError("the t distribution needs at least one degree of freedom")
    if x == 0:
        return 0.5
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    # Integrate the density from 0 to |x| after u = atan(t), which maps the heavy tails to a
    # bounded interval: dt = (1 + t^2) du.
    import numpy as np  # here, not at the top: a scan or a report without a fit never pays for it

    upper = math.atan(abs(x))
    u = np.linspace(0.0, upper, 4001)
    tt = np.tan(u)
    dens = np.exp(log_c - (df + 1) / 2 * np.log1p(tt * tt / df)) * (1 + tt * tt)
    h = upper / 4000
    area = h / 3 * (dens[0] + dens[-1] + 4 * dens[1:-1:2].sum() + 2 * dens[2:-1:2].sum())
    return float(0.5 + area if x > 0 else 0.5 - area)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t (bisection on t_cdf)."""
    if not 0 < p < 1:
        raise InputError("a quantile needs 0 < p < 1")
    if p == 0.5:
        return 0.0
    lo, hi = -1e3, 1e3
    for _ in range(100):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class DoublingFit:
    """log(attempts per hour) = a + b * hours: the growth rate b and the doubling time ln 2 / b."""

    points: int
    rate_per_hour: float
    rate_ci: tuple[float, float]
    doubling_hours: float | None
    doubling_ci: tuple[float | None, float | None]
    intercept: float
    r_squared: float
    start: datetime | None = None
    hours: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    @property
    def end(self) -> datetime | None:
        """The last hour of the fit's window."""
        return self.start + timedelta(hours=max(self.hours)) if self.start and self.hours else None

    def to_dict(self) -> JSONObject:
        return {
            "points": self.points,
            "rate_per_hour": self.rate_per_hour,
            "rate_ci95": list(self.rate_ci),
            "doubling_hours": self.doubling_hours,
            "doubling_ci95": list(self.doubling_ci),
            "r_squared": self.r_squared,
            "intercept": self.intercept,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }


def fit_doubling(
    hours: Sequence[float], counts: Sequence[int], *, start: datetime | None = None, level: float = 0.95
) -> DoublingFit:
    """Least-squares fit of log counts on time; hours with no attempt are left out (log 0 is undefined).

    The slope's confidence interval is b ± t(1 - (1-level)/2, n-2) * se(b), se(b) = sqrt(s² / Sxx),
    s² = residual sum of squares / (n - 2).  The doubling time's interval is ln 2 over the slope's
    interval, reversed; a slope interval reaching zero or below leaves the upper end unbounded (None).
    """
    pairs = [(float(h), int(c)) for h, c in zip(hours, counts, strict=True) if c > 0]
    if len(pairs) < 3:
        raise InputError(f"a doubling time needs at least 3 hours with attempts, got {len(pairs)}")
    import numpy as np

    x = np.array([p[0] for p in pairs])
    y = np.log(np.array([p[1] for p in pairs], dtype=float))
    design = np.column_stack([np.ones_like(x), x])
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - (a + b * x)
    n = len(x)
    sxx = float(((x - x.mean()) ** 2).sum())
    s2 = float((residuals**2).sum()) / (n - 2)
    se = math.sqrt(s2 / sxx) if sxx else math.inf
    tq = t_quantile(1 - (1 - level) / 2, n - 2)
    lo, hi = float(b) - tq * se, float(b) + tq * se
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((residuals**2).sum()) / ss_tot if ss_tot else 1.0
    ln2 = math.log(2)
    doubling = ln2 / float(b) if b > 0 else None
    ci = (ln2 / hi if hi > 0 else None, ln2 / lo if lo > 0 else None)
    return DoublingFit(
        points=n,
        rate_per_hour=float(b),
        rate_ci=(lo, hi),
        doubling_hours=doubling,
        doubling_ci=ci,
        intercept=float(a),
        r_squared=r2,
        start=start,
        hours=[p[0] for p in pairs],
        counts=[p[1] for p in pairs],
    )
