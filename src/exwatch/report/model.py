"""The report as one frozen value (``Report``), assembled from the fleet read API; the renderers only
format it, and ``Report.to_dict`` is its JSON (``exwatch report --format json``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from exwatch.config import mask_url
from exwatch.errors import InputError
from exwatch.fleet import queries as q
from exwatch.fleet.jsontypes import JSONObject
from exwatch.fleet.metrics import Change, DoublingFit, WaveCounts, change, fit_doubling, nearest_earlier
from exwatch.fleet.rows import Compromise, HostState, Picture
from exwatch.fleet.store import Store
from exwatch.fleet.tally import TAG_KEYS

# Display order of the waves (the kb's own order when it is importable).
try:
    from exwatch.kb import WAVES as _KB_WAVES

    WAVE_ORDER: tuple[str, ...] = tuple(w.id for w in _KB_WAVES)
    WAVE_NAMES: dict[str, str] = {w.id: w.name for w in _KB_WAVES}
except ImportError:  # pragma: no cover - kb is part of the package
    WAVE_ORDER = ("proxylogon", "proxyshell", "proxynotshell")
    WAVE_NAMES = {}

# The attempts fit is drawn only from this many hours with attempts, and only when it explains the
# counts (R² at least MIN_FIT_R2) and its 95% interval for the doubling time is bounded.
MIN_FIT_POINTS = 6
MIN_FIT_R2 = 0.5

DEFINITIONS = {
    "fleet_picture": "at each scan's time, every known host's latest observation at or before it, per "
    "(host, port) service, folded per host (an Exchange answer outranks refused or non-Exchange ports); "
    "not only the hosts that scan saw",
    "stale": "a host whose latest verdict is older than the max age (default 30 days) before the picture's "
    "time: shown and counted apart, left out of the share",
    "retired": "a host retired with `exwatch hosts retire` leaves the fleet from its retirement date",
    "classified": "vulnerable + patched + mitigated: hosts whose state for the wave is known and to which it applies",
    "protected_share": "(patched + mitigated) / classified",
    "protected_bounds": "the share with every unknown host counted unprotected (low) and protected (high)",
    "change_7d": "against the snapshot nearest to 7 days earlier (within 3.5 days); three labelled readings",
    "exposure_window": "first snapshot that saw the host vulnerable to the first later one that saw it protected",
    "compromised_before_protected": "first finding (confirmed or likely) earlier than the end of the exposure "
    "window, or the host never seen protected",
    "attempts_per_hour": "hunt findings of confidence confirmed or likely with a time, across hosts, "
    "counted per hour",
    "doubling_time": "ln 2 / b of the least-squares fit log(attempts per hour) = a + b * hours, over the chosen "
    "window (default: first hour with attempts to the busiest hour; hours without attempts left out); 95% "
    "interval from Student's t with n - 2 degrees of freedom; not given from fewer than "
    f"{MIN_FIT_POINTS} hours with attempts, nor when R² < {MIN_FIT_R2} or the interval is unbounded",
}


@dataclass(frozen=True)
class ReportOptions:
    """What the report covers."""

    since: datetime | None = None
    wave: str | None = None
    tag: tuple[str, str] | None = None
    limit: int | None = None
    fit_since: datetime | None = None
    fit_until: datetime | None = None
    by_build: bool = False
    max_age: timedelta | None = q.DEFAULT_MAX_AGE


def wave_name(wave: str) -> str:
    """The display name of a wave id."""
    return WAVE_NAMES.get(wave, wave)


def _wave_key(wave: str) -> tuple[int, str]:
    return (WAVE_ORDER.index(wave) if wave in WAVE_ORDER else len(WAVE_ORDER), wave)


@dataclass(frozen=True)
class WeekChange:
    """The latest picture against the one nearest to 7 days earlier, per wave."""

    scan: int
    time: datetime
    against_scan: int
    against_time: datetime
    days: float
    waves: Mapping[str, Change]

    def to_dict(self) -> JSONObject:
        return {
            "scan": self.scan,
            "time": self.time.isoformat(),
            "against_scan": self.against_scan,
            "against_time": self.against_time.isoformat(),
            "days": self.days,
            "waves": {w: c.to_dict() for w, c in self.waves.items()},
        }


@dataclass(frozen=True)
class Attempts:
    """Exploitation attempts per hour and the doubling-time fit over a window (or why there is none)."""

    per_hour: tuple[tuple[datetime, int], ...]
    fit: DoublingFit | None
    fit_error: str | None
    fit_since: datetime | None = None
    fit_until: datetime | None = None

    @property
    def total(self) -> int:
        return sum(n for _, n in self.per_hour)

    def to_dict(self) -> JSONObject:
        return {
            "per_hour": [[h.isoformat(), n] for h, n in self.per_hour],
            "fit": self.fit.to_dict() if self.fit else None,
            "fit_error": self.fit_error,
            "fit_window": [
                self.fit_since.isoformat() if self.fit_since else None,
                self.fit_until.isoformat() if self.fit_until else None,
            ],
        }


Breakdown = Mapping[str, Mapping[str, WaveCounts]]


@dataclass(frozen=True)
class Report:
    """Every figure of the report (the headline is derived from them)."""

    generated_at: datetime
    store: str
    options: ReportOptions
    wave: str | None
    snapshots: tuple[Picture, ...]
    change_7d: WeekChange | None
    hosts_at_risk: tuple[HostState, ...]
    compromise: tuple[Compromise, ...]
    breakdown: Breakdown
    attempts: Attempts
    definitions: Mapping[str, str] = field(default_factory=lambda: DEFINITIONS)

    @property
    def latest(self) -> Picture | None:
        return self.snapshots[-1] if self.snapshots else None

    @property
    def waves(self) -> list[str]:
        """The waves of the fleet pictures, in the knowledge base's order."""
        return sorted({w for s in self.snapshots for w in s.waves}, key=_wave_key)

    @property
    def compromised_before_protected(self) -> tuple[Compromise, ...]:
        return tuple(c for c in self.compromise if c.compromised_before_protected)

    @property
    def headline(self) -> str:
        return headline(self)

    @property
    def headline_level(self) -> str:
        return headline_level(self)

    @property
    def exposed(self) -> bool:
        """Servers exposed in the fleet picture, or compromised before they were protected."""
        return bool(self.hosts_at_risk or self.compromised_before_protected)

    def to_dict(self) -> JSONObject:
        opts = self.options
        return {
            "generated_at": self.generated_at.isoformat(),
            "store": self.store,
            "filters": {
                "since": opts.since.isoformat() if opts.since else None,
                "wave": opts.wave,
                "tag": f"{opts.tag[0]}={opts.tag[1]}" if opts.tag else None,
                "max_age_days": opts.max_age.total_seconds() / 86400 if opts.max_age is not None else None,
            },
            "unit": "hosts",
            "wave": self.wave,
            "snapshots": [s.to_dict() for s in self.snapshots],
            "change_7d": self.change_7d.to_dict() if self.change_7d else None,
            "hosts_at_risk": [h.to_dict() for h in self.hosts_at_risk],
            "compromised_before_protected": [c.to_dict() for c in self.compromised_before_protected],
            "compromise": [c.to_dict() for c in self.compromise],
            "breakdown": {k: {g: c.to_dict() for g, c in v.items()} for k, v in self.breakdown.items()},
            "attempts": self.attempts.to_dict(),
            "definitions": dict(self.definitions),
            "headline": self.headline,
            "headline_level": self.headline_level,
        }


def build_report(store: Store, options: ReportOptions | None = None) -> Report:
    """Every figure of the report, read through the fleet read API."""
    opts = options or ReportOptions()
    snaps = q.fleet_series(store, since=opts.since, tag=opts.tag, max_age=opts.max_age)
    if opts.wave:
        snaps = [replace(s, waves={w: c for w, c in s.waves.items() if w == opts.wave}) for s in snaps]
    waves = sorted({w for s in snaps for w in s.waves}, key=_wave_key)
    latest = snaps[-1] if snaps else None
    main_wave = opts.wave or next(
        (w for w in waves if latest and latest.waves.get(w, WaveCounts()).classified),
        waves[0] if waves else None,
    )
    at_risk = (
        q.hosts_at_risk(
            store,
            waves=[opts.wave] if opts.wave else None,
            tag=opts.tag,
            limit=opts.limit,
            max_age=opts.max_age,
        )
        if latest
        else []
    )
    compromise = [c for c in q.compromise(store, tag=opts.tag) if not opts.wave or c.wave == opts.wave]
    return Report(
        generated_at=datetime.now(UTC),
        store=mask_url(store.url),
        options=opts,
        wave=main_wave,
        snapshots=tuple(snaps),
        change_7d=_week_change(snaps, waves),
        hosts_at_risk=tuple(at_risk),
        compromise=tuple(compromise),
        breakdown=_breakdowns(store, opts, main_wave) if latest is not None else {},
        attempts=_attempts(store, opts),
    )


def _week_change(snaps: list[Picture], waves: list[str]) -> WeekChange | None:
    """The latest picture against the one nearest to 7 days earlier (None without one)."""
    if not snaps:
        return None
    latest = snaps[-1]
    idx = nearest_earlier([s.time for s in snaps], latest.time)
    if idx is None:
        return None
    before = snaps[idx]
    return WeekChange(
        scan=latest.scan_id,
        time=latest.time,
        against_scan=before.scan_id,
        against_time=before.time,
        days=round((latest.time - before.time).total_seconds() / 86400, 2),
        waves={
            w: change(latest.waves.get(w, WaveCounts()), before.waves.get(w, WaveCounts())) for w in waves
        },
    )


def _attempts(store: Store, opts: ReportOptions) -> Attempts:
    """Attempts per hour and the doubling fit over the window (default: the growth phase, from the
    first hour with attempts to the busiest hour), or why no fit is given."""
    per_hour = q.attempts_per_hour(store, tag=opts.tag)
    window = [(h, n) for h, n in per_hour if _inside(h, opts.fit_since, opts.fit_until)]
    if window and opts.fit_since is None and opts.fit_until is None:
        peak = max(range(len(window)), key=lambda i: window[i][1])
        window = window[: peak + 1]
    fit, error = _fit(window)
    return Attempts(tuple(per_hour), fit, error, opts.fit_since, opts.fit_until)


def _fit(window: list[tuple[datetime, int]]) -> tuple[DoublingFit | None, str | None]:
    """The doubling fit over the window when it is reliable, else the reason there is none."""
    if not window:
        return None, None
    hours_with_attempts = sum(1 for _, n in window if n > 0)
    if hours_with_attempts < MIN_FIT_POINTS:
        return None, (
            f"too few hours with attempts for a growth fit ({hours_with_attempts}; at least "
            f"{MIN_FIT_POINTS} needed)"
        )
    start = window[0][0]
    try:
        fitted = fit_doubling(
            [(h - start).total_seconds() / 3600 for h, _ in window], [n for _, n in window], start=start
        )
    except InputError as exc:
        return None, str(exc)
    weak = []
    if fitted.r_squared < MIN_FIT_R2:
        weak.append(f"R² {fitted.r_squared:.2f} below {MIN_FIT_R2}")
    if fitted.doubling_hours is not None and None in fitted.doubling_ci:
        weak.append("its 95% interval for the doubling time is unbounded")
    if weak:
        return None, f"no reliable growth fit over {fitted.points} hours: " + "; ".join(weak)
    return fitted, None


def _breakdowns(store: Store, opts: ReportOptions, wave: str | None) -> dict[str, dict[str, WaveCounts]]:
    """The current picture of the headline wave per CU, per build (``--by-build``) and per tag key."""
    if wave is None:
        return {}
    keys = ["cu", *(["build"] if opts.by_build else [])]
    keys += [f"tag:{k}" for k in q.tag_keys(store, TAG_KEYS)]
    # from the store's tally of the picture, or one pass over it for every grouping
    out = q.breakdowns(store, wave, keys, tag=opts.tag, max_age=opts.max_age)
    return {k: v for k, v in out.items() if not k.startswith("tag:") or set(v) - {"(untagged)"}}


def headline_level(report: Report) -> str:
    """How the headline should look: ``unknown`` (nothing classified: never shown as good),
    ``exposed`` (some server of the wave is vulnerable) or ``protected`` (every classified one is)."""
    latest, wave = report.latest, report.wave
    if latest is None or wave is None:
        return "unknown"
    counts = latest.waves.get(wave)
    if not counts or not counts.classified:
        return "unknown"
    return "exposed" if counts.vulnerable else "protected"


def _inside(when: datetime, since: datetime | None, until: datetime | None) -> bool:
    if since is not None and when < _aware(since):
        return False
    return until is None or when < _aware(until)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def headline(report: Report) -> str:
    """The one sentence: share, denominator, and both readings of the week-over-week change."""
    latest, wave = report.latest, report.wave
    if latest is None or wave is None:
        since = report.options.since
        if since is not None:  # the store may hold scans, only none in the window
            return f"No finished scan since {_aware(since).isoformat()} (--since): nothing to report in that window."
        return "No finished scan in the store yet: run `exwatch scan` first."
    day = latest.time.isoformat()[:10]
    counts = latest.waves.get(wave)
    if counts is None or not counts.classified:
        text = f"{wave_name(wave)}: no classified server in the fleet on {day}"
        if latest.stale:
            text += f" ({latest.stale:,} stale hosts not counted)"
        return text + "."
    text = (
        f"{wave_name(wave)}: {_pct(counts.protected_share)} of {counts.classified:,} classified servers "
        f"patched or mitigated"
    )
    text += _headline_change(report.change_7d, wave)
    bounds = counts.protected_bounds
    text += f" on {day}"
    if counts.unknown and bounds:
        text += f"; {counts.unknown:,} unknown put it between {_pct(bounds[0])} and {_pct(bounds[1])}"
    if latest.stale:
        text += f"; {latest.stale:,} stale hosts (not re-seen within the max age) not counted"
    return text + "."


def _headline_change(c7: WeekChange | None, wave: str) -> str:
    if c7 is None or wave not in c7.waves:
        return " (no snapshot about 7 days earlier to compare with)"
    ch = c7.waves[wave]
    parts = []
    if ch.delta_pp is not None:
        parts.append(f"{ch.delta_pp:+.1f} pp")
    if ch.unprotected_rel_change is not None:
        parts.append(f"vulnerable count {ch.unprotected_rel_change * 100:+.0f}%")
    when = "7 days" if abs(c7.days - 7) < 0.01 else f"{c7.days:g} days"
    if parts:
        return f" ({', '.join(parts)} against {when} earlier, {c7.against_time.isoformat()[:10]})"
    return ""
