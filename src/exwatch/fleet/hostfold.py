"""One host's services folded into one verdict, as they arrive (the precedence of exwatch.scan.fold).

Used for a host's services within one scan (store ingest) and for its latest services across scans
(the fleet picture), so that both fold the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TypedDict

from exwatch.record import Observation
from exwatch.scan.fold import EXPOSURE, builds_disagree


@functools.lru_cache(maxsize=65536)
def cu_of(build: str | None) -> str | None:
    """The cumulative update key "major.minor.build" of a build string (leading zeros dropped)."""
    if not build:
        return None
    parts = str(build).split(".")
    if len(parts) < 3:
        return None
    try:
        return ".".join(str(int(p)) for p in parts[:3])
    except ValueError:
        return None


class WaveState(TypedDict):
    """A wave's state as the store keeps it per detail body (``detail_states``): the state alone."""

    state: str


class StoredService(TypedDict):
    """A service read back from the store to be folded again: the fields of an :class:`Observation`
    a fold reads (a resumed scan, a merge or split, the fleet picture)."""

    status: str | None
    port: int | None
    build: str | None
    cu_only: bool | None
    time: str | None
    waves: Mapping[str, WaveState]


# What a fold writes: status, rank, port, build, conflict and the sorted (wave, state) pairs.
FoldKey = tuple[str, int, int | None, str | None, bool, tuple[tuple[str, str], ...]]

# Per-wave states kept per host; host-level ones (unreachable, not_exchange) are statuses instead.
WAVE_STATES = frozenset({"vulnerable", "patched", "mitigated", "unknown", "not_affected"})


class HostFold:
    """One host's services (ranks as exwatch.scan.fold.service_rank: tests/fleet check they agree) in one scan folded as they arrive (the precedence of exwatch.scan.fold).

    The winner is the highest rank, then the newest, then the lowest port.  Per-wave states: the most
    exposed over the Exchange answers of the winning rank, or over every Exchange answer when two of
    them disagree on the build (``conflict``).
    """

    __slots__ = (
        "build",
        "builds",
        "conflict",
        "cu",
        "port",
        "rank",
        "scan_id",
        "states_all",
        "states_top",
        "status",
        "when",
    )

    def __init__(self) -> None:
        self.rank = 0
        self.status = "unreachable"
        self.port: int | None = None
        self.build: str | None = None
        self.cu: str | None = None
        self.when = ""
        self.builds: tuple[str, ...] = ()
        self.conflict = False
        self.states_top: dict[str, str] = {}
        self.states_all: dict[str, str] = {}
        self.scan_id: int | None = None

    def add(self, rec: Observation | StoredService, cu: str | None) -> None:
        """Fold one more service of the host (``cu``: its build's CU key, ``cu_of(build)``)."""
        status = rec.get("status") or "exchange"
        exchange = status == "exchange"
        build = rec.get("build")
        if exchange:
            rank = 4 if build and not rec.get("cu_only") else 3
        else:
            rank = 2 if status == "not_exchange" else 1
        when = str(rec.get("time") or "")
        port = rec.get("port")
        if exchange:
            states: dict[str, str] = {}
            waves = rec.get("waves")
            if waves:
                for wave, verdict in waves.items():
                    state = verdict.get("state") if isinstance(verdict, dict) else verdict
                    if state in WAVE_STATES:
                        states[wave] = state
            if build:
                if not self.builds:
                    self.builds = (str(build),)
                elif build not in self.builds:
                    if any(builds_disagree(build, b) for b in self.builds):
                        self.conflict = True
                    self.builds = (*self.builds, str(build))
            if self.rank == 0:  # the first answer: nothing to fold yet (the common case)
                self.states_all = states
                self.states_top = dict(states)
                self.rank, self.when, self.port, self.status, self.build, self.cu = (
                    rank,
                    when,
                    port,
                    status,
                    build,
                    cu,
                )
                return
            _most_exposed_into(self.states_all, states)
        else:
            states = {}
        better = rank > self.rank or (
            rank == self.rank and (when > self.when or (when == self.when and (port or 0) < (self.port or 0)))
        )
        if rank > self.rank:
            self.states_top = dict(states)
        elif rank == self.rank and exchange:
            _most_exposed_into(self.states_top, states)
        if better:
            self.rank, self.when, self.port = rank, when, port
            self.status = str(status)
            self.build = build
            self.cu = cu

    def states(self) -> dict[str, str]:
        """The host's per-wave states in this scan (none unless an Exchange answer won)."""
        if self.rank < 3:
            return {}
        return self.states_all if self.conflict else self.states_top

    def key(self) -> FoldKey:
        """What is written of the fold (scan_hosts and its states): equal keys need no new write."""
        return (
            self.status,
            self.rank,
            self.port,
            self.build,
            self.conflict,
            tuple(sorted(self.states().items())),
        )


def _most_exposed_into(into: dict[str, str], states: dict[str, str]) -> None:
    for wave, state in states.items():
        old = into.get(wave)
        if old is None or EXPOSURE.get(state, 9) < EXPOSURE.get(old, 9):
            into[wave] = state
