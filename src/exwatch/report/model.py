"""The report as one plain dict, assembled from the store's SQL aggregates (renderers only format it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from exwatch.config import mask_url
from exwatch.errors import InputError
from exwatch.fleet import Store
from exwatch.fleet import queries as q
from exwatch.fleet.metrics import WaveCounts, change, fit_doubling, nearest_earlier

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


def build_report(store: Store, options: ReportOptions | None = None) -> dict[str, Any]:
    """Every figure of the report as JSON-ready values."""
    opts = options or ReportOptions()
    snaps = q.fleet_series(store, since=opts.since, tag=opts.tag, max_age=opts.max_age)
    if opts.wave:
        for snap in snaps:
            snap.waves = {w: c for w, c in snap.waves.items() if w == opts.wave}
    waves = sorted({w for s in snaps for w in s.waves}, key=_wave_key)
    latest = snaps[-1] if snaps else None
    main_wave = opts.wave or next(
        (w for w in waves if latest and latest.waves.get(w, WaveCounts()).classified),
        waves[0] if waves else None,
    )
    change_7d = None
    if latest is not None:
        idx = nearest_earlier([s.time for s in snaps], latest.time)
        if idx is not None:
            before = snaps[idx]
            change_7d = {
                "scan": latest.scan_id,
                "time": latest.time.isoformat(),
                "against_scan": before.scan_id,
                "against_time": before.time.isoformat(),
                "days": round((latest.time - before.time).total_seconds() / 86400, 2),
                "waves": {
                    w: change(latest.waves.get(w, WaveCounts()), before.waves.get(w, WaveCounts()))
                    for w in waves
                },
            }
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
    compromise = [c for c in q.compromise(store, tag=opts.tag) if not opts.wave or c["wave"] == opts.wave]
    per_hour = q.attempts_per_hour(store, tag=opts.tag)
    fit = None
    fit_error = None
    window = [(h, n) for h, n in per_hour if _inside(h, opts.fit_since, opts.fit_until)]
    if window and opts.fit_since is None and opts.fit_until is None:
        # Default window: the growth phase, from the first hour with attempts to the busiest hour.
        peak = max(range(len(window)), key=lambda i: window[i][1])
        window = window[: peak + 1]
    hours_with_attempts = sum(1 for _, n in window if n > 0)
    if window and hours_with_attempts < MIN_FIT_POINTS:
        fit_error = (
            f"too few hours with attempts for a growth fit ({hours_with_attempts}; at least "
            f"{MIN_FIT_POINTS} needed)"
        )
    elif window:
        start = window[0][0]
        try:
            fitted = fit_doubling(
                [(h - start).total_seconds() / 3600 for h, _ in window], [n for _, n in window], start=start
            ).to_dict()
        except InputError as exc:
            fit_error = str(exc)
        else:
            weak = []
            if fitted["r_squared"] < MIN_FIT_R2:
                weak.append(f"R² {fitted['r_squared']:.2f} below {MIN_FIT_R2}")
            if fitted["doubling_hours"] is not None and None in fitted["doubling_ci95"]:
                weak.append("its 95% interval for the doubling time is unbounded")
            if weak:
                fit_error = f"no reliable growth fit over {fitted['points']} hours: " + "; ".join(weak)
            else:
                fit = fitted
    breakdowns: dict[str, Any] = {}
    if latest is not None and main_wave is not None:
        age = opts.max_age
        breakdowns["cu"] = {
            k: v.to_dict() for k, v in q.breakdown(store, main_wave, tag=opts.tag, max_age=age).items()
        }
        if opts.by_build:
            breakdowns["build"] = {
                k: v.to_dict()
                for k, v in q.breakdown(store, main_wave, by="build", tag=opts.tag, max_age=age).items()
            }
        for key in q.tag_keys(store, ("organisation", "country", "network")):
            by_tag = q.breakdown(store, main_wave, by=f"tag:{key}", tag=opts.tag, max_age=age)
            if set(by_tag) - {"(untagged)"}:
                breakdowns[f"tag:{key}"] = {k: v.to_dict() for k, v in by_tag.items()}
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(),
        "store": mask_url(store.url),
        "filters": {
            "since": opts.since.isoformat() if opts.since else None,
            "wave": opts.wave,
            "tag": f"{opts.tag[0]}={opts.tag[1]}" if opts.tag else None,
            "max_age_days": opts.max_age.total_seconds() / 86400 if opts.max_age is not None else None,
        },
        "unit": "hosts",
        "wave": main_wave,
        "snapshots": [s.to_dict() for s in snaps],
        "change_7d": change_7d,
        "hosts_at_risk": at_risk,
        "compromised_before_protected": [c for c in compromise if c["compromised_before_protected"]],
        "compromise": compromise,
        "breakdown": breakdowns,
        "attempts": {
            "per_hour": [[h.isoformat(), n] for h, n in per_hour],
            "fit": fit,
            "fit_error": fit_error,
            "fit_window": [
                opts.fit_since.isoformat() if opts.fit_since else None,
                opts.fit_until.isoformat() if opts.fit_until else None,
            ],
        },
        "definitions": DEFINITIONS,
    }
    report["headline"] = headline(report)
    report["headline_level"] = headline_level(report)
    return report


def headline_level(report: dict[str, Any]) -> str:
    """How the headline should look: ``unknown`` (nothing classified: never shown as good),
    ``exposed`` (some server of the wave is vulnerable) or ``protected`` (every classified one is)."""
    wave = report.get("wave")
    if not report["snapshots"] or wave is None:
        return "unknown"
    counts = report["snapshots"][-1]["waves"].get(wave)
    if not counts or not counts["classified"]:
        return "unknown"
    return "exposed" if counts["vulnerable"] else "protected"


def _inside(when: datetime, since: datetime | None, until: datetime | None) -> bool:
    if since is not None and when < _aware(since):
        return False
    return until is None or when < _aware(until)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def headline(report: dict[str, Any]) -> str:
    """The one sentence: share, denominator, and both readings of the week-over-week change."""
    wave = report.get("wave")
    if not report["snapshots"] or wave is None:
        return "No finished scan in the store yet: run `exwatch scan` first."
    latest = report["snapshots"][-1]
    counts = latest["waves"].get(wave)
    if counts is None or not counts["classified"]:
        text = f"{wave_name(wave)}: no classified server in the fleet on {latest['time'][:10]}"
        if latest.get("stale"):
            text += f" ({latest['stale']:,} stale hosts not counted)"
        return text + "."
    text = (
        f"{wave_name(wave)}: {_pct(counts['protected_share'])} of {counts['classified']:,} classified servers "
        f"patched or mitigated"
    )
    c7 = report.get("change_7d")
    if c7 and wave in c7["waves"]:
        ch = c7["waves"][wave]
        parts = []
        if ch["delta_pp"] is not None:
            parts.append(f"{ch['delta_pp']:+.1f} pp")
        if ch["unprotected_rel_change"] is not None:
            parts.append(f"vulnerable count {ch['unprotected_rel_change'] * 100:+.0f}%")
        days = c7["days"]
        when = "7 days" if abs(days - 7) < 0.01 else f"{days:g} days"
        if parts:
            text += f" ({', '.join(parts)} against {when} earlier, {c7['against_time'][:10]})"
    else:
        text += " (no snapshot about 7 days earlier to compare with)"
    bounds = counts.get("protected_bounds")
    text += f" on {latest['time'][:10]}"
    if counts["unknown"] and bounds:
        text += f"; {counts['unknown']:,} unknown put it between {_pct(bounds[0])} and {_pct(bounds[1])}"
    if latest.get("stale"):
        text += f"; {latest['stale']:,} stale hosts (not re-seen within the max age) not counted"
    return text + "."
