"""The options of a scan: everything that shapes it, stored with it so that ``--resume`` can replay it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

from exwatch.errors import InputError
from exwatch.scan.targets import Port, parse_ports

DEFAULT_PORTS: tuple[Port, ...] = (Port(443, "https"), Port(80, "http"))


@dataclass
class ScanOptions:
    """Everything that shapes a scan; stored with the scan so that ``--resume`` can replay it."""

    ports: tuple[Port, ...] = DEFAULT_PORTS
    probe: bool = False
    concurrency: int = 256
    rate: float = 0.0  # requests per second over the whole scan; 0 = no limit
    per_host: float = 20.0  # requests per second to one address; 0 = no limit
    timeout: float = 5.0  # per request (connect, send, read)
    host_budget: float = 30.0  # wall clock per target, whatever happens
    max_body: int = 128 * 1024
    max_headers: int = 100
    retries: int = 1
    shuffle: bool = True
    seed: int | None = None
    yes_large: bool = False
    exclude: tuple[str, ...] = ()  # addresses, networks, names, or files of them (re-read when changed)
    targets_files: tuple[str, ...] = ()
    batch_size: int = 500
    flush_interval: float = 1.0
    waves: tuple[str, ...] = ()  # waves that decide the exit code and the exposed list (): every wave
    as_of: str | None = None  # ISO date: verdicts with the knowledge of that day (None: today)

    # The stored form is free-form JSON on purpose: its keys are this dataclass's fields (asdict), and
    # from_params reads back what any version stored (keys it does not know are left out).
    def to_params(self) -> dict[str, Any]:
        """A JSON-ready form (paths made absolute so that a resume from elsewhere finds them)."""
        out = asdict(self)
        out["ports"] = [f"{p.number}/{p.scheme}" for p in self.ports]
        out["exclude"] = [str(Path(e).resolve()) if Path(e).is_file() else e for e in self.exclude]
        out["targets_files"] = [str(Path(f).resolve()) for f in self.targets_files]
        return out

    @classmethod
    def from_params(cls, data: Mapping[str, Any]) -> ScanOptions:
        """The options back from :meth:`to_params`."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "ports" in kwargs:
            kwargs["ports"] = parse_ports(",".join(kwargs["ports"]))
        for key in ("exclude", "targets_files", "waves"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def validate(self) -> None:
        """Reject values that cannot work, with a one-line message."""
        if self.concurrency < 1:
            raise InputError("--concurrency must be at least 1")
        if self.rate < 0 or self.per_host < 0:
            raise InputError("--rate and --per-host must be 0 (no limit) or more")
        if self.timeout <= 0 or self.host_budget <= 0:
            raise InputError("--timeout and --host-budget must be more than 0")
        if self.max_body < 1024:
            raise InputError("--max-body must be at least 1024 bytes")
        if not 0 <= self.retries <= 5:
            raise InputError("--retries must be between 0 and 5")
        if self.waves:
            from exwatch.scan.observation import wave_ids

            known = wave_ids()
            bad = [w for w in self.waves if w not in known]
            if bad:
                raise InputError(f"unknown wave {bad[0]!r} for --wave; valid: {', '.join(known)}")
        if self.as_of is not None:
            self.as_of_date()

    def as_of_date(self) -> date | None:
        """``as_of`` as a date (InputError for a bad one)."""
        if self.as_of is None:
            return None
        try:
            return date.fromisoformat(str(self.as_of).strip())
        except ValueError:
            raise InputError(f"--as-of {self.as_of!r} is not a date (YYYY-MM-DD)") from None
