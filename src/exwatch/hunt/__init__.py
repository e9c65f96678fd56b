"""Compromise assessment: hunt Exchange logs, event logs and web folders for the traces of each wave.

The public API: ``hunt_paths`` over triage packages gives a ``HuntResult`` (hosts, findings, errors; its
``exit_code``); ``record_hunt`` puts it into the store; the value types cross every seam and become JSON
only through ``to_dict``. Modules inside the package are private: import from ``exwatch.hunt``.
"""

from exwatch.hunt.engine import HuntInterrupted, Progress, hunt_paths, live_install_paths, packages
from exwatch.hunt.limits import apply_limits, limit_options, refuse_store_in_evidence
from exwatch.hunt.model import (
    CONFIDENCE_RANK,
    CONFIDENCES,
    VERDICTS,
    Account,
    Address,
    ArchiveLimits,
    CollectionCoverage,
    Coverage,
    Evidence,
    FileCoverage,
    FileError,
    FileHunt,
    FilesCoverage,
    FileStats,
    FileToAct,
    Finding,
    Fix,
    HostResult,
    HuntOptions,
    HuntResult,
    HuntStats,
    HuntTask,
    LogCoverage,
    NamedFile,
    NextSteps,
    RuleSpec,
    Seen,
    StoredHunt,
    Window,
    iso_z,
)
from exwatch.hunt.nextsteps import centre_excerpt, safe_text
from exwatch.hunt.packages import PACKAGE_MARKERS, find_packages, package_host
from exwatch.hunt.sources.files import is_archive
from exwatch.hunt.storing import record_hunt
from exwatch.hunt.timeline import order

__all__ = [
    "Account",
    "Address",
    "ArchiveLimits",
    "CONFIDENCES",
    "CONFIDENCE_RANK",
    "CollectionCoverage",
    "Coverage",
    "Evidence",
    "FileCoverage",
    "FileError",
    "FileHunt",
    "FileStats",
    "FileToAct",
    "FilesCoverage",
    "Finding",
    "Fix",
    "HostResult",
    "HuntInterrupted",
    "HuntOptions",
    "HuntResult",
    "HuntStats",
    "HuntTask",
    "LogCoverage",
    "NamedFile",
    "NextSteps",
    "PACKAGE_MARKERS",
    "Progress",
    "RuleSpec",
    "Seen",
    "StoredHunt",
    "VERDICTS",
    "Window",
    "apply_limits",
    "centre_excerpt",
    "find_packages",
    "hunt_paths",
    "is_archive",
    "iso_z",
    "limit_options",
    "live_install_paths",
    "order",
    "package_host",
    "packages",
    "record_hunt",
    "refuse_store_in_evidence",
    "safe_text",
]
