"""Continuous monitoring: re-scan on a schedule, detect changes per host and wave, send alerts.

model.py     the alert (kinds, fields), durations
detect.py    pure: the previous state and one round's hosts in, alerts and the next state out
log.py       the alert log in the store: detection state, alerts, deliveries per sink
sinks.py     where alerts go: webhook (retries, on-disk spool), syslog (RFC 5424, UDP/TCP), JSONL file
runner.py    the loop: scan, detect, record, deliver; SIGTERM ends after the current round
"""

from __future__ import annotations

from exwatch.watch.log import AlertLog, list_alerts
from exwatch.watch.model import KINDS, Alert, NewFinding, parse_duration
from exwatch.watch.runner import Delivery, RoundResult, WatchConfig, Watcher, watch_name

__all__ = [
    "Alert",
    "AlertLog",
    "Delivery",
    "KINDS",
    "NewFinding",
    "RoundResult",
    "WatchConfig",
    "Watcher",
    "list_alerts",
    "parse_duration",
    "watch_name",
]
