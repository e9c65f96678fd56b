"""The IIS URL Rewrite rules of each wave's mitigation, loaded from ``data/rules.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from exwatch.errors import InputError
from exwatch.kb import WAVE_IDS


@dataclass(frozen=True)
class RewriteRule:
    """One inbound rule as Microsoft's scripts write it: a match, one condition, an action."""

    wave: str
    cve: str
    name: str
    match_url: str
    input: str
    pattern: str
    action: str
    stop_processing: bool
    pattern_syntax: str


@cache
def all_rules() -> tuple[RewriteRule, ...]:
    """Every rule, in the order they are added (the order of the data file)."""
    raw = json.loads(resources.files("exwatch.mitigate").joinpath("data/rules.json").read_text("utf-8"))
    return tuple(RewriteRule(**entry) for entry in raw["rules"])


#: Waves that have a URL Rewrite mitigation, in the knowledge base's order (ProxyShell has none: only
#: the update fixes it).
MITIGATED_WAVES: tuple[str, ...] = tuple(w for w in WAVE_IDS if any(r.wave == w for r in all_rules()))


def waves_for(wave: str) -> tuple[str, ...]:
    """The wave ids named by ``wave`` (``all`` for every mitigated wave)."""
    wave = wave.lower()
    if wave == "all":
        return MITIGATED_WAVES
    if wave not in MITIGATED_WAVES:
        choices = ", ".join((*MITIGATED_WAVES, "all"))
        raise InputError(f"no URL Rewrite mitigation for wave {wave!r}; choose one of {choices}")
    return (wave,)


def rules_for(wave: str) -> tuple[RewriteRule, ...]:
    """The rules of ``wave`` (or of every mitigated wave for ``all``), in order."""
    waves = waves_for(wave)
    return tuple(r for r in all_rules() if r.wave in waves)
