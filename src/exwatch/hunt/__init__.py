"""Compromise assessment: hunt Exchange logs, event logs and web folders for the traces of each wave."""

from exwatch.hunt.engine import hunt_paths
from exwatch.hunt.model import Evidence, FileError, Finding, HostResult, HuntOptions, HuntResult

__all__ = ["Evidence", "FileError", "Finding", "HostResult", "HuntOptions", "HuntResult", "hunt_paths"]
