"""The whole story on a simulated fleet: March 2021 day by day, scans, hunts, then the report.

The lab fleet (exwatch.lab, loopback addresses) starts mostly vulnerable to ProxyLogon.  Each simulated
day, servers are patched or mitigated so that the protected share follows the published curve
(``PUBLISHED``, from exposure_timeline.csv), then exwatch.scan scans the fleet with that day as the scan
time.  A sample of servers gets a triage package (exwatch.lab.triage) that exwatch.hunt hunts; some of
them were compromised before they were protected.  Every number the report shows is simulated.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exwatch.config import mask_url
from exwatch.errors import InputError

if TYPE_CHECKING:
    from exwatch.lab import ServerSpec
    from exwatch.report import Report

# The protected share of Internet-facing Exchange servers for ProxyLogon, 1 - V/U with U = 400,000
# (RiskIQ's universe), as collected in the reference exposure_timeline.csv:
#   2021-03-09  V "a bit more than 100,000"  RiskIQ via Microsoft  https://securityaffairs.com/115896/security/microsoft-exchange-patched.html
#   2021-03-10  V 92,072   RiskIQ daily count  https://www.riskiq.com/blog/external-threat-management/microsoft-exchange-server-landscape/
#   2021-03-11  V 82,731   RiskIQ              (same source)
#   2021-03-14  V 69,548   RiskIQ via Duo      https://duo.com/decipher/number-of-exchange-servers-vulnerable-to-proxylogon-declines
#   2021-03-22  92% patched or mitigated (MSRC tweet, RiskIQ data)  https://neowin.net/news/over-370000-exchange-server-instances-have-now-been-patched-or-mitigated
# Days between published points are interpolated linearly (the demo's choice, not a published figure).
UNIVERSE = 400_000
PUBLISHED: tuple[tuple[date, float, str], ...] = (
    (date(2021, 3, 9), 1 - 100_000 / UNIVERSE, "Microsoft/RiskIQ: a bit more than 100,000 vulnerable"),
    (date(2021, 3, 10), 1 - 92_072 / UNIVERSE, "RiskIQ: 92,072 vulnerable"),
    (date(2021, 3, 11), 1 - 82_731 / UNIVERSE, "RiskIQ: 82,731 vulnerable"),
    (date(2021, 3, 14), 1 - 69_548 / UNIVERSE, "RiskIQ via Duo: 69,548 vulnerable"),
    (date(2021, 3, 22), 0.92, "MSRC: 92% patched or mitigated"),
)
# Microsoft Defender began mitigating CVE-2021-26855 automatically on 2021-03-18
# (https://www.microsoft.com/en-us/security/blog/2021/03/18/automatic-on-premises-exchange-server-mitigation-now-in-microsoft-defender-antivirus/):
# from then on more servers are protected by mitigation than before.
DEFENDER_MITIGATION = date(2021, 3, 18)
DEFAULT_DAYS: tuple[date, ...] = (
    date(2021, 3, 9),
    date(2021, 3, 10),
    date(2021, 3, 11),
    date(2021, 3, 12),
    date(2021, 3, 14),
    date(2021, 3, 15),
    date(2021, 3, 18),
    date(2021, 3, 22),
)
# Attempts "doubled every two to three hours" around 2021-03-11/12 (Check Point, exposure_timeline.csv):
# the demo's compromised servers are first attacked on a schedule that doubles every 2.5 hours.
ATTACK_DOUBLING_HOURS = 2.5
ATTACK_START = datetime(2021, 3, 3, 0, 0, tzinfo=UTC)
ATTACK_WINDOW_HOURS = 14
SCAN_HOUR = 12
WAVE = "proxylogon"
COUNTRIES = (("US", 0.23), ("DE", 0.13), ("GB", 0.08), ("NL", 0.07), ("IT", 0.07), ("FR", 0.07), ("TR", 0.05))
SIMULATED_NOTE = (
    "SIMULATED DATA: a lab fleet of emulated Exchange servers on loopback addresses whose patch levels follow "
    "the published March 2021 ProxyLogon curve (RiskIQ/Microsoft, exposure_timeline.csv); scans, hunts and "
    "findings are real runs of exwatch against that simulation, not observations of real servers."
)


def published_share(day: date) -> float:
    """The published protected share on ``day``, linear between published points, flat outside them."""
    days = [d for d, _, _ in PUBLISHED]
    shares = [s for _, s, _ in PUBLISHED]
    if day <= days[0]:
        return shares[0]
    if day >= days[-1]:
        return shares[-1]
    i = bisect.bisect_right(days, day)
    d0, d1, s0, s1 = days[i - 1], days[i], shares[i - 1], shares[i]
    return s0 + (s1 - s0) * (day - d0).days / (d1 - d0).days


def attack_times(n: int, *, start: datetime = ATTACK_START) -> list[datetime]:
    """n first-attack times whose density doubles every ATTACK_DOUBLING_HOURS over the window.

    Deterministic quantiles of the exponential density on [0, W]: t = ln(1 + q (e^{rW} - 1)) / r.
    """
    rate = math.log(2) / ATTACK_DOUBLING_HOURS
    span = math.expm1(rate * ATTACK_WINDOW_HOURS)
    return [start + timedelta(hours=math.log1p((i + 0.5) / n * span) / rate) for i in range(n)]


@dataclass
class DemoOptions:
    """What the demo simulates."""

    servers: int = 2000
    out: Path = field(default_factory=lambda: Path("exwatch-demo"))
    db_url: str | None = None
    seed: int = 2021
    days: Sequence[date] = DEFAULT_DAYS
    hunts: int = 16
    base_address: str = "127.40.0.1"
    triage_size: int = 200_000


@dataclass
class DemoResult:
    """Where the demo put its outputs, and the report it printed."""

    db_url: str
    report: Report
    html: Path
    json: Path
    stix: Path
    manifests: list[Path]
    hunted: dict[str, str]
    seconds: float


def _patched_build(build: str) -> str | None:
    """The first published build of the same CU that fixes ProxyLogon (the March 2021 SU), if any."""
    from exwatch import kb

    try:
        candidates = kb.builds_for_cu(kb.parse_build(build))
    except InputError:
        return None
    for candidate in reversed(candidates):  # oldest first
        if kb.verdict(candidate).waves[WAVE].state == kb.State.PATCHED:
            return str(candidate)
    return None


def _tags(rng: random.Random, index: int, address: str) -> dict[str, str]:
    roll, country = rng.random(), "other"
    for code, share in COUNTRIES:
        if roll < share:
            country = code
            break
        roll -= share
    network = ".".join(address.split(".")[:3]) + ".0/24"
    return {"organisation": f"org{index % 97:02d}", "country": country, "network": network}


@dataclass
class _Plan:
    """The drawn fleet and the order in which its unprotected servers get protected."""

    specs: list[ServerSpec]
    targets: list[str]
    classified: list[str]  # the servers the wave applies to (vulnerable, patched or mitigated by build)
    waiting: list[str]  # still vulnerable, popped from the end as days go by
    protected_on: dict[str, date]

    @property
    def by_name(self) -> dict[str, ServerSpec]:
        return {s.name: s for s in self.specs}


def run_demo(options: DemoOptions, echo: Callable[[str], None] = print) -> DemoResult:
    """Run the simulation, the scans and the hunts, and write the report (terminal text via ``echo``)."""
    import time

    from exwatch.fleet import open_store
    from exwatch.report import ReportOptions, build_report, findings_bundle

    started = time.monotonic()
    days = _check(options)
    out = options.out
    db_url = _prepare(out, options.db_url)
    rng = random.Random(options.seed)
    echo(SIMULATED_NOTE)
    plan = _plan(options, days, rng)
    echo(
        f"lab fleet: {len(plan.specs):,} servers on {options.base_address} and up, {len(plan.classified):,} "
        f"exposed to ProxyLogon by build; {len(days)} simulated days from {days[0]} to {days[-1]}"
    )
    with open_store(db_url) as store:
        manifests = _simulate(plan, days, rng, out, db_url, options.seed, echo)
        hunted, folders = _write_packages(plan, days, rng, options)
        _hunt(store, folders, plan.by_name, days, echo)
        report = build_report(store, ReportOptions(wave=WAVE))
        bundle = findings_bundle(store)
    html_path, json_path, stix_path = _write_outputs(out, report, bundle, echo)
    seconds = time.monotonic() - started
    echo("")
    echo(SIMULATED_NOTE)
    echo(f"HTML report: {html_path.resolve()}")
    echo(f"JSON report: {json_path.resolve()}   STIX findings: {stix_path.resolve()}")
    echo(f"store: {mask_url(db_url)}   manifests (ground truth per day): {(out / 'manifests').resolve()}")
    echo(f"demo finished in {seconds:.0f} s")
    return DemoResult(db_url, report, html_path, json_path, stix_path, manifests, hunted, seconds)


def _check(options: DemoOptions) -> list[date]:
    """The simulated days, sorted; InputError for a fleet too small or no day."""
    if options.servers < 10:
        raise InputError("the demo needs at least 10 servers")
    days = sorted(options.days)
    if not days:
        raise InputError("the demo needs at least one day")
    return days


def _prepare(out: Path, db_url: str | None) -> str:
    """Create the output folder, empty the demo's own parts of it; the store URL (a fresh SQLite file by default)."""
    out.mkdir(parents=True, exist_ok=True)
    if db_url is None:
        db_file = out / "exwatch-demo.db"
        for stale in out.glob("exwatch-demo.db*"):
            stale.unlink()
        db_url = f"sqlite:///{db_file.resolve()}"
    for sub in ("manifests", "triage"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir()
    return db_url


def _plan(options: DemoOptions, days: list[date], rng: random.Random) -> _Plan:
    """Draw the lab fleet, its scan targets (with tags), and which servers wait to be protected."""
    from exwatch.lab import draw_fleet, truth

    specs = draw_fleet(
        options.servers,
        options.seed,
        base_address=options.base_address,
        http_share=0.9,  # TLS for one server in ten keeps the demo within its time on a small machine
        other_share=0.05,
        other_variants={"iis": 0.5, "nginx": 0.3, "refuse": 0.2},
        exchange_variants={"standard": 1.0},
        patched_share=0.0,
        mitigated_share=0.0,
    )
    by_name = {s.name: s for s in specs}
    targets = []
    for i, spec in enumerate(specs):
        tags = " ".join(f"{k}={v}" for k, v in _tags(rng, i, spec.address).items())
        targets.append(f"{spec.scheme}://{spec.address}:{spec.port}/ {tags}")
    # Which servers the wave applies to, and in which order the unprotected ones get protected.
    classified = [s.name for s in specs if truth(s)[WAVE] in ("vulnerable", "patched", "mitigated")]
    waiting = [n for n in classified if truth(by_name[n])[WAVE] == "vulnerable"]
    rng.shuffle(waiting)
    protected_on: dict[str, date] = {n: days[0] - timedelta(days=1) for n in classified if n not in waiting}
    return _Plan(specs, targets, classified, waiting, protected_on)


def _simulate(
    plan: _Plan,
    days: list[date],
    rng: random.Random,
    out: Path,
    db_url: str,
    seed: int,
    echo: Callable[[str], None],
) -> list[Path]:
    """Each day: protect servers up to the published share, write the day's ground truth, scan the fleet."""
    import time

    from exwatch.lab import run_fleet_in_thread
    from exwatch.scan.engine import ScanOptions, run_scan

    by_name = plan.by_name
    manifests: list[Path] = []
    with run_fleet_in_thread(plan.specs) as fleet:
        for day in days:
            target = math.ceil(published_share(day) * len(plan.classified))
            mitigate_share = 0.5 if day >= DEFENDER_MITIGATION else 0.15
            while len(plan.protected_on) < target and plan.waiting:
                name = plan.waiting.pop()
                spec = by_name[name]
                fixed = None if rng.random() < mitigate_share else _patched_build(spec.build or "")
                if fixed is not None:
                    fleet.update(name, build=fixed)
                else:
                    fleet.update(name, mitigations=sorted({*spec.mitigations, WAVE}))
                plan.protected_on[name] = day
            manifest = fleet.manifest()
            path = out / "manifests" / f"{day.isoformat()}.json"
            path.write_text(json.dumps({"day": day.isoformat(), **manifest}, indent=1), encoding="utf-8")
            manifests.append(path)
            when = datetime(day.year, day.month, day.day, SCAN_HOUR, tzinfo=UTC)
            t0 = time.monotonic()
            summary = run_scan(
                plan.targets,
                ScanOptions(probe=True, concurrency=256, per_host=0, timeout=5.0, seed=seed),
                db_url,
                scan_time=when,
            )
            counts: dict[str, int] = dict(summary.waves.get(WAVE, {}))
            prot = counts.get("patched", 0) + counts.get("mitigated", 0)
            cls = prot + counts.get("vulnerable", 0)
            echo(
                f"{day}: scanned {summary.scanned:,} targets in {time.monotonic() - t0:.1f} s: "
                f"{prot / cls:.1%} of {cls:,} patched or mitigated "
                f"(published curve {published_share(day):.1%})"
            )
    return manifests


def _write_packages(
    plan: _Plan, days: list[date], rng: random.Random, options: DemoOptions
) -> tuple[dict[str, str], list[Path]]:
    """Triage packages to hunt: compromised servers, and a few clean early-patched ones.

    Servers that stayed exposed longest (protected late in the period or never) were compromised before
    they were protected, attacked in early March; a few early-patched ones are hunted too and are clean.
    """
    from exwatch.lab import write_triage

    classified, protected_on, out = plan.classified, plan.protected_on, options.out
    late = [
        n
        for n in classified
        if n in plan.waiting or protected_on.get(n, days[0]) >= days[min(2, len(days) - 1)]
    ]
    rng.shuffle(late)
    n_hunts = min(options.hunts, len(classified))
    n_bad = max(1, (n_hunts * 3) // 4)
    compromised = late[:n_bad]
    early = [n for n in classified if protected_on.get(n, date.max) < days[0]]
    clean = (early or [n for n in classified if n not in compromised])[: n_hunts - len(compromised)]
    hunted: dict[str, str] = {}
    folders = []
    for i, (name, when) in enumerate(zip(compromised, attack_times(len(compromised)), strict=True)):
        folder = out / "triage" / name
        write_triage(
            folder,
            seed=options.seed + i,
            size=options.triage_size,
            scenarios=(WAVE,),
            host=name.upper(),
            start=when - timedelta(hours=12),
            days=2,
            attack_time=when,
        )
        hunted[name] = "compromised"
        folders.append(folder)
    for i, name in enumerate(clean):
        folder = out / "triage" / name
        write_triage(
            folder,
            seed=options.seed + 1000 + i,
            size=options.triage_size,
            scenarios=("lookalikes",),
            host=name.upper(),
            start=ATTACK_START,
            days=2,
        )
        hunted[name] = "clean"
        folders.append(folder)
    return hunted, folders


def _hunt(
    store: Any,
    folders: list[Path],
    by_name: dict[str, ServerSpec],
    days: list[date],
    echo: Callable[[str], None],
) -> None:
    """Hunt the packages and store each host's hunt against its lab server's address."""
    from exwatch.hunt import HuntOptions, hunt_paths, record_hunt

    result = hunt_paths(folders, HuntOptions(jobs=1))
    verdicts = [h.verdict for h in result.hosts]
    hunt_time = datetime(days[-1].year, days[-1].month, days[-1].day, SCAN_HOUR + 3, tzinfo=UTC)
    addresses = {h.host: by_name[h.host].address for h in result.hosts}
    record_hunt(store, result, started_at=hunt_time, store_names=addresses)
    echo(
        f"hunted {len(folders)} triage packages: "
        + ", ".join(f"{v} {verdicts.count(v)}" for v in dict.fromkeys(verdicts))
        + f"; {len(result.findings):,} findings"
    )


def _write_outputs(
    out: Path, report: Any, bundle: Any, echo: Callable[[str], None]
) -> tuple[Path, Path, Path]:
    """Print the report with the published points beside it; write the HTML, JSON and STIX files."""
    from exwatch.report import bundle_json, render_html, render_table

    echo("")
    echo(render_table(report))
    doc = report.to_dict()
    for day, share, what in PUBLISHED:
        snap = next((s for s in doc["snapshots"] if s["time"][:10] == day.isoformat()), None)
        if snap is not None and snap["waves"].get(WAVE, {}).get("protected_share") is not None:
            echo(
                f"published {day}: {share:.1%} ({what}); simulated scan: {snap['waves'][WAVE]['protected_share']:.1%}"
            )
    html_path = out / "report.html"
    html_path.write_text(render_html(report, note=SIMULATED_NOTE), encoding="utf-8")
    json_path = out / "report.json"
    json_path.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    stix_path = out / "findings.stix.json"
    stix_path.write_text(bundle_json(bundle), encoding="utf-8")
    return html_path, json_path, stix_path
