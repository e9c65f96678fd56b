"""The observation record: what one scanned service (and one folded host) looks like in flight.

The record is the wire format of the scan (DESIGN.md "verdict JSON"): ``--format jsonl`` prints it,
the store receives it, importers and cluster workers produce it. It stays a plain JSON-ready mapping
(written as it is to JSONL and pickled to workers), so its shape is given here as ``TypedDict`` types
that mypy checks at every seam (scan -> fold -> sink -> store), with no conversion at the edges.

- :class:`Observation`: one (host, port) service, as ``exwatch.scan.observation.host_record`` builds it.
- :class:`HostRecord`: the services of one host folded into one (``exwatch.scan.fold``), plus the host
  id and the one fix that closes every open wave (``finish_host``).
- :class:`ExposedHost`: the short form of an exposed host that the scan's summary keeps (a capped list).

This module is pure and imports nothing of the project, so kb-free layers (fleet, web) can use it.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = [
    "ExposedHost",
    "FixEntry",
    "HostFix",
    "HostRecord",
    "Observation",
    "ProbeEntry",
    "ServiceEntry",
    "WaveEntry",
]


class FixEntry(TypedDict, total=False):
    """The knowledge base's fix of one wave for a build's CU (kb ``Fix.to_dict``)."""

    security_update: list[str]
    cumulative_update: str | None
    text: str


class WaveEntry(TypedDict):
    """One wave's state on a service: the verdict and why, from the build and the probe."""

    state: str
    reason: str
    fix: FixEntry | None
    conflict: NotRequired[bool]
    port: NotRequired[int | None]  # on a folded host: the port of the service the state came from


class ProbeEntry(TypedDict):
    """A behavioural probe's outcome (``ProbeOutcome.to_dict``)."""

    outcome: str
    reason: str
    validated: bool


class ServiceEntry(TypedDict):
    """One service of a folded host, as listed under ``services``."""

    key: str | None
    port: int | None
    scheme: str | None
    status: str | None
    error: str | None
    build: str | None
    rank: int


class HostFix(TypedDict):
    """The one update that closes every open wave of a host (``host_fix``)."""

    fix: str
    fix_build: str | None
    fix_kb: str | None


class Observation(TypedDict):
    """One service's observation (one target: address, port, scheme)."""

    key: str
    target: str
    scheme: str
    address: str | None
    port: int
    name: str | None
    status: str  # exchange | not_exchange | unreachable
    error: str | None
    build: str | None
    build_source: str | None
    cu_only: bool | None
    approximate: bool | None
    product: str | None
    cu: str | None
    fe_server: str | None
    cert_names: list[str]
    cert_sha256: str | None
    probes: dict[str, ProbeEntry]
    waves: dict[str, WaveEntry]
    conflicts: list[str]
    notes: list[str]
    tags: dict[str, str]
    time: str  # ISO 8601
    source: NotRequired[str]  # imported records: the tool the answer came from
    elapsed: NotRequired[float]  # seconds the scan of this service took
    requests: NotRequired[int]  # HTTP requests sent to this service


class HostRecord(Observation):
    """The services of one host folded (``fold_services``), completed by ``finish_host``."""

    services: list[ServiceEntry]
    conflict: bool
    host: NotRequired[str]
    fix: NotRequired[str]
    fix_build: NotRequired[str | None]
    fix_kb: NotRequired[str | None]


class ExposedHost(TypedDict):
    """The short form of an exposed host record that ``ScanSummary.exposed`` keeps (``EXPOSED_FIELDS``)."""

    key: str
    host: str | None
    target: str
    address: str | None
    port: int
    name: str | None
    build: str | None
    build_source: str | None
    cu_only: bool | None
    product: str | None
    cu: str | None
    fe_server: str | None
    waves: dict[str, WaveEntry]
    services: list[ServiceEntry] | None
    conflict: bool | None
    fix: str | None
    fix_build: str | None
    fix_kb: str | None
