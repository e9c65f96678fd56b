"""The lab: a fleet of emulated Exchange (and other) servers on loopback addresses, with ground truth."""

from __future__ import annotations

from exwatch.lab.draw import draw_fleet
from exwatch.lab.fleet import LabFleet, raise_nofile_limit, run_fleet_in_thread
from exwatch.lab.spec import (
    EXCHANGE_VARIANTS,
    HOSTILE_VARIANTS,
    OTHER_VARIANTS,
    VARIANTS,
    ServerSpec,
    load_specs,
)
from exwatch.lab.truth import truth, truth_passive

__all__ = [
    "EXCHANGE_VARIANTS",
    "HOSTILE_VARIANTS",
    "LabFleet",
    "OTHER_VARIANTS",
    "ServerSpec",
    "VARIANTS",
    "draw_fleet",
    "load_specs",
    "raise_nofile_limit",
    "run_fleet_in_thread",
    "truth",
    "truth_passive",
]
