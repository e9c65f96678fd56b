"""Scenario steps: planted evidence written as tables of frozen records, read by one planter.

A scenario (:mod:`exwatch.lab.triage_scenarios`) is a tuple of steps. Each step says *when* (an
offset from a named time), *where* (a log line of one family, a Windows event, or a file) and what
the *truth* is there (the ground-truth items a correct hunt must report). :func:`plant` walks the
steps in order and adds each one to the :class:`~exwatch.lab.triage_plan.Plan` as a plant.

Text fields are templates: ``{name}`` is filled from the run's names (the server's facts, values
the scenario computes once, and values drawn by earlier :class:`Draw` steps); ``{guid}`` is a fresh
GUID drawn where it stands. A :class:`RandInt` field is a number drawn where it stands. A filled
value is never read again as a template, so a server name holding braces stays as it is.

The order of the draws is part of the output: a seed must write the same package. Everything that
draws from the scenario's random stream (``{guid}``, :class:`RandInt`, :class:`Draw`, :class:`Mark`
with jitter, the line builders, the file builders) does so when the planter reaches it, in step
order and, inside a step, in field order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from exwatch.lab import triage_traffic as traffic
from exwatch.lab.triage_formats import EventSpec, ServerInfo
from exwatch.lab.triage_plan import (
    EVT_DEFENDER,
    EVT_MANAGEMENT,
    EVT_POWERSHELL,
    EVT_SYSMON,
    EventPlant,
    FilePlant,
    Plan,
    TruthItem,
    add_line,
    defender_detection,
    ecp_file,
    iis_file,
    iis_text,
    item,
    mgmt_event,
    oabgen_file,
    proxy_file,
    proxy_text,
    script_block,
    sysmon_file,
    sysmon_process,
    win_path,
)

_SLOT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class RandInt:
    """A whole number from ``low`` to ``high`` (both included), drawn when the planter reaches it."""

    low: int
    high: int


# A text field of a step: a template (see the module docstring) or a drawn number.
Field = str | RandInt


@dataclass(frozen=True)
class When:
    """A moment of a scenario: ``offset`` after the named time (``t0``, or one set by :class:`Mark`)."""

    anchor: str
    offset: timedelta = timedelta(0)


def after(anchor: str, **delta: float) -> When:
    """``after("t2", minutes=3, seconds=12)``: that long after the named time."""
    return When(anchor, timedelta(**delta))


@dataclass(frozen=True)
class Truth:
    """One ground-truth item of a step; its kind, wave and time come from the run and the step."""

    detection: str
    cve: str | None = None
    match: str | None = None  # a template: the text the hunt's finding must point at
    expect: str | None = None  # look-alikes: the highest confidence a correct hunt may give here
    note: str | None = None


@dataclass
class ScenarioRun:
    """One scenario being planted: its plan, random stream, named times and names."""

    plan: Plan
    kind: str  # "attack" or "lookalike"
    wave: str
    rnd: random.Random
    times: dict[str, datetime]
    names: dict[str, str] = field(default_factory=dict)

    def time(self, when: When) -> datetime:
        """The moment ``when`` names."""
        return self.times[when.anchor] + when.offset

    def fill(self, value: Field) -> str:
        """A field's text: templates filled (``{guid}`` drawn, left to right), numbers drawn."""
        if isinstance(value, RandInt):
            return str(self.rnd.randint(value.low, value.high))
        return _SLOT.sub(self._slot, value)

    def _slot(self, m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "guid":
            return traffic.guid(self.rnd)
        try:
            return self.names[name]
        except KeyError:
            raise KeyError(f"scenario template names {{{name}}}, which this run does not define") from None

    def items(self, truth: Iterable[Truth], t: datetime) -> list[TruthItem]:
        """The ground-truth items of a step at ``t``."""
        return [
            item(
                self.kind,
                self.wave,
                x.cve,
                x.detection,
                t,
                match=None if x.match is None else self.fill(x.match),
                expect=x.expect,
                note=x.note,
            )
            for x in truth
        ]

    def line(self, file: str, t: datetime, text: str, truth: Iterable[Truth], truth_time: datetime) -> None:
        """Plant a log line (with context items for published indicators in its text)."""
        add_line(self.plan, file, t, text, self.items(truth, truth_time), self.wave, self.kind)

    def event(self, log: str, spec: EventSpec, truth: Iterable[Truth]) -> None:
        """Plant a Windows event in the exported log ``log``."""
        self.plan.events.append(EventPlant(log, spec, self.items(truth, spec.time)))


def server_names(server: ServerInfo) -> dict[str, str]:
    """The server's facts as template names: ``{host}``, ``{fqdn}``, ``{netbios}``..."""
    return {
        "host": server.host,
        "fqdn": server.fqdn,
        "domain": server.domain,
        "netbios": server.netbios,
        "address": server.address,
        "url_host": server.url_host,
        "version_short": server.version_short,
    }


class Step(Protocol):
    """One row of a scenario table."""

    def plant(self, run: ScenarioRun) -> None:
        """Add this step to the run's plan."""


def plant(run: ScenarioRun, steps: Iterable[Step]) -> None:
    """The planter: add every step of a scenario table to the plan, in order."""
    for step in steps:
        step.plant(run)


# --- steps that set names and times ----------------------------------------------------------------


@dataclass(frozen=True)
class Draw:
    """Draw a value (a file name, a token) from the scenario's random stream and name it."""

    name: str
    draw: Callable[[random.Random], str]

    def plant(self, run: ScenarioRun) -> None:
        run.names[self.name] = self.draw(run.rnd)


def random_text(
    alphabet: str, length: int, prefix: str = "", suffix: str = ""
) -> Callable[[random.Random], str]:
    """A drawer of ``length`` characters of ``alphabet`` between ``prefix`` and ``suffix``."""
    return lambda rnd: prefix + "".join(rnd.choice(alphabet) for _ in range(length)) + suffix


@dataclass(frozen=True)
class Mark:
    """Name a moment (``at``, plus up to ``jitter`` whole seconds drawn) for later steps."""

    name: str
    at: When
    jitter: int = 0

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        if self.jitter:
            t += timedelta(seconds=run.rnd.randint(0, self.jitter))
        run.times[self.name] = t


# --- log lines -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyLine:
    """An HttpProxy log line of ``protocol``: ``values`` over the usual row (log_formats.md 2)."""

    at: When
    protocol: str
    values: Mapping[str, Field]
    truth: tuple[Truth, ...] = ()

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        values = {k: run.fill(v) for k, v in self.values.items()}
        text = proxy_text(run.plan.server, self.protocol, t, run.rnd, **values)
        run.line(proxy_file(self.protocol, t), t, text, self.truth, t)


@dataclass(frozen=True)
class IisLine:
    """A W3SVC log line: the front end (site 1, port 443) or the back end (site 2, port 444)."""

    at: When
    method: str
    stem: Field
    query: Field
    user: Field
    client: Field
    agent: str
    status: str
    time_taken: Field
    truth: tuple[Truth, ...] = ()
    back_end: bool = False
    # The back end logs a proxied call this long after the request; the line goes to the file of
    # the request's hour and the truth names the request's time.
    lag: timedelta = timedelta(0)

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        logged = t + self.lag
        values = {
            "cs-method": self.method,
            "cs-uri-stem": run.fill(self.stem),
            "cs-uri-query": run.fill(self.query),
            "cs-username": run.fill(self.user),
            "c-ip": run.fill(self.client),
            "cs(User-Agent)": self.agent,
            "sc-status": self.status,
            "time-taken": run.fill(self.time_taken),
        }
        port = "444" if self.back_end else "443"
        text = iis_text(run.plan.server, port, logged, run.rnd, **values)
        run.line(iis_file("2" if self.back_end else "1", t), logged, text, self.truth, t)


@dataclass(frozen=True)
class EcpLine:
    """An ECP Server log line: a cmdlet run through the control panel (log_formats.md 3)."""

    at: When
    cmd: str
    url: str
    sid: str
    truth: tuple[Truth, ...] = ()

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        cmd, url, sid = run.fill(self.cmd), run.fill(self.url), run.fill(self.sid)
        text = traffic.ecp_text(run.plan.server, t, run.rnd, cmd, url, sid)
        run.line(ecp_file(t), t, text, self.truth, t)


@dataclass(frozen=True)
class OabgenLine:
    """An OAB generator log line."""

    at: When
    message: str
    level: str
    truth: tuple[Truth, ...] = ()

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        text = traffic.oabgen_text(t, run.rnd, run.fill(self.message), level=self.level)
        run.line(oabgen_file(t), t, text, self.truth, t)


# --- Windows events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cmdlet:
    """An MSExchange Management event: a cmdlet that ran, with its parameters."""

    at: When
    cmdlet: str
    params: str
    user: str
    sid: str
    truth: tuple[Truth, ...] = ()

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        spec = mgmt_event(
            run.plan, t, self.cmdlet, run.fill(self.params), run.fill(self.user), run.fill(self.sid)
        )
        run.event(EVT_MANAGEMENT, spec, self.truth)


@dataclass(frozen=True)
class Process:
    """A Sysmon process creation (event 1); ``mirror_process_events`` adds its Security 4688 later."""

    at: When
    image: str
    command: str
    parent_image: str
    parent_command: str
    truth: tuple[Truth, ...] = ()

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        command = run.fill(self.command)
        spec = sysmon_process(run.plan, t, self.image, command, self.parent_image, self.parent_command)
        run.event(EVT_SYSMON, spec, self.truth)


@dataclass(frozen=True)
class FileCreated:
    """A Sysmon file creation (event 11) of a package-relative ``path`` by ``image``."""

    at: When
    image: str
    path: str
    truth: tuple[Truth, ...] = ()

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        run.event(EVT_SYSMON, sysmon_file(run.plan, t, self.image, win_path(run.fill(self.path))), self.truth)


@dataclass(frozen=True)
class ScriptBlock:
    """A PowerShell script block (Operational 4104)."""

    at: When
    text: str
    truth: tuple[Truth, ...] = ()
    path: str = ""
    level: int = 5

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        run.event(
            EVT_POWERSHELL, script_block(run.plan, t, self.text, path=self.path, level=self.level), self.truth
        )


@dataclass(frozen=True)
class Defender:
    """A Windows Defender detection (Operational 1116)."""

    at: When
    threat: str
    path: str
    process: str
    category: str
    truth: tuple[Truth, ...] = ()

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        spec = defender_detection(run.plan, t, self.threat, run.fill(self.path), self.process, self.category)
        run.event(EVT_DEFENDER, spec, self.truth)


@dataclass(frozen=True)
class Event:
    """Any other event: ``make`` builds it for the step's time."""

    at: When
    log: str
    make: Callable[[datetime], EventSpec]
    truth: tuple[Truth, ...] = ()

    def plant(self, run: ScenarioRun) -> None:
        run.event(self.log, self.make(run.time(self.at)), self.truth)


# --- files -----------------------------------------------------------------------------------------

# A file's bytes, or a builder of them given the run (names, random stream) and the file's time.
Content = bytes | Callable[[ScenarioRun, datetime], bytes]


@dataclass(frozen=True)
class File:
    """A file in the package; ``replace`` drops an earlier plant of the same path first."""

    at: When
    path: str
    content: Content
    truth: tuple[Truth, ...] = ()
    replace: bool = False

    def plant(self, run: ScenarioRun) -> None:
        t = run.time(self.at)
        path = run.fill(self.path)
        data = self.content if isinstance(self.content, bytes) else self.content(run, t)
        if self.replace:
            run.plan.files = [f for f in run.plan.files if f.path != path]
        run.plan.files.append(FilePlant(path, data, t, run.items(self.truth, t)))
