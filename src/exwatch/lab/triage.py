"""Triage packages: the folder an admin collects from one Exchange server, with planted evidence and its truth.

``write_triage(out, ...)`` writes, under ``out``:

- ``Program Files/Microsoft/Exchange Server/V15/Logging/``: HttpProxy logs per protocol (hourly
  ``HttpProxy_YYYYMMDDHH-1.LOG``), the ECP Server log and the OAB generator log (daily);
- ``inetpub/logs/LogFiles/W3SVC1`` and ``W3SVC2``: IIS W3C logs of the front end (443) and back end (444);
- ``EventLogs/``: Application, MSExchange Management, Security and Sysmon as XML exports;
- the web folders (``inetpub/wwwroot/aspnet_client``, ``.../FrontEnd/HttpProxy/owa/auth``, ``ecp/auth``,
  ``OAB``), ``ProgramData``, ``Windows/Temp``, ``root``, the IIS configuration and compiled pages;
- ``truth.json``: every planted trace with its file, line (or event record), time and rule id.

Benign traffic fills the logs up to ``size`` bytes. Log files are independent jobs, run in a process
pool when the package is large; every job draws from its own seeded generator, so a seed gives the
same bytes whatever the number of workers.
"""

from __future__ import annotations

import bisect
import json
import multiprocessing
import os
import random
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

import numpy as np

from exwatch.errors import InputError
from exwatch.kb import WAVE_IDS
from exwatch.lab import triage_traffic as traffic
from exwatch.lab.triage_formats import (
    ECP_FIELDS,
    ECP_SERVER,
    HTTPPROXY,
    HTTPPROXY_FIELDS,
    HTTPPROXY_FIELDS_AFTER_RESTART,
    HTTPPROXY_PROTOCOLS,
    OABGEN,
    OABGEN_FIELDS,
    W3SVC1,
    W3SVC2,
    EventSpec,
    ServerInfo,
    ecp_file_name,
    event_xml,
    events_document_head,
    events_document_tail,
    exchange_header,
    httpproxy_file_name,
    iis_file_name,
    iis_header,
    oabgen_file_name,
)
from exwatch.lab.triage_plan import (
    EVENT_FILES,
    EVT_APPLICATION,
    EVT_DEFENDER,
    EVT_MANAGEMENT,
    EVT_POWERSHELL,
    EVT_SECURITY,
    EVT_SYSMON,
    LinePlant,
    Plan,
    TruthItem,
    mgmt_event,
    mirror_process_events,
    script_block,
    security_4688,
    sysmon_process,
)
from exwatch.lab.triage_scenarios import (
    SCENARIOS,
    ensure_utc,
    lookalikes,
    proxylogon,
    proxynotshell,
    proxyshell,
    standard_lookalike_files,
    standard_web_files,
)
from exwatch.pools import ignore_sigint, stop_pool

__all__ = ["DEFAULT_START", "SCENARIOS", "write_triage"]

DEFAULT_START = datetime(2021, 3, 1, tzinfo=UTC)
# The real chain started at 06:49:42 UTC (log_formats.md 2.6 item 2); by default we plant it at that
# time of day on the last day of the window.
DEFAULT_ATTACK_TOD = timedelta(hours=6, minutes=49, seconds=42)
PROXYSHELL_AFTER = timedelta(hours=3)
PROXYNOTSHELL_AFTER = timedelta(hours=5)
MIN_SIZE = 200_000


class TruthDocument(TypedDict):
    """``truth.json`` of a triage package (and what :func:`write_triage` returns): the server, the
    window, the seed and scenarios, when each wave's chain starts, the build, the ground-truth items
    (:meth:`TruthItem.to_dict`, in :meth:`TruthItem.sort_key` order) and where the restarts are."""

    host: str
    start: str
    end: str
    seed: int
    scenarios: list[str]
    attack_time: str | None
    scenario_times: dict[str, str]
    build: str
    items: list[dict[str, object]]
    notes: dict[str, str | None]


# Share of the package size per family (our estimate: front-end logs dominate a real collection).
SHARES = {"httpproxy": 0.56, "iis1": 0.28, "iis2": 0.12, "ecp": 0.004, "oabgen": 0.001, "events": 0.035}
# Relative traffic per hour of day, UTC (a European working day).
HOUR_WEIGHTS = (
    0.15, 0.12, 0.1, 0.1, 0.12, 0.25, 0.5, 0.9, 1.0, 1.0, 0.95, 0.9,
    0.85, 0.95, 1.0, 0.95, 0.85, 0.6, 0.4, 0.3, 0.25, 0.2, 0.18, 0.16,
)  # fmt: skip

CRLF = "\r\n"
# Average bytes of a line of the small families and of one event (measured on generated packages).
ECP_AVG = 420.0
OABGEN_AVG = 140.0
EVENT_AVG = 1100


@dataclass
class LogJob:
    """One log file: its family, period, benign line counts per hour segment and planted lines."""

    path: str
    family: str  # httpproxy | iis1 | iis2 | ecp | oabgen
    protocol: str
    day: datetime  # midnight UTC of the file's day
    period_start: datetime
    segments: list[tuple[int, int, int]]  # (start ms after midnight, span ms, benign lines)
    plants: list[LinePlant] = field(default_factory=list)
    restart: bool = False
    rollover: bool = False
    mtime: float = 0.0

    @property
    def weight(self) -> int:
        return sum(n for _, _, n in self.segments)


def rollover_path(path: str) -> str:
    """The next file of the same hour: ``HttpProxy_2021030110-1.LOG`` -> ``HttpProxy_2021030110-2.LOG``."""
    head, _, tail = path.rpartition("-1.")
    return f"{head}-2.{tail}"


def _job_seed(seed: int, path: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(path.encode())) & 0xFFFFFFFF


def _header(
    job: LogJob, server: ServerInfo, fields: Sequence[str] | None = None, date: datetime | None = None
) -> str:
    date = date or job.period_start
    if job.family == "httpproxy":
        return exchange_header(server.version_long, "HttpProxy Logs", date, fields or HTTPPROXY_FIELDS)
    if job.family == "ecp":
        # log_formats.md 3: the ECP logs carry a constant #Version: 15.0.0.0.
        return exchange_header("15.0.0.0", "ECP Server Log", date, ECP_FIELDS)
    if job.family == "oabgen":
        return exchange_header(server.version_long, "OABGen Log", date, OABGEN_FIELDS)
    return iis_header(date)


def _segment_lines(
    job: LogJob, rng: np.random.Generator, server: ServerInfo, seed: int
) -> Iterator[tuple[list[int], list[str]]]:
    """Benign lines of each hour segment in turn (times in ms after midnight, sorted)."""
    if job.family in ("ecp", "oabgen"):
        rnd = random.Random(_job_seed(seed, job.path))
        for seg in job.segments:
            yield traffic.small_family_lines(job.family, job.day, [seg], rnd, server, seed)
        return
    vs = traffic.variant_set(job.family, job.protocol, seed, server)
    iso = job.family == "httpproxy"
    day = job.day.strftime("%Y-%m-%d")
    for start_ms, span_ms, n in job.segments:
        yield traffic.bulk_lines(vs, rng, n, day, start_ms, span_ms, iso)


def run_log_job(job: LogJob, seed: int, out: str, server: ServerInfo) -> list[TruthItem]:
    """Write one log file (benign lines merged with the plants by time); return its truth items.

    The file is written segment by segment (an hour at a time), so memory stays small for big files.
    """
    rng = np.random.default_rng(_job_seed(seed, job.path))
    header = _header(job, server)
    plants = sorted(job.plants, key=lambda p: p.time)
    plant_ms = [int((p.time - job.day).total_seconds() * 1000) for p in plants]
    # Each plant goes to the segment holding its time (the first or last one when outside them all).
    seg_of = [max(0, bisect.bisect_right([s for s, _, _ in job.segments], ms) - 1) for ms in plant_ms]
    if (job.restart or job.rollover) and job.family == "httpproxy" and plants:
        raise ValueError("a restarted file carries no plants")

    items: list[TruthItem] = []
    full = os.path.join(out, job.path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8", newline="") as f:
        f.write(header)
        line_no = header.count("\n")
        k = 0
        for si, (offs, lines) in enumerate(_segment_lines(job, rng, server, seed)):
            if job.restart and job.family == "iis1" and si == len(job.segments) // 2:
                # IIS logging restarted (an iisreset): a new header block, same field list.
                rh = iis_header(job.day + timedelta(milliseconds=job.segments[si][0]))
                f.write(rh)
                line_no += rh.count("\n")
            if job.restart and job.family == "httpproxy" and si == 0 and len(lines) >= 2:
                # The service restarted mid-file: the header again, then rows with the new field list.
                r = len(lines) // 2
                f.write(CRLF.join(lines[:r]) + CRLF)
                rh = _header(
                    job, server, HTTPPROXY_FIELDS_AFTER_RESTART, job.day + timedelta(milliseconds=offs[r])
                )
                f.write(rh)
                after = [ln.rsplit(",", 2)[0] for ln in lines[r:]]
                f.write(CRLF.join(after) + CRLF)
                line_no += len(lines) + rh.count("\n")
                continue
            if job.rollover and len(lines) >= 2:
                # The hour's log reached its size limit: the rest goes to the next file of the hour.
                r = len(lines) // 2
                f.write(CRLF.join(lines[:r]) + CRLF)
                second = rollover_path(full)
                with open(second, "w", encoding="utf-8", newline="") as f2:
                    f2.write(_header(job, server, date=job.day + timedelta(milliseconds=offs[r])))
                    f2.write(CRLF.join(lines[r:]) + CRLF)
                if job.mtime:
                    os.utime(second, (job.mtime, job.mtime))
                continue
            prev = 0
            while k < len(plants) and seg_of[k] == si:
                # A plant goes after every benign line with the same or an earlier time.
                pos = bisect.bisect_right(offs, plant_ms[k])
                if pos > prev:
                    f.write(CRLF.join(lines[prev:pos]) + CRLF)
                    line_no += pos - prev
                    prev = pos
                f.write(plants[k].text + CRLF)
                line_no += 1
                for it in plants[k].items:
                    items.append(it.located(job.path, line=line_no))
                k += 1
            if prev < len(lines):
                f.write(CRLF.join(lines[prev:]) + CRLF)
                line_no += len(lines) - prev
    if job.mtime:
        os.utime(full, (job.mtime, job.mtime))
    return items


# --- the plan --------------------------------------------------------------------------------------


# What ``all`` plants, in planting order: every wave of the knowledge base, then the lookalikes.
_PLANTED: tuple[str, ...] = (*WAVE_IDS, "lookalikes")


def _expand(scenarios: Sequence[str]) -> list[str]:
    chosen: list[str] = []
    for s in scenarios:
        name = s.strip().lower()
        if name not in SCENARIOS:
            raise InputError(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
        if name == "all":
            chosen.extend(_PLANTED)
        elif name != "clean":
            chosen.append(name)
    if "clean" in [s.strip().lower() for s in scenarios] and chosen:
        raise InputError("scenario 'clean' cannot be combined with others")
    return sorted(set(chosen), key=_PLANTED.index)


def _hours(start: datetime, end: datetime) -> list[datetime]:
    out = []
    t = start
    while t < end:
        out.append(t)
        t += timedelta(hours=1)
    return out


def _plan_jobs(plan: Plan, size: float) -> list[LogJob]:
    start, end, server, seed = plan.start, plan.end, plan.server, plan.seed
    hours = _hours(start, end)
    weights = [HOUR_WEIGHTS[h.hour] for h in hours]
    total_w = sum(weights)
    jobs: dict[str, LogJob] = {}

    def hour_share(i: int) -> float:
        return weights[i] / total_w

    # HttpProxy: one file per protocol and hour.
    for proto in HTTPPROXY_PROTOCOLS:
        vs = traffic.variant_set("httpproxy", proto, seed, server)
        budget = size * SHARES["httpproxy"] * traffic.PROXY_SHARE[proto]
        for i, h in enumerate(hours):
            n = max(1, int(budget * hour_share(i) / vs.avg_len))
            path = f"{HTTPPROXY}/{proto}/{httpproxy_file_name(h)}"
            day = h.replace(hour=0)
            jobs[path] = LogJob(
                path,
                "httpproxy",
                proto,
                day,
                h,
                [(h.hour * 3_600_000, 3_600_000, n)],
                mtime=(h + timedelta(hours=1)).timestamp(),
            )
    # IIS: one file per site and day, filled hour by hour; ECP and OAB generator: daily.
    for fam, folder in (("iis1", W3SVC1), ("iis2", W3SVC2), ("ecp", ECP_SERVER), ("oabgen", OABGEN)):
        avg = (
            traffic.variant_set(fam, "", seed, server).avg_len
            if fam.startswith("iis")
            else (ECP_AVG if fam == "ecp" else OABGEN_AVG)
        )
        budget = size * SHARES[fam]
        for i, h in enumerate(hours):
            day = h.replace(hour=0)
            name = (
                iis_file_name(day)
                if fam.startswith("iis")
                else (ecp_file_name(day) if fam == "ecp" else oabgen_file_name(day))
            )
            path = f"{folder}/{name}"
            job = jobs.get(path)
            if job is None:
                job = jobs[path] = LogJob(path, fam, "", day, h, [])
            n = max(1 if fam.startswith("iis") else 0, int(budget * hour_share(i) / avg))
            if fam == "oabgen":
                n = max(n, 1 if h.hour % 8 == 0 else 0)
            job.segments.append((h.hour * 3_600_000, 3_600_000, n))
            job.mtime = (h + timedelta(hours=1)).timestamp()

    for p in plan.lines:
        job = jobs.get(p.file)
        if job is None:
            raise InputError(
                f"planted line at {p.time.isoformat()} falls outside the package window ({p.file})"
            )
        job.plants.append(p)
    # One restart in a quiet HttpProxy file: the header again, with a changed #Fields list.
    candidates = [
        j for j in jobs.values() if j.family == "httpproxy" and j.protocol == "Mapi" and not j.plants
    ]
    if candidates:
        candidates[len(candidates) // 3].restart = True
    # One busy OWA hour rolls over to a second file (HttpProxy_YYYYMMDDHH-2.LOG).
    owa = [j for j in jobs.values() if j.family == "httpproxy" and j.protocol == "Owa" and not j.plants]
    first_day = [j for j in owa if j.day == owa[0].day] if owa else []
    if first_day:
        max(first_day, key=lambda j: (j.weight, j.path)).rollover = True
    # And one IIS restart (a new header block mid-file), in the front-end log of the first day.
    iis = sorted((j for j in jobs.values() if j.family == "iis1"), key=lambda j: j.day)
    if iis and len(iis[0].segments) >= 2:
        iis[0].restart = True
    return sorted(jobs.values(), key=lambda j: -j.weight)


def _avg_line(job: LogJob, plan: Plan) -> float:
    if job.family in ("httpproxy", "iis1", "iis2"):
        return traffic.variant_set(job.family, job.protocol, plan.seed, plan.server).avg_len
    return ECP_AVG if job.family == "ecp" else OABGEN_AVG


def _fit_size(plan: Plan, size: int) -> tuple[list[LogJob], int]:
    """Plan the log files so that the whole package comes close to ``size`` bytes.

    Every hourly file holds at least a line and the planted files and events are fixed, so the
    benign budget is scaled down until the estimate (lines x average line length, headers, plants,
    files, events) meets the target; below a few MB the fixed part dominates and the package is larger.
    """
    fixed = sum(len(f.content) for f in plan.files) + sum(len(p.text) + 2 for p in plan.lines)
    fixed += sum(EVENT_AVG for _ in plan.events)
    scaled = float(size)
    jobs: list[LogJob] = []
    events_budget = 0
    for _ in range(4):
        jobs = _plan_jobs(plan, scaled)
        events_budget = int(scaled * SHARES["events"])
        est: float = fixed + max(30 * EVENT_AVG, events_budget)
        for job in jobs:
            est += job.weight * _avg_line(job, plan) + (1200 if job.family == "httpproxy" else 300)
        if abs(est - size) < 0.01 * size:
            break
        scaled = max(1.0, scaled * size / est)
    return jobs, events_budget


# --- event logs ------------------------------------------------------------------------------------


def _defender_routine(t: datetime, eid: int) -> EventSpec:
    """Defender Operational routine events: 2000 signatures updated, 1000/1001 scan started/finished."""
    if eid == 2000:
        data = (("Current Signature Version", "1.333.269.0"), ("Previous Signature Version", "1.333.211.0"))
    else:
        data = (("Scan Type", "Antimalware"), ("Scan Parameters", "Quick Scan"))
    return EventSpec(
        provider="Microsoft-Windows-Windows Defender",
        provider_guid="{11CD958A-C507-4EF3-B3F2-5FD9DFBD2C78}",
        event_id=eid,
        version=0,
        level=4,
        task=0,
        opcode=0,
        keywords="0x8000000000000000",
        channel="Microsoft-Windows-Windows Defender/Operational",
        time=t,
        named_data=(
            ("Product Name", "Microsoft Defender Antivirus"),
            ("Product Version", "4.18.2102.4"),
            *data,
        ),
    )


# Routine noise. Benign sources and ids here are illustrative, not checked against real records.
_CHECK_SCRIPT = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Scripts\\CheckServices.ps1"
_CHECK_SERVICES = "Get-Service MSExchange* | Where-Object { $_.Status -ne 'Running' }"
_ROUTINE_SCRIPTS = (
    _CHECK_SERVICES,
    "Test-Path -Path 'C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin'",
    "Get-Counter '\\MSExchangeIS Store(_total)\\RPC Operations/sec' -SampleInterval 5 -MaxSamples 1",
)
# (image, command line, parent image, parent command line)
_ROUTINE_PROCESSES = (
    (
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
        "C:\\Windows\\System32\\services.exe",
        "C:\\Windows\\system32\\services.exe",
    ),
    (
        "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeHMWorker.exe",
        '"C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeHMWorker.exe" -pipe 1234 -workerType 1',
        "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeHMHost.exe",
        '"C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeHMHost.exe"',
    ),
    (
        "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
        "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding",
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
    ),
    (
        "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\Microsoft.Exchange.Search.Service.exe",
        '"C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\Microsoft.Exchange.Search.Service.exe"',
        "C:\\Windows\\System32\\services.exe",
        "C:\\Windows\\system32\\services.exe",
    ),
    (
        "C:\\Windows\\System32\\conhost.exe",
        "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p",
    ),
)


def _benign_events(plan: Plan, budget: int) -> dict[str, list[EventSpec]]:
    """Routine events for each exported log, spread over the window (roughly ``budget`` bytes)."""
    rnd = plan.rnd("events")
    span = (plan.end - plan.start).total_seconds()
    n_total = max(30, budget // EVENT_AVG)
    out: dict[str, list[EventSpec]] = {f: [] for f in EVENT_FILES}
    _scheduled_events(plan, rnd, out)
    # One random stream for the whole window: each event's draws follow the previous event's.
    for _ in range(n_total):
        t = plan.start + timedelta(seconds=rnd.random() * span)
        t = t.replace(microsecond=(t.microsecond // 1000) * 1000)
        r = rnd.random()
        if r < 0.03:
            script = rnd.choice(_ROUTINE_SCRIPTS)
            out[EVT_POWERSHELL].append(script_block(plan, t, script, path=_CHECK_SCRIPT))
        elif r < 0.05:
            # Defender's routine: signature updates (2000) and scheduled scans (1000/1001).
            out[EVT_DEFENDER].append(_defender_routine(t, rnd.choice((2000, 1000, 1001))))
        elif r < 0.35:
            out[EVT_APPLICATION].append(_application_routine(plan, rnd, t))
        elif r < 0.6:
            out[EVT_MANAGEMENT].append(_management_routine(plan, rnd, t))
        else:
            image, cmd, parent, pcmd = rnd.choice(_ROUTINE_PROCESSES)
            spec = sysmon_process(plan, t, image, cmd, parent, pcmd)
            out[EVT_SYSMON].append(spec)
            if rnd.random() < 0.6:
                out[EVT_SECURITY].append(security_4688(plan, spec))
    return out


def _scheduled_events(plan: Plan, rnd: random.Random, out: dict[str, list[EventSpec]]) -> None:
    """Scheduled work: Defender signature updates every eight hours, a service check script every six."""
    t = plan.start
    while t < plan.end:
        if t.hour % 8 == 2:
            out[EVT_DEFENDER].append(_defender_routine(t + timedelta(minutes=rnd.randint(0, 50)), 2000))
        if t.hour % 6 == 0:
            out[EVT_POWERSHELL].append(
                script_block(
                    plan,
                    t + timedelta(minutes=5, seconds=rnd.randint(0, 59)),
                    _CHECK_SERVICES,
                    path=_CHECK_SCRIPT,
                )
            )
        t += timedelta(hours=1)


def _application_routine(plan: Plan, rnd: random.Random, t: datetime) -> EventSpec:
    """An Application log event of the Exchange services at ``t``."""
    # (provider, event id, level, data)
    app_kinds = (
        (
            "MSExchange ADAccess",
            2080,
            4,
            (
                "w3wp.exe",
                "Process w3wp.exe (MSExchangeOWAAppPool) (PID=7820). Exchange Active Directory Provider has discovered the following servers: DC01."
                + plan.server.domain,
            ),
        ),
        ("MSExchangeHM", 1, 4, ("Health Manager Worker process started.",)),
        ("ESE", 326, 4, ("Microsoft.Exchange.Store.Worker", "The database engine attached a database.")),
        (
            "MSExchangeFastSearch",
            1009,
            3,
            ("The indexing of mailbox database DB01 encountered an unexpected exception.",),
        ),
    )
    prov, eid, lvl, data = rnd.choice(app_kinds)
    return EventSpec(
        provider=prov,
        event_id=eid,
        qualifiers=16388 if lvl == 4 else 32772,
        level=lvl,
        task=1,
        channel="Application",
        time=t,
        data=data,
    )


def _management_routine(plan: Plan, rnd: random.Random, t: datetime) -> EventSpec:
    """An administrator's or the health mailbox's cmdlet at ``t`` (MSExchange Management)."""
    s = plan.server
    us = traffic.users(plan.seed, s.domain)
    hm_sid = us[0].sid.rsplit("-", 1)[0] + "-1149"
    u = rnd.choice(us)
    cmdlet, params, who, sid = rnd.choice(
        (
            ("Get-Mailbox", f'-Identity "{u.upn}"', "exadmin", us[0].sid),
            ("Get-MailboxDatabase", '-Status "True"', "HealthMailbox", hm_sid),
            (
                "Set-Mailbox",
                f'-Identity "{u.upn}" -ProhibitSendQuota "9.5 GB (10,200,547,328 bytes)"',
                "exadmin",
                us[0].sid,
            ),
            ("Get-ExchangeServer", f'-Identity "{s.host}"', "HealthMailbox", hm_sid),
            ("Test-ServiceHealth", f'-Server "{s.host}"', "HealthMailbox", hm_sid),
            (
                "Add-MailboxPermission",
                f'-Identity "{u.upn}" -User "{us[1].upn}" -AccessRights "FullAccess"',
                "exadmin",
                us[0].sid,
            ),
        )
    )
    return mgmt_event(plan, t, cmdlet, params, who, sid)


def _write_events(plan: Plan, out: Path, budget: int) -> list[TruthItem]:
    benign = _benign_events(plan, budget)
    items: list[TruthItem] = []
    first_record = {
        EVT_APPLICATION: 184_220,
        EVT_MANAGEMENT: 3_229,
        EVT_SECURITY: 2_210_455,
        EVT_POWERSHELL: 5_512,
        EVT_DEFENDER: 871,
        EVT_SYSMON: 1_048_311,
    }
    for fname in EVENT_FILES:
        entries: list[tuple[datetime, int, EventSpec, list[TruthItem]]] = [
            (e.time, 0, e, []) for e in benign[fname]
        ]
        entries += [(p.spec.time, 1, p.spec, p.items) for p in plan.events if p.file == fname]
        entries.sort(key=lambda e: (e[0], e[1]))
        path = out / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(events_document_head())
            for k, (_, _, spec, its) in enumerate(entries):
                record = first_record[fname] + k
                f.write(event_xml(spec, record, plan.server.fqdn) + CRLF)
                for it in its:
                    items.append(it.located(fname, record=record))
            f.write(events_document_tail())
        os.utime(path, (plan.end.timestamp(), plan.end.timestamp()))
    return items


def _write_files(plan: Plan, out: Path) -> list[TruthItem]:
    """Write the planted files; their truth items are file-level (``offset`` 0, ``match`` in the content)."""
    items: list[TruthItem] = []
    for fp in plan.files:
        path = out / fp.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fp.content)
        ts = fp.time.timestamp()
        os.utime(path, (ts, ts))
        for it in fp.items:
            if it.match is not None and it.match.encode("utf-8") not in fp.content:
                raise ValueError(f"planted file {fp.path} lacks its trait {it.match!r}")
            items.append(it.located(fp.path, offset=0))
    return items


# --- entry point ----------------------------------------------------------------------------------


def _write_all(
    plan: Plan, jobs: list[LogJob], out: Path, events_budget: int, n_workers: int
) -> list[TruthItem]:
    """Write every log file (in a process pool when ``n_workers`` > 1), the event logs and the files."""
    items: list[TruthItem] = []
    if n_workers > 1:
        pool = ProcessPoolExecutor(
            max_workers=n_workers, mp_context=_pool_context(), initializer=ignore_sigint
        )
        stopped = False
        try:
            futures = [pool.submit(run_log_job, job, plan.seed, str(out), plan.server) for job in jobs]
            items += _write_events(plan, out, events_budget)
            items += _write_files(plan, out)
            for fut in as_completed(futures):
                items += fut.result()
        except KeyboardInterrupt:
            stop_pool(pool)  # Ctrl-C: the workers stopped and reaped, then the one-line message
            stopped = True
            raise
        finally:
            if not stopped:
                pool.shutdown()
    else:
        for job in jobs:
            items += run_log_job(job, plan.seed, str(out), plan.server)
        items += _write_events(plan, out, events_budget)
        items += _write_files(plan, out)
    return items


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` shares the line templates built while planning, but forking a process that runs other
    threads can deadlock the children; then (and where there is no fork) the workers are spawned and
    rebuild the templates themselves."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


# How far each wave's traces reach before and after its start time (with some room).
SCENARIO_SPAN = {
    "proxylogon": (timedelta(hours=1), timedelta(hours=1, minutes=30)),
    "proxyshell": (timedelta(0), timedelta(hours=1)),
    "proxynotshell": (timedelta(0), timedelta(hours=1)),
}
WAVE_OFFSET = {
    "proxylogon": timedelta(0),
    "proxyshell": PROXYSHELL_AFTER,
    "proxynotshell": PROXYNOTSHELL_AFTER,
}


def _scenario_times(
    chosen: Sequence[str],
    start: datetime,
    end: datetime,
    attack_time: datetime | None,
    given: Mapping[str, datetime],
) -> dict[str, datetime]:
    """When each chosen wave starts: as given, else ``attack_time`` plus its offset, else the default."""
    for name in given:
        if name not in SCENARIO_SPAN:
            raise InputError(f"scenario time for {name!r}: only {', '.join(SCENARIO_SPAN)} take a time")
        if name not in chosen:
            raise InputError(f"a time is given for {name!r}, which is not among the scenarios")
    if attack_time is None:
        attack = start.replace(hour=0) + timedelta(days=(end - start).days - 1) + DEFAULT_ATTACK_TOD
        if not start + timedelta(hours=1) <= attack <= end - timedelta(hours=6):
            attack = start + timedelta(hours=1) + DEFAULT_ATTACK_TOD % timedelta(hours=1)
    else:
        attack = ensure_utc(attack_time)
    times: dict[str, datetime] = {}
    for name in chosen:
        if name not in SCENARIO_SPAN:
            continue
        t = ensure_utc(given[name]) if name in given else attack + WAVE_OFFSET[name]
        before, after = SCENARIO_SPAN[name]
        if not start + before <= t <= end - after:
            what = "attack time" if name not in given else f"{name} time"
            raise InputError(
                f"{what} {t.isoformat()} puts {name} outside the window: it must start between "
                f"{(start + before).isoformat()} and {(end - after).isoformat()}"
            )
        times[name] = t
    return times


def _check_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{out} exists and is not a folder")
        if any(out.iterdir()):
            raise InputError(f"{out} is not empty; give a new or empty folder (nothing is overwritten)")


def write_triage(
    out: Path,
    *,
    seed: int = 0,
    size: int = 20_000_000,
    scenarios: Sequence[str] = ("all",),
    host: str = "EXCH01",
    start: datetime | None = None,
    days: int = 3,
    attack_time: datetime | None = None,
    workers: int | None = None,
    scenario_times: Mapping[str, datetime] | None = None,
) -> TruthDocument:
    """Write a triage package to ``out`` and its ``truth.json``; return the truth document.

    ``size`` is the target total size in bytes (the logs are filled with benign traffic up to it);
    ``start`` (UTC, default 2021-03-01) and ``days`` set the window the logs cover; ``attack_time``
    (default 06:49:42 UTC on the last day) is when the ProxyLogon chain starts; ProxyShell follows three
    hours later and ProxyNotShell five, unless ``scenario_times`` (wave name -> time) places them.
    ``workers`` caps the process pool (default: one per CPU for large packages, none for small ones).
    """
    out = Path(out)
    if size < MIN_SIZE:
        raise InputError(f"size {size} is too small; a package needs at least {MIN_SIZE} bytes")
    if not 1 <= days <= 90:
        raise InputError(f"days must be between 1 and 90, not {days}")
    if not host or not host.replace("-", "").isalnum() or len(host) > 15:
        raise InputError(f"host {host!r} is not a valid server name (letters, digits, '-', at most 15)")
    chosen = _expand(scenarios)
    t_start = ensure_utc(start or DEFAULT_START).replace(minute=0, second=0, microsecond=0)
    t_end = t_start + timedelta(days=days)
    times = _scenario_times(chosen, t_start, t_end, attack_time, scenario_times or {})
    _check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {out}: {exc.strerror or exc}") from exc

    server = ServerInfo(host=host.upper())
    plan = Plan(server=server, start=t_start, end=t_end, seed=seed)
    standard_web_files(plan)
    if "proxylogon" in chosen:
        proxylogon(plan, times["proxylogon"])
    if "proxyshell" in chosen:
        proxyshell(plan, times["proxyshell"])
    if "proxynotshell" in chosen:
        proxynotshell(plan, times["proxynotshell"])
    if "lookalikes" in chosen:
        lookalikes(plan)
        standard_lookalike_files(plan)
    mirror_process_events(plan)

    jobs, events_budget = _fit_size(plan, size)
    n_workers = workers if workers is not None else (min(os.cpu_count() or 1, 4) if size >= 64_000_000 else 1)
    try:
        items = _write_all(plan, jobs, out, events_budget, n_workers)
    except OSError as exc:
        # A full disk or a folder we may not write: one clear line; what was written stays for inspection.
        raise InputError(f"cannot write the package to {out}: {exc.strerror or exc}") from exc

    items.sort(key=TruthItem.sort_key)
    restart = next((j.path for j in jobs if j.restart and j.family == "httpproxy"), None)
    iis_restart = next((j.path for j in jobs if j.restart and j.family == "iis1"), None)
    rollover = next((rollover_path(j.path) for j in jobs if j.rollover), None)
    truth: TruthDocument = {
        "host": server.host,
        "start": t_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": t_end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": seed,
        "scenarios": chosen or ["clean"],
        "attack_time": times["proxylogon"].strftime("%Y-%m-%dT%H:%M:%SZ") if "proxylogon" in times else None,
        "scenario_times": {k: v.strftime("%Y-%m-%dT%H:%M:%SZ") for k, v in times.items()},
        "build": server.version_short,
        "items": [it.to_dict() for it in items],
        "notes": {"httpproxy_restart": restart, "iis_restart": iis_restart, "httpproxy_rollover": rollover},
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth
