"""Services, then hosts: fold the (host, port) observations of one host into one host record (pure).

A scan observes services: each (host, port) it was asked to try gives one record (the store keeps them
all). A host's verdict comes from folding its services with one stated precedence, defined here once
for the scanner's output and the fleet picture alike:

====  =======================================================================
rank  service record
====  =======================================================================
4     status ``exchange`` with an exact build (``build`` set, not ``cu_only``)
3     status ``exchange`` with only the CU, or with no build
2     status ``not_exchange`` (an HTTP server that is not Exchange)
1     anything else: ``unreachable`` (refused, timeout, reset, TLS errors, DNS, excluded)
====  =======================================================================

The highest rank wins; between equal ranks the newer observation wins, then the lower port (so the
result does not depend on the order the records arrive in). The winning service gives the host its
status, build and error, and ``port`` says which port gave the verdict.

Per-wave states: a host is as exposed as its most exposed way in. Among the Exchange answers of the
winning rank (same knowledge of the build; their states differ only by probes, e.g. a mitigation on
one IIS site only) the host takes the most exposed state of each wave. Two Exchange answers whose
builds disagree (neither is the other or its CU) set ``conflict``, and the host then takes the most
exposed state of each wave over every Exchange answer: ``vulnerable`` > ``unknown`` > ``mitigated``
> ``patched`` > ``not_affected``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from exwatch.record import HostRecord, Observation, ServiceEntry, WaveEntry

__all__ = [
    "EXPOSURE",
    "SERVICE_RANK",
    "HostFolder",
    "builds_disagree",
    "fold_services",
    "host_of",
    "most_exposed",
    "ordered",
    "service_rank",
]

#: Rank of a service record's answer; the highest wins (see the module docstring).
SERVICE_RANK: dict[str, int] = {
    "exchange_build": 4,
    "exchange_cu": 3,
    "not_exchange": 2,
    "other": 1,
}

#: Per-wave states, most exposed first: a lower number is more exposed.
EXPOSURE: dict[str, int] = {
    "vulnerable": 0,
    "unknown": 1,
    "mitigated": 2,
    "patched": 3,
    "not_affected": 4,
    "not_exchange": 5,
    "unreachable": 6,
}


def service_rank(record: Observation) -> int:
    """The rank (1 to 4) of one service record's answer."""
    status = record.get("status")
    if status == "exchange":
        if record.get("build") and not record.get("cu_only"):
            return SERVICE_RANK["exchange_build"]
        return SERVICE_RANK["exchange_cu"]
    if status == "not_exchange":
        return SERVICE_RANK["not_exchange"]
    return SERVICE_RANK["other"]


def _parts(build: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in str(build).split(".") if p.strip())


def builds_disagree(a: str | None, b: str | None) -> bool:
    """Do two reported builds contradict each other? A CU (``15.2.858``) agrees with its full builds."""
    if not a or not b:
        return False
    pa, pb = _parts(a), _parts(b)
    n = min(len(pa), len(pb))
    return pa[:n] != pb[:n]


def most_exposed(states: Iterable[str]) -> str | None:
    """The most exposed of some per-wave states (None for none)."""
    return min(states, key=lambda s: EXPOSURE.get(s, 9), default=None)


def host_of(record: Observation) -> str:
    """The host a service record belongs to, for grouping one scan's records: the name it was given,
    else its address, else the host part of its key."""
    if record.get("name"):
        return str(record["name"])
    if record.get("address"):
        return str(record["address"])
    key = str(record.get("key") or "")
    rest = key.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0]


def _port_of(record: Observation) -> int:
    try:
        return int(record.get("port") or 0)
    except (TypeError, ValueError):
        return 0


def ordered(records: Iterable[Observation]) -> list[Observation]:
    """Service records best first: rank high, then time new (ISO text), then port low (stable sorts)."""
    recs = sorted(records, key=lambda r: (_port_of(r), str(r.get("key") or "")))
    recs.sort(key=lambda r: str(r.get("time") or ""), reverse=True)
    recs.sort(key=service_rank, reverse=True)
    return recs


def _service(record: Observation) -> ServiceEntry:
    return {
        "key": record.get("key"),
        "port": record.get("port"),
        "scheme": record.get("scheme"),
        "status": record.get("status"),
        "error": record.get("error"),
        "build": record.get("build"),
        "rank": service_rank(record),
    }


def fold_services(records: Iterable[Observation]) -> HostRecord:
    """One host record from the service records of one host (ValueError for none).

    The result is a copy of the winning service record with:
    ``port`` (and ``key``, ``scheme``) of the service that gave the verdict; ``services``, every
    service as ``{key, port, scheme, status, error, build, rank}`` sorted by port; ``conflict``, True
    when two Exchange answers disagree on the build (the builds are listed in ``conflicts``);
    ``waves`` folded as the module docstring says (each wave's entry comes from the service that
    had the chosen state, with ``port`` added).
    """
    recs = ordered(records)
    if not recs:
        raise ValueError("fold_services needs at least one service record")
    winner = recs[0]
    exchange = [r for r in recs if r.get("status") == "exchange"]
    builds = sorted({str(r["build"]) for r in exchange if r.get("build")})
    conflict = any(builds_disagree(a, b) for i, a in enumerate(builds) for b in builds[i + 1 :])
    host: HostRecord = {
        **winner,
        "services": [_service(r) for r in sorted(recs, key=lambda r: (_port_of(r), str(r.get("key"))))],
        "conflict": conflict,
    }
    host["conflicts"] = list(winner.get("conflicts") or [])
    if conflict:
        ports = ", ".join(
            f"{r.get('build')} on port {r.get('port')}" for r in exchange if r.get("build") is not None
        )
        host["conflicts"].append(f"build: the services disagree ({ports}); the most exposed state is kept")
    if len(exchange) > 1:
        top = service_rank(winner)
        voters = exchange if conflict else [r for r in exchange if service_rank(r) == top]
        host["waves"] = _fold_waves(voters)
    return host


def _fold_waves(voters: list[Observation]) -> dict[str, WaveEntry]:
    out: dict[str, WaveEntry] = {}
    wave_ids: list[str] = []
    for r in voters:
        for w in r.get("waves") or {}:
            if w not in wave_ids:
                wave_ids.append(w)
    for w in wave_ids:
        best: tuple[int, WaveEntry, Observation] | None = None
        for r in voters:
            v = (r.get("waves") or {}).get(w)
            if not isinstance(v, Mapping):
                continue
            score = EXPOSURE.get(str(v.get("state")), 9)
            if best is None or score < best[0]:
                best = (score, v, r)
        if best is not None:
            out[w] = {**best[1], "port": best[2].get("port")}
    return out


class _Pending:
    __slots__ = ("closed", "records", "remaining")

    def __init__(self) -> None:
        self.records: list[Observation] = []
        self.remaining = 0
        self.closed = False


class HostFolder:
    """Fold a stream of service records into host records as soon as each host is complete.

    The scan announces each service before it is scanned (:meth:`expect`, in stream order, where a
    host's services come together); a host is folded when the stream has moved past it and all its
    announced services came back (:meth:`add`). :meth:`finish` folds what is left (the stream's end, or
    an interruption: a host then folds over the services that finished). Memory: the services in flight.
    """

    def __init__(self) -> None:
        self._host_of: dict[str, str] = {}
        self._pending: dict[str, _Pending] = {}
        self._last: str | None = None

    def expect(self, key: str, host: str) -> list[HostRecord]:
        """A service (its record key) of ``host`` is about to be scanned; returns hosts now complete."""
        ready: list[HostRecord] = []
        if self._last is not None and host != self._last:
            ready.extend(self._close(self._last))
        self._last = host
        self._host_of[key] = host
        pending = self._pending.setdefault(host, _Pending())
        pending.closed = False
        pending.remaining += 1
        return ready

    def add(self, record: Observation) -> list[HostRecord]:
        """A service record came back; returns the host record if its host is now complete."""
        host = self._host_of.pop(str(record.get("key")), None)
        if host is None:  # never announced: a host of its own
            return [fold_services([record])]
        pending = self._pending[host]
        pending.records.append(record)
        pending.remaining -= 1
        if pending.closed and pending.remaining == 0:
            del self._pending[host]
            return [fold_services(pending.records)]
        return []

    def _close(self, host: str) -> list[HostRecord]:
        pending = self._pending.get(host)
        if pending is None:
            return []
        pending.closed = True
        if pending.remaining == 0:
            del self._pending[host]
            return [fold_services(pending.records)] if pending.records else []
        return []

    def end_of_stream(self) -> list[HostRecord]:
        """No more services will be announced: the last host is closed (returned if complete)."""
        last, self._last = self._last, None
        return self._close(last) if last is not None else []

    def finish(self) -> list[HostRecord]:
        """Fold every host still open over the services that came back (and forget them)."""
        out = [fold_services(p.records) for p in self._pending.values() if p.records]
        self._pending.clear()
        self._host_of.clear()
        self._last = None
        return out

    @property
    def open_hosts(self) -> int:
        """Hosts announced but not folded yet."""
        return len(self._pending)
