"""Sigma rules loaded with pySigma and evaluated over parsed records by a small matcher of our own.

pySigma turns rules into queries for other systems (Splunk, Elasticsearch, ...) and has no backend that
evaluates a rule in Python, so exwatch walks pySigma's parsed condition tree itself: a rule becomes a
predicate over a record (a ``dict`` from field name to string) plus the *keyword text* that Sigma
keywords (values without a field) are searched in. Matching follows the Sigma specification: strings
are case-insensitive, ``*`` and ``?`` are wildcards, ``|re`` is a Python regular expression, ``|cidr`` a
network, ``null`` an empty or missing field, numbers compare as their decimal text.

Each rule also yields the *literals* every matching record must contain (at least one of them), used to
pick candidate lines from raw bytes before any parsing: see :func:`required_literals`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path
from typing import Any

from exwatch.errors import InputError

Record = Mapping[str, str]
Predicate = Callable[[Record, str], bool]
# Literal requirements of a condition: every group must be met by at least one of its literals.
Groups = tuple[frozenset[str], ...]

# The log sources exwatch reads, as (category, product, service) triples a rule's logsource may name.
# Our own logsources for Exchange's text logs sit next to the standard Sigma ones.
SOURCE_LOGSOURCES: dict[str, tuple[tuple[str | None, str | None, str | None], ...]] = {
    "httpproxy": (("webserver", None, None), (None, "exchange", "httpproxy")),
    "ecp": ((None, "exchange", "ecp"),),
    "oabgenerator": ((None, "exchange", "oabgenerator"),),
    "iis": (("webserver", None, None), (None, "iis", None), ("webserver", "windows", None)),
    "msexchange-management": ((None, "windows", "msexchange-management"),),
    "application": ((None, "windows", "application"),),
    "powershell": ((None, "windows", "powershell"), ("ps_script", "windows", None)),
    "windefend": ((None, "windows", "windefend"),),
    "process_creation": (("process_creation", "windows", None),),
    "file_event": (("file_event", "windows", None),),
    "windows": ((None, "windows", None),),
}

# Characters that logs may write differently from the rule (IIS '+' for space, CSV doubled quotes,
# commas written as spaces, JSON-escaped backslashes): a literal for the byte pre-filter never spans them.
_SPLIT = re.compile(r"[\s\"',+\\]+")
MIN_LITERAL = 3
# Shorter literals allowed all the same: '@' is the heart of the autodiscover path confusion; it ranks
# last (COMMON_TOKENS), so it only ever narrows a pair pattern next to a longer literal.
SHORT_LITERALS = frozenset({"@"})


@dataclass
class SigmaRuleSpec:
    """A loaded rule: its identity, its log sources and a compiled predicate."""

    rule_id: str
    title: str
    description: str
    level: str
    tags: tuple[str, ...]
    logsource: tuple[str | None, str | None, str | None]
    predicate: Predicate
    literals: frozenset[str] | None
    path: str
    groups: Groups = ()
    meta: dict[str, str] = field(default_factory=dict)

    def applies_to(self, source: str) -> bool:
        """Whether this rule's logsource names the source family ``source``."""
        cat, prod, svc = self.logsource
        if cat is None and prod is None and svc is None:
            return False
        for s_cat, s_prod, s_svc in SOURCE_LOGSOURCES.get(source, ()):
            if (
                (cat is None or cat == s_cat)
                and (prod is None or prod == s_prod)
                and (svc is None or svc == s_svc)
            ):
                return True
        return False


def _sigma_string_regex(value: Any) -> re.Pattern[str]:
    from sigma.types import SpecialChars

    parts: list[str] = []
    for part in value.s:
        if part == SpecialChars.WILDCARD_MULTI:
            parts.append(".*")
        elif part == SpecialChars.WILDCARD_SINGLE:
            parts.append(".")
        elif isinstance(part, str):
            parts.append(re.escape(part))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _plain_parts(value: Any) -> list[str]:
    return [p for p in value.s if isinstance(p, str)]


def _literal_cover(value: Any) -> frozenset[str] | None:
    """The one literal a string value needs: its longest piece free of wildcards and separators."""
    from sigma.types import SigmaNumber, SigmaString

    pieces: list[str] = []
    if isinstance(value, SigmaString):
        for part in _plain_parts(value):
            pieces.extend(_SPLIT.split(part))
    elif isinstance(value, SigmaNumber):
        pieces.append(str(value.number))
    pieces = [p.lower() for p in pieces if len(p) >= MIN_LITERAL or p in SHORT_LITERALS]
    if not pieces:
        return None
    return frozenset([max(pieces, key=len)])


# URL parts of routine Exchange traffic: a literal cover made of these picks up a large share of all
# lines, so an AND prefers any other branch (measured on lab triage traffic: 'autodiscover' is on about
# 8% of IIS lines, 'x-rps-cat=' on none of the normal ones).
COMMON_TOKENS = frozenset(
    {
        "@",
        "%40",
        "/owa/",
        "/owa/auth/",
        "/ecp/",
        "/ews",
        "/ews/",
        "/mapi/",
        "autodiscover",
        "/autodiscover",
        "autodiscover.json",
        "/autodiscover.json",
        "/powershell",
        "powershell",
        "post",
        "get",
        "200",
        "302",
        "401",
        "owershell",
        "443",
        "444",
        ".js",
        ".css",
        ".aspx",
        ".gif",
        ".png",
        ".svc",
    }
)


# Among the routine parts, those on nearly every line (methods, status 200, the busiest folders).
VERY_COMMON_TOKENS = frozenset(
    {"post", "get", "200", "302", "/owa/", "/ecp/", "autodiscover", ".js", ".css", ".aspx", "@", "%40"}
)


def _cover_score(cover: frozenset[str]) -> tuple[bool, bool, int, int, tuple[str, ...]]:
    return (
        not any(x in COMMON_TOKENS for x in cover),
        not any(x in VERY_COMMON_TOKENS for x in cover),
        min(len(x) for x in cover),
        -len(cover),
        tuple(sorted(cover)),
    )


def _overlap(a: str, b: str) -> bool:
    if a in b or b in a:
        return True
    return any(a[-k:] == b[:k] or b[-k:] == a[:k] for k in range(1, min(len(a), len(b))))


def _alternation(group: frozenset[str]) -> bytes:
    return b"|".join(re.escape(x.encode("utf-8")) for x in sorted(group, key=len, reverse=True))


def _ordered(a: str, b: str) -> list[bytes]:
    """Patterns for "``a`` then ``b`` on one line", including the ways the two may overlap."""
    esc = re.escape
    out = [esc(a.encode()) + b"[^\\n]*" + esc(b.encode())]
    if b in a:
        out.append(esc(a.encode()))
    if a in b:
        out.append(esc(b.encode()))
    for k in range(1, min(len(a), len(b))):
        if a[-k:] == b[:k]:
            out.append(esc((a + b[k:]).encode()))
    return out


def pair_pattern(groups: Groups) -> bytes | None:
    """An RE2 pattern for "several of the rule's required literal groups on one line, in any order".

    Sound because a line that matches the rule holds a literal of every group. Three groups are used
    when the best group and two others share no characters at their edges (their occurrences are then
    disjoint and come in some order); otherwise the two best groups, with every way they may overlap
    spelled out. None when the rule has fewer than two groups.
    """
    ranked = sorted(set(groups), key=_cover_score, reverse=True)
    if len(ranked) < 2:
        return None
    chosen = [ranked[0]]
    for g in ranked[1:]:
        if all(not _overlap(a, b) for c in chosen for a in g for b in c):
            chosen.append(g)
        if len(chosen) == 3:
            break
    if len(chosen) == 3 and ranked[1] in chosen:
        alts = [_alternation(g) for g in chosen]
        return b"|".join(
            b"[^\\n]*".join(b"(?:" + alts[i] + b")" for i in perm) for perm in permutations(range(3))
        )
    out: list[bytes] = []
    for a in sorted(ranked[0]):
        for b in sorted(ranked[1]):
            out += _ordered(a, b) + _ordered(b, a)
    return b"|".join(b"(?:" + x + b")" for x in out)


def _g(cover: frozenset[str] | None) -> Groups:
    return (cover,) if cover else ()


def best_group(groups: Groups) -> frozenset[str] | None:
    """The group of literals the byte pre-filter searches for: rare and long beats routine and short."""
    return max(groups, key=_cover_score) if groups else None


def _compile(node: Any) -> tuple[Predicate, Groups]:
    """Compile one node of pySigma's condition tree into a predicate and its literal requirements."""
    from sigma.conditions import (
        ConditionAND,
        ConditionFieldEqualsValueExpression,
        ConditionNOT,
        ConditionOR,
        ConditionValueExpression,
    )
    from sigma.types import (
        SigmaBool,
        SigmaCIDRExpression,
        SigmaExists,
        SigmaNull,
        SigmaNumber,
        SigmaRegularExpression,
        SigmaString,
    )

    if isinstance(node, ConditionAND):
        compiled = [_compile(a) for a in node.args]
        preds = [p for p, _ in compiled]
        groups: Groups = tuple(g for _, gs in compiled for g in gs)
        return (lambda r, k: all(p(r, k) for p in preds)), groups
    if isinstance(node, ConditionOR):
        compiled = [_compile(a) for a in node.args]
        preds = [p for p, _ in compiled]
        bests = [best_group(gs) for _, gs in compiled]
        union: Groups = (frozenset().union(*bests),) if all(b is not None for b in bests) else ()  # type: ignore[arg-type]
        return (lambda r, k: any(p(r, k) for p in preds)), union
    if isinstance(node, ConditionNOT):
        inner, _ = _compile(node.args[0])
        return (lambda r, k: not inner(r, k)), ()
    if isinstance(node, ConditionFieldEqualsValueExpression):
        name = node.field
        value = node.value
        if isinstance(value, SigmaNull):
            return (lambda r, k: not r.get(name)), ()
        if isinstance(value, SigmaExists):
            want = bool(value.exists)
            return (lambda r, k: (name in r) == want), ()
        if isinstance(value, SigmaString):
            rx = _sigma_string_regex(value)
            return (lambda r, k: name in r and rx.fullmatch(r[name]) is not None), _g(_literal_cover(value))
        if isinstance(value, SigmaNumber):
            text = str(value.number)
            return (lambda r, k: r.get(name, "").strip() == text), _g(_literal_cover(value))
        if isinstance(value, SigmaBool):
            text = "true" if value.boolean else "false"
            return (lambda r, k: r.get(name, "").strip().lower() == text), ()
        if isinstance(value, SigmaRegularExpression):
            flags = 0
            for flag in value.flags:
                flags |= {"IGNORECASE": re.I, "MULTILINE": re.M, "DOTALL": re.S}.get(flag.name, 0)
            rx = re.compile(str(value.regexp), flags)
            return (lambda r, k: name in r and rx.search(r[name]) is not None), ()
        if isinstance(value, SigmaCIDRExpression):
            net = value.network

            def in_net(r: Record, k: str) -> bool:
                try:
                    return ipaddress.ip_address(r.get(name, "").strip()) in net
                except ValueError:
                    return False

            return in_net, ()
        raise InputError(f"Sigma value type {type(value).__name__} for field {name!r} is not supported")
    if isinstance(node, ConditionValueExpression):
        value = node.value
        if isinstance(value, SigmaString):
            rx = _sigma_string_regex(value)
            # Keywords match anywhere in the record's text (pySigma leaves them unanchored).
            return (lambda r, k: rx.search(k) is not None), _g(_literal_cover(value))
        if isinstance(value, SigmaNumber):
            text = str(value.number)
            return (lambda r, k: text in k), _g(_literal_cover(value))
        if isinstance(value, SigmaRegularExpression):
            # A regular-expression keyword: searched in the record's text (e.g. a published line pattern
            # such as Microsoft's ``powershell.*autodiscover\.json.*\@.*200``); no literal of its own.
            kflags = 0
            for flag in value.flags:
                kflags |= {"IGNORECASE": re.I, "MULTILINE": re.M, "DOTALL": re.S}.get(flag.name, 0)
            krx = re.compile(str(value.regexp), kflags)
            return (lambda r, k: krx.search(k) is not None), ()
        raise InputError(f"Sigma keyword type {type(value).__name__} is not supported")
    raise InputError(f"Sigma condition element {type(node).__name__} is not supported")


def required_literals(specs: Iterable[SigmaRuleSpec]) -> frozenset[str] | None:
    """The union of the rules' literal covers; None when one rule has none (then every line is read)."""
    out: set[str] = set()
    for spec in specs:
        if spec.literals is None:
            return None
        out |= spec.literals
    return frozenset(out)


def _level_confidence(level: str) -> str:
    return {"critical": "confirmed", "high": "likely"}.get(level, "review")


def load_rules(paths: Iterable[Path]) -> list[SigmaRuleSpec]:
    """Load every Sigma rule (``.yml``/``.yaml``) under ``paths``; a bad rule is an InputError naming it."""
    import yaml
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError
    from sigma.rule import SigmaRule

    specs: list[SigmaRuleSpec] = []
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(x for x in p.rglob("*") if x.suffix.lower() in (".yml", ".yaml")))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such Sigma rule file or folder")
    for f in files:
        try:
            collection = SigmaCollection.from_yaml(f.read_text(encoding="utf-8"))
        except (SigmaError, ValueError, OSError, yaml.YAMLError) as exc:
            raise InputError(f"{f}: not a valid Sigma rule: {exc}") from exc
        for rule in collection.rules:
            if not isinstance(rule, SigmaRule):
                continue  # correlation rules need several events; not evaluated here
            try:
                conditions = rule.detection.parsed_condition
                compiled = [_compile(c.parse()) for c in conditions]
            except SigmaError as exc:
                raise InputError(f"{f}: Sigma rule {rule.title!r} cannot be parsed: {exc}") from exc
            if len(compiled) == 1:
                pred, groups = compiled[0]
            else:
                pred = _any_of([p for p, _ in compiled])
                bests = [best_group(gs) for _, gs in compiled]
                groups = (frozenset().union(*bests),) if all(b is not None for b in bests) else ()  # type: ignore[arg-type]
            cover = best_group(groups)
            custom = dict(getattr(rule, "custom_attributes", {}) or {})
            meta = {str(k): str(v) for k, v in (custom.get("exwatch") or {}).items()}
            level = str(rule.level.name).lower() if rule.level else "medium"
            rid = meta.get("id") or f"sigma.{rule.id or rule.title}"
            specs.append(
                SigmaRuleSpec(
                    rule_id=rid,
                    title=rule.title,
                    description=rule.description or "",
                    level=level,
                    tags=tuple(f"{t.namespace}.{t.name}" for t in rule.tags),
                    logsource=(rule.logsource.category, rule.logsource.product, rule.logsource.service),
                    predicate=pred,
                    literals=cover,
                    groups=groups,
                    path=str(f),
                    meta=meta or {"confidence": _level_confidence(level)},
                )
            )
    return specs


def _any_of(preds: list[Predicate]) -> Predicate:
    return lambda r, k: any(p(r, k) for p in preds)
