"""Change detection (pure): the previous watch state and one round's hosts in, alerts and the next state out.

The state (:class:`WatchState`) is kept as JSON so that the alert log can keep it in the store and a restarted watch goes on
where the last recorded round left it.  Per host it holds the last *definite* state of each wave
(``vulnerable``, ``patched``, ``mitigated``, ``not_affected``: an ``unknown`` round changes nothing),
the waves ever seen vulnerable, how many rounds in a row the host gave no Exchange answer, and whether
a ``gone`` alert is open.  Per host and wave it remembers a ``compromised`` alert once sent.

Rules, per host (the per-service fold of exwatch.scan.fold has already chosen the verdict):

* an Exchange answer: for each wave with a definite state S and a last definite state P,
  ``exposed`` if S is vulnerable and the wave was never vulnerable before; ``protection_lost`` if S is
  vulnerable and P is patched or mitigated; ``protected`` if P is vulnerable and S patched or mitigated.
  A host with an open ``gone`` gets ``back`` first.
* no Exchange answer (unreachable, or not Exchange any more) for a host seen as Exchange before:
  on the second such round in a row, ``gone`` (once).
* a finding of likely or confirmed confidence for a host: ``compromised`` once per host and wave.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

from exwatch.watch.model import PROTECTED, Alert, HostEntry, HostSeen, NewFinding, WatchState, WaveSeen

DEFINITE = frozenset({"vulnerable", "patched", "mitigated", "not_affected"})
GONE_AFTER = 2  # rounds in a row without an Exchange answer before ``gone``


def new_state() -> WatchState:
    """The state of a watch that has seen nothing yet."""
    return WatchState()


def detect(
    state: WatchState | None,
    hosts: Mapping[str, HostSeen],
    *,
    scan_id: int,
    time: str,
    watch: str = "",
    waves: Sequence[str] | None = None,
    findings: Iterable[NewFinding] = (),
) -> tuple[list[Alert], WatchState]:
    """Alerts for one round and the state after it (``state`` itself is not changed).

    ``hosts``: host -> its folded record of this round. ``waves``: only these waves alert (None: all).
    ``findings``: new findings already attributed to a watched host.
    """
    nxt = copy.deepcopy(state) if state is not None else WatchState()
    one = _Round(nxt.hosts, scan_id, time, watch, set(waves) if waves else None)
    for host in sorted(hosts):
        rec = hosts[host]
        if rec.status == "exchange":
            one.answered(host, rec)
        elif host in one.known:
            one.missing(host, rec)
    for finding in findings:
        one.finding(finding)
    nxt.rounds += 1
    nxt.last_scan = scan_id
    return one.alerts, nxt


class _Round:
    """The rules of one round over the per-host part of the state (``known``, changed in place)."""

    def __init__(
        self, known: dict[str, HostEntry], scan_id: int, time: str, watch: str, wanted: set[str] | None
    ):
        self.known = known
        self.scan_id = scan_id
        self.time = time
        self.watch = watch
        self.wanted = wanted
        self.alerts: list[Alert] = []

    def alert(
        self,
        kind: str,
        host: str,
        where: HostSeen | HostEntry,
        *,
        wave: str | None = None,
        state: str | None = None,
        previous: str | None = None,
        fix: str | None = None,
        detail: str | None = None,
    ) -> None:
        """One alert; address, port and build from ``where`` (this round's answer or the last one)."""
        self.alerts.append(
            Alert(
                kind=kind,
                time=self.time,
                host=host,
                address=where.address,
                port=where.port,
                wave=wave,
                state=state,
                previous=previous,
                build=where.build,
                fix=fix,
                scan=self.scan_id,
                watch=self.watch,
                detail=detail,
            )
        )

    def answered(self, host: str, rec: HostSeen) -> None:
        """An Exchange answer: ``back`` for a gone host, then each wave's change."""
        entry = self.known.get(host)
        if entry is None:
            entry = self.known[host] = HostEntry()
        if entry.gone:
            self.alert("back", host, rec, state="exchange", previous="unreachable")
            entry.gone = False
        entry.missing = 0
        entry.address = rec.address
        entry.port = rec.port
        entry.build = rec.build
        for wave, verdict in sorted(rec.waves.items()):
            self.wave(host, rec, entry, wave, verdict)

    def wave(self, host: str, rec: HostSeen, entry: HostEntry, wave: str, verdict: WaveSeen) -> None:
        """``exposed``, ``protection_lost`` or ``protected`` for one wave's definite state."""
        now = verdict.state
        if now not in DEFINITE:
            return
        before = entry.waves.get(wave)
        entry.waves[wave] = now
        if self.wanted is not None and wave not in self.wanted:
            if now == "vulnerable" and wave not in entry.ever_vulnerable:
                entry.ever_vulnerable.append(wave)
            return
        if now == "vulnerable":
            if before in PROTECTED:
                kind = "protection_lost"
            elif wave not in entry.ever_vulnerable:
                kind = "exposed"
            else:
                kind = ""
            if wave not in entry.ever_vulnerable:
                entry.ever_vulnerable.append(wave)
            if kind:
                self.alert(kind, host, rec, wave=wave, state=now, previous=before, fix=verdict.fix)
        elif now in PROTECTED and before == "vulnerable":
            self.alert("protected", host, rec, wave=wave, state=now, previous=before, fix=None)

    def missing(self, host: str, rec: HostSeen) -> None:
        """No Exchange answer from a host seen as Exchange before: ``gone`` on the second round in a row."""
        entry = self.known[host]
        entry.missing += 1
        if entry.missing >= GONE_AFTER and not entry.gone:
            entry.gone = True
            reason = rec.error or rec.status
            self.alert("gone", host, entry, state=str(rec.status), previous="exchange", detail=reason)

    def finding(self, finding: NewFinding) -> None:
        """``compromised`` once per host and wave."""
        host = finding.host
        wave = finding.wave or None
        if self.wanted is not None and wave is not None and wave not in self.wanted:
            return
        entry = self.known.get(host)
        if entry is None:
            entry = self.known[host] = HostEntry()
        if (wave or "") in entry.compromised:
            return
        entry.compromised.append(wave or "")
        previous = entry.waves.get(wave) if wave else None
        detail = f"{finding.rule} ({finding.confidence})"
        self.alert(
            "compromised", host, entry, wave=wave, state="compromised", previous=previous, detail=detail
        )
