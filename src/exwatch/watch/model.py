"""The alert a watch sends on a change, and the ``--every`` durations (pure)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from exwatch.errors import InputError

# One alert per change (never one per round):
#   exposed          a host seen vulnerable for a wave for the first time (also a host not reachable before)
#   protection_lost  patched or mitigated -> vulnerable (a removed mitigation, a reinstalled old build)
#   protected        vulnerable -> patched or mitigated
#   compromised      a new finding of likely or confirmed confidence stored by a hunt for the host
#   gone             an Exchange host unreachable for two rounds in a row
#   back             a gone host answering as Exchange again
KINDS: tuple[str, ...] = ("exposed", "protection_lost", "protected", "compromised", "gone", "back")
PROTECTED = frozenset({"patched", "mitigated"})
# Severity per kind for syslog (RFC 5424 6.2.1: 2 critical, 3 error, 4 warning, 5 notice).
SEVERITY = {"compromised": 2, "exposed": 3, "protection_lost": 3, "gone": 4, "back": 5, "protected": 5}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``6h``, ``1d`` (a bare number is seconds) as seconds; InputError otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise InputError(f"--every {text!r}: expected a duration such as 30s, 15m, 6h or 1d")
    seconds = float(m.group(1)) * _UNIT[(m.group(2) or "s").lower()]
    if seconds <= 0:
        raise InputError(f"--every {text!r}: the interval must be more than 0")
    return seconds


@dataclass(frozen=True)
class NewFinding:
    """A finding of likely or confirmed confidence stored since the last round, attributed to a watched
    host (``host`` as the watch names it); ``id`` is the store's finding id."""

    host: str
    wave: str | None
    confidence: str
    rule: str
    id: int = 0


@dataclass(frozen=True)
class Alert:
    """One change of one host (and wave), as every sink receives it.

    ``host`` is the host as the targets name it (address or DNS name); ``port`` the service that gave
    the verdict; ``wave`` is None for ``gone`` and ``back``; ``state``/``previous`` are per-wave states
    (or ``unreachable``/``compromised``); ``scan`` the stored snapshot of the round; ``id`` a stable
    identifier receivers can use to drop a repeat.
    """

    kind: str
    time: str
    host: str
    address: str | None
    port: int | None
    wave: str | None
    state: str | None
    previous: str | None
    build: str | None
    fix: str | None
    scan: int
    watch: str = ""
    detail: str | None = None

    @property
    def id(self) -> str:
        """Stable per (watch, scan, host, wave, kind): the same change is never two alerts."""
        text = f"{self.watch}|{self.scan}|{self.host}|{self.wave or ''}|{self.kind}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        """The JSON event: the fields of the issue plus ``id``, ``watch`` and ``detail``."""
        out = asdict(self)
        out["id"] = self.id
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """Back from :meth:`to_dict` (unknown keys ignored)."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})
