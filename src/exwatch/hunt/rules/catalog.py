"""The catalogue of exwatch's rule ids: wave, CVE, confidence, meaning and what to do (data/catalog.csv)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

WAVE_OF_TEXT = (
    ("proxynotshell", "proxynotshell"),
    ("owassrf", "proxynotshell"),
    ("cve-2022-41040", "proxynotshell"),
    ("cve-2022-41082", "proxynotshell"),
    ("cve-2022-41080", "proxynotshell"),
    ("proxyshell", "proxyshell"),
    ("cve-2021-34473", "proxyshell"),
    ("cve-2021-34523", "proxyshell"),
    ("cve-2021-31207", "proxyshell"),
    ("proxylogon", "proxylogon"),
    ("hafnium", "proxylogon"),
    ("cve-2021-26855", "proxylogon"),
    ("cve-2021-26857", "proxylogon"),
    ("cve-2021-26858", "proxylogon"),
    ("cve-2021-27065", "proxylogon"),
    ("webshell", "webshell"),
    ("web shell", "webshell"),
)


@dataclass(frozen=True)
class RuleInfo:
    """What a rule id means."""

    id: str
    wave: str
    cve: str
    confidence: str
    meaning: str
    action: str

    @property
    def description(self) -> str:
        return f"{self.meaning} {self.action}"


@cache
def catalogue() -> dict[str, RuleInfo]:
    """Every built-in rule id, from the package's ``data/catalog.csv`` (mirrors RULE_IDS.md)."""
    text = resources.files("exwatch.hunt.rules").joinpath("data/catalog.csv").read_text(encoding="utf-8")
    out: dict[str, RuleInfo] = {}
    for row in csv.DictReader(text.splitlines()):
        out[row["id"]] = RuleInfo(
            row["id"], row["wave"], row["cve"], row["confidence"], row["meaning"], row["action"]
        )
    return out


def info_for(rule_id: str, *, title: str = "", text: str = "", level_confidence: str = "review") -> RuleInfo:
    """The catalogue entry of ``rule_id``, or one derived from a user rule's title, tags and level."""
    cat = catalogue()
    if rule_id in cat:
        return cat[rule_id]
    low = f"{title} {text}".lower()
    wave = next((w for key, w in WAVE_OF_TEXT if key in low), "other")
    cves = re.findall(r"cve[-.](\d{4}-\d{4,7})", low)
    cve = f"CVE-{cves[0]}" if cves else ""
    return RuleInfo(
        rule_id,
        wave,
        cve,
        level_confidence,
        title or rule_id,
        "User rule: judge the evidence line against the rule's own description.",
    )
