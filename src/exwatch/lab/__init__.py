"""The lab: a fleet of emulated Exchange (and other) servers on loopback addresses, with ground truth."""

from __future__ import annotations

from exwatch.lab.draw import (
    DEFAULT_EXCHANGE_VARIANTS,
    DEFAULT_OTHER_SHARE,
    DEFAULT_OTHER_VARIANTS,
    draw_fleet,
)
from exwatch.lab.fleet import LabFleet, raise_nofile_limit, run_fleet_in_thread
from exwatch.lab.rewrite import mitigation_web_config
from exwatch.lab.spec import (
    EXCHANGE_VARIANTS,
    HOSTILE_VARIANTS,
    OTHER_VARIANTS,
    VARIANTS,
    WAVES,
    ServerSpec,
    load_specs,
)
from exwatch.lab.triage import SCENARIOS, write_triage
from exwatch.lab.truth import truth, truth_passive

__all__ = [
    "DEFAULT_EXCHANGE_VARIANTS",
    "DEFAULT_OTHER_SHARE",
    "DEFAULT_OTHER_VARIANTS",
    "EXCHANGE_VARIANTS",
    "HOSTILE_VARIANTS",
    "LabFleet",
    "OTHER_VARIANTS",
    "SCENARIOS",
    "ServerSpec",
    "VARIANTS",
    "WAVES",
    "draw_fleet",
    "load_specs",
    "mitigation_web_config",
    "raise_nofile_limit",
    "run_fleet_in_thread",
    "truth",
    "truth_passive",
    "write_triage",
]
