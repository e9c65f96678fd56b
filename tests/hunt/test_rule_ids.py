"""RULE_IDS.md (shared with the triage generator), the catalogue and the shipped rules agree."""

from __future__ import annotations

from pathlib import Path

from exwatch.hunt import RuleSpec
from exwatch.hunt.rules.catalog import catalogue
from exwatch.hunt.worker import load_bundle

RULES = Path(__file__).parents[2] / "src" / "exwatch" / "hunt" / "rules"


def test_rule_ids_md_matches_catalogue() -> None:
    rows = {}
    for line in (RULES / "RULE_IDS.md").read_text().splitlines():
        parts = [x.strip() for x in line.split("|", 4)]
        if len(parts) == 5 and " " not in parts[0] and "." in parts[0]:
            rows[parts[0]] = parts
    cat = catalogue()
    assert set(rows) == set(cat)
    for rid, (_, wave, cve, confidence, meaning) in rows.items():
        info = cat[rid]
        assert (info.wave, info.cve, info.confidence, info.meaning) == (wave, cve, confidence, meaning)


def test_every_shipped_sigma_rule_has_a_catalogued_id() -> None:
    bundle = load_bundle(RuleSpec())
    ids = {r.rule_id for r in bundle.sigma}
    assert ids <= set(catalogue())
    assert len(ids) >= 30
    for r in bundle.sigma:
        assert r.literals, f"{r.rule_id} has no literal for the pre-filter"
