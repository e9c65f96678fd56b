"""Change detection (pure): the previous watch state and one round's hosts in, alerts and the next state out.

The state is plain JSON so that the alert log can keep it in the store and a restarted watch goes on
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
from typing import Any

from exwatch.watch.model import PROTECTED, Alert, NewFinding

DEFINITE = frozenset({"vulnerable", "patched", "mitigated", "not_affected"})
GONE_AFTER = 2  # rounds in a row without an Exchange answer before ``gone``


def new_state() -> dict[str, Any]:
    """The state of a watch that has seen nothing yet."""
    return {"hosts": {}, "rounds": 0, "last_scan": None, "findings_after": 0, "sinks": {}}


def _fix_text(verdict: Mapping[str, Any]) -> str | None:
    fix = verdict.get("fix")
    if isinstance(fix, Mapping):
        text = fix.get("text")
        if text:
            return str(text)
        sus = fix.get("security_update") or []
        if sus:
            return f"install build {sus[-1]} or later"
        if fix.get("cumulative_update"):
            return f"update to CU {fix['cumulative_update']}"
        return None
    return str(fix) if fix else None


def detect(
    state: Mapping[str, Any],
    hosts: Mapping[str, Mapping[str, Any]],
    *,
    scan_id: int,
    time: str,
    watch: str = "",
    waves: Sequence[str] | None = None,
    findings: Iterable[NewFinding] = (),
) -> tuple[list[Alert], dict[str, Any]]:
    """Alerts for one round and the state after it.

    ``hosts``: host -> folded host record of this round (``status``, ``address``, ``port``, ``build``,
    ``waves``: wave -> {state, fix}). ``waves``: only these waves alert (None: all). ``findings``: new
    findings already attributed to a watched host.
    """
    nxt = copy.deepcopy(dict(state)) if state else new_state()
    one = _Round(nxt.setdefault("hosts", {}), scan_id, time, watch, set(waves) if waves else None)
    for host in sorted(hosts):
        rec = hosts[host]
        if rec.get("status") == "exchange":
            one.answered(host, rec)
        elif host in one.known:
            one.missing(host, rec)
    for finding in findings:
        one.finding(finding)
    nxt["rounds"] = int(nxt.get("rounds", 0)) + 1
    nxt["last_scan"] = scan_id
    return one.alerts, nxt


def _new_entry() -> dict[str, Any]:
    return {"waves": {}, "ever_vulnerable": [], "missing": 0, "gone": False}


class _Round:
    """The rules of one round over the per-host part of the state (``known``, changed in place)."""

    def __init__(self, known: dict[str, Any], scan_id: int, time: str, watch: str, wanted: set[str] | None):
        self.known = known
        self.scan_id = scan_id
        self.time = time
        self.watch = watch
        self.wanted = wanted
        self.alerts: list[Alert] = []

    def alert(self, kind: str, host: str, rec: Mapping[str, Any], **kw: Any) -> None:
        self.alerts.append(
            Alert(
                kind=kind,
                time=self.time,
                host=host,
                address=rec.get("address"),
                port=rec.get("port"),
                wave=kw.get("wave"),
                state=kw.get("state"),
                previous=kw.get("previous"),
                build=rec.get("build"),
                fix=kw.get("fix"),
                scan=self.scan_id,
                watch=self.watch,
                detail=kw.get("detail"),
            )
        )

    def answered(self, host: str, rec: Mapping[str, Any]) -> None:
        """An Exchange answer: ``back`` for a gone host, then each wave's change."""
        entry = self.known.get(host)
        if entry is None:
            entry = self.known[host] = _new_entry()
        if entry.get("gone"):
            self.alert("back", host, rec, state="exchange", previous="unreachable")
            entry["gone"] = False
        entry["missing"] = 0
        entry["address"] = rec.get("address")
        entry["port"] = rec.get("port")
        entry["build"] = rec.get("build")
        for wave, verdict in sorted((rec.get("waves") or {}).items()):
            if isinstance(verdict, Mapping):
                self.wave(host, rec, entry, wave, verdict)

    def wave(
        self, host: str, rec: Mapping[str, Any], entry: dict[str, Any], wave: str, verdict: Mapping[str, Any]
    ) -> None:
        """``exposed``, ``protection_lost`` or ``protected`` for one wave's definite state."""
        now = str(verdict.get("state"))
        if now not in DEFINITE:
            return
        before = entry["waves"].get(wave)
        entry["waves"][wave] = now
        if self.wanted is not None and wave not in self.wanted:
            if now == "vulnerable" and wave not in entry["ever_vulnerable"]:
                entry["ever_vulnerable"].append(wave)
            return
        fix = _fix_text(verdict)
        if now == "vulnerable":
            if before in PROTECTED:
                kind = "protection_lost"
            elif wave not in entry["ever_vulnerable"]:
                kind = "exposed"
            else:
                kind = ""
            if wave not in entry["ever_vulnerable"]:
                entry["ever_vulnerable"].append(wave)
            if kind:
                self.alert(kind, host, rec, wave=wave, state=now, previous=before, fix=fix)
        elif now in PROTECTED and before == "vulnerable":
            self.alert("protected", host, rec, wave=wave, state=now, previous=before, fix=None)

    def missing(self, host: str, rec: Mapping[str, Any]) -> None:
        """No Exchange answer from a host seen as Exchange before: ``gone`` on the second round in a row."""
        entry = self.known[host]
        entry["missing"] = int(entry.get("missing", 0)) + 1
        if entry["missing"] >= GONE_AFTER and not entry.get("gone"):
            entry["gone"] = True
            last = {
                "address": entry.get("address"),
                "port": entry.get("port"),
                "build": entry.get("build"),
            }
            reason = rec.get("error") or rec.get("status")
            self.alert("gone", host, last, state=str(rec.get("status")), previous="exchange", detail=reason)

    def finding(self, finding: NewFinding) -> None:
        """``compromised`` once per host and wave."""
        host = finding.host
        wave = finding.wave or None
        if self.wanted is not None and wave is not None and wave not in self.wanted:
            return
        entry = self.known.get(host)
        if entry is None:
            entry = self.known[host] = _new_entry()
        done = entry.setdefault("compromised", [])
        if (wave or "") in done:
            return
        done.append(wave or "")
        last = {"address": entry.get("address"), "port": entry.get("port"), "build": entry.get("build")}
        previous = entry["waves"].get(wave) if wave else None
        detail = f"{finding.rule} ({finding.confidence})"
        self.alert(
            "compromised", host, last, wave=wave, state="compromised", previous=previous, detail=detail
        )
