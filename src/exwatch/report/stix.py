"""Hunt findings as a STIX 2.1 bundle: one indicator per rule, observed data and a sighting per finding."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import stix2

from exwatch.fleet import queries as q
from exwatch.fleet.rows import FindingRow
from exwatch.fleet.store import Store

PRODUCER = "exwatch"


def _pattern(rule: str) -> str:
    # A STIX pattern over a custom observable: the finding names the exwatch rule that matched.
    return f"[x-exwatch-rule:id = '{rule.replace(chr(39), '')}']"


def findings_bundle(store: Store, *, since: datetime | None = None) -> stix2.Bundle:
    """Every stored finding: identities of the producer and the hosts, indicators, observed data, sightings."""
    rows = q.findings(store, since=since, nulls_last=False).items
    producer = stix2.Identity(name=PRODUCER, identity_class="system", description="exwatch compromise hunter")
    objects: list[Any] = [producer]
    hosts: dict[str, stix2.Identity] = {}
    indicators: dict[str, stix2.Indicator] = {}
    now = datetime.now(UTC)
    seen_sco: set[str] = set()
    for row in rows:
        label = row.address or row.name or row.host or "unknown host"
        if label not in hosts:
            names = [n for n in (row.address, row.name, row.fe_server, row.host) if n]
            hosts[label] = stix2.Identity(
                name=label,
                identity_class="system",
                description="Exchange server; known as " + ", ".join(dict.fromkeys(names)),
                created_by_ref=producer.id,
            )
            objects.append(hosts[label])
        if row.rule not in indicators:
            indicators[row.rule] = stix2.Indicator(
                name=f"exwatch rule {row.rule}",
                description=row.title or row.rule,
                pattern=_pattern(row.rule),
                pattern_type="stix",
                valid_from=row.time or now,
                indicator_types=["compromised"],
                labels=[v for v in (row.wave, row.cve) if v],
                created_by_ref=producer.id,
            )
            objects.append(indicators[row.rule])
        sco, observed, sighting = _sighting(
            row, producer, indicators[row.rule], hosts[label], row.time or now
        )
        if sco.id not in seen_sco:
            seen_sco.add(sco.id)
            objects.append(sco)
        objects.extend([observed, sighting])
    return stix2.Bundle(objects=objects, allow_custom=False)


def _sighting(
    row: FindingRow,
    producer: stix2.Identity,
    indicator: stix2.Indicator,
    host: stix2.Identity,
    when: datetime,
) -> tuple[Any, stix2.ObservedData, stix2.Sighting]:
    """The evidence file, its observed data and the sighting of the rule's indicator on the host."""
    evidence = row.evidence
    name = str(evidence.get("file") or "evidence").rsplit("/", 1)[-1]
    sco: Any
    if evidence.get("sha256"):
        sco = stix2.File(name=name, hashes={"SHA-256": evidence["sha256"]})
    else:
        sco = stix2.File(name=name)
    observed = stix2.ObservedData(
        first_observed=when,
        last_observed=when,
        number_observed=1,
        object_refs=[sco.id],
        created_by_ref=producer.id,
    )
    where = f"{evidence.get('file', '')}:{evidence.get('line', evidence.get('record', ''))}"
    sighting = stix2.Sighting(
        sighting_of_ref=indicator.id,
        observed_data_refs=[observed.id],
        where_sighted_refs=[host.id],
        first_seen=when,
        last_seen=when,
        count=1,
        description=(
            f"{row.title or row.rule} ({row.confidence or 'unrated'}; {row.cve or row.wave or ''}) at {where}: "
            f"{evidence.get('excerpt', '')}"
        )[:2000],
        created_by_ref=producer.id,
    )
    return sco, observed, sighting


def bundle_json(bundle: stix2.Bundle) -> str:
    """The bundle as indented JSON (stix2's own pretty printer sorts keys in quadratic time)."""
    return json.dumps(json.loads(bundle.serialize()), indent=2, ensure_ascii=False)
