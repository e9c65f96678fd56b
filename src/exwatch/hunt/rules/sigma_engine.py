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
    # Literal requirements as alternatives (see Alternatives); NO_REQUIREMENT when none is known.
    alternatives: tuple[Groups, ...] = ((),)
    # Whether the rule reads the keyword text (a record's values joined), which is then built for it.
    keywords: bool = True

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


# Literal requirements as alternatives (a disjunction of conjunctions): a matching record meets every
# group of at least one alternative. Sharper than ``Groups`` for an OR of ANDs (``/owa/`` and
# ``/powershell``, or ``/owa/mastermail``). ``((),)`` means "no requirement".
Alternatives = tuple[Groups, ...]
NO_REQUIREMENT: Alternatives = ((),)
MAX_ALTERNATIVES = 16


def _collapse(alts: Alternatives) -> Alternatives:
    """One alternative that every one of ``alts`` implies: the union of their best groups."""
    if any(not a for a in alts):
        return NO_REQUIREMENT
    bests = [best_group(a) for a in alts]
    return ((frozenset().union(*bests),),)  # type: ignore[arg-type]


def _and_alternatives(parts: list[Alternatives]) -> Alternatives:
    out: list[Groups] = [()]
    for alts in parts:
        if alts == NO_REQUIREMENT:
            continue
        if len(out) * len(alts) > MAX_ALTERNATIVES:
            alts = _collapse(alts)
            if alts == NO_REQUIREMENT:
                continue
        out = [tuple(dict.fromkeys(a + b)) for a in out for b in alts]
    return tuple(out)


def _or_alternatives(parts: list[Alternatives]) -> Alternatives:
    if any(() in a for a in parts):
        return NO_REQUIREMENT
    out = tuple(dict.fromkeys(a for alts in parts for a in alts))
    return _collapse(out) if len(out) > MAX_ALTERNATIVES else out


def simplify_alternatives(alts: Alternatives) -> Alternatives:
    """The same requirement with fewer alternatives: one that holds every group of another is dropped
    (A or (A and B) is A), and two that differ in one group only become one whose group holds both
    ((C and a) or (C and b) is C and (a or b)), so a product of ORs folds back into one alternative."""
    if any(not a for a in alts):
        return NO_REQUIREMENT
    cur = [frozenset(a) for a in dict.fromkeys(alts)]
    changed = True
    while changed:
        changed = False
        cur = [a for a in cur if not any(b < a for b in cur)]
        for i in range(len(cur)):
            for j in range(i + 1, len(cur)):
                a, b = cur[i], cur[j]
                da, db = a - b, b - a
                if len(a) == len(b) and len(da) == 1 and len(db) == 1:
                    merged = (a & b) | {next(iter(da)) | next(iter(db))}
                    cur = [x for k, x in enumerate(cur) if k not in (i, j)] + [frozenset(merged)]
                    changed = True
                    break
            if changed:
                break
    return tuple(tuple(sorted(a, key=lambda g: sorted(g))) for a in cur)


# The rules' conditions are first turned into a plain tree of tuples and strings (the IR below), which
# is what the on-disk rule cache stores; predicates are compiled from it without importing pySigma.
#   ("and", [n...]) ("or", [n...]) ("not", n)
#   ("null", field) ("exists", field, bool) ("str", field, regex, cover) ("num", field, text, cover)
#   ("bool", field, "true"|"false") ("re", field, pattern, flags) ("cidr", field, network)
#   ("kw", regex, cover) ("kwnum", text, cover) ("kwre", pattern, flags)
# ``cover`` is the node's one literal (a string) or None.


def _shape(value: Any) -> list[str] | None:
    """``[kind, needle]`` for a string value that is one plain piece with at most a ``*`` at either end
    (equals, contains, startswith, endswith), tested with string methods; None for other shapes."""
    from sigma.types import SpecialChars

    parts = list(value.s)
    if not parts:
        return ["eq", ""]
    star = SpecialChars.WILDCARD_MULTI
    head = parts[0] == star
    tail = len(parts) > 1 and parts[-1] == star
    core = parts[int(head) : len(parts) - int(tail)]
    if len(core) != 1 or not isinstance(core[0], str):
        return None
    kind = {(False, False): "eq", (True, True): "in", (False, True): "start", (True, False): "end"}
    return [kind[(head, tail)], core[0].lower()]


def to_ir(node: Any) -> Any:
    """pySigma's condition tree as the IR."""
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

    def cover(value: Any) -> str | None:
        c = _literal_cover(value)
        return next(iter(c)) if c else None

    def flags_of(value: Any) -> int:
        flags = 0
        for flag in value.flags:
            flags |= {"IGNORECASE": re.I, "MULTILINE": re.M, "DOTALL": re.S}.get(flag.name, 0)
        return flags

    if isinstance(node, ConditionAND):
        return ["and", [to_ir(a) for a in node.args]]
    if isinstance(node, ConditionOR):
        return ["or", [to_ir(a) for a in node.args]]
    if isinstance(node, ConditionNOT):
        return ["not", to_ir(node.args[0])]
    if isinstance(node, ConditionFieldEqualsValueExpression):
        name = node.field
        value = node.value
        if isinstance(value, SigmaNull):
            return ["null", name]
        if isinstance(value, SigmaExists):
            return ["exists", name, bool(value.exists)]
        if isinstance(value, SigmaString):
            return ["str", name, _sigma_string_regex(value).pattern, cover(value), _shape(value)]
        if isinstance(value, SigmaNumber):
            return ["num", name, str(value.number), cover(value)]
        if isinstance(value, SigmaBool):
            return ["bool", name, "true" if value.boolean else "false"]
        if isinstance(value, SigmaRegularExpression):
            return ["re", name, str(value.regexp), flags_of(value)]
        if isinstance(value, SigmaCIDRExpression):
            return ["cidr", name, str(value.network)]
        raise InputError(f"Sigma value type {type(value).__name__} for field {name!r} is not supported")
    if isinstance(node, ConditionValueExpression):
        value = node.value
        if isinstance(value, SigmaString):
            return ["kw", _sigma_string_regex(value).pattern, cover(value)]
        if isinstance(value, SigmaNumber):
            return ["kwnum", str(value.number), cover(value)]
        if isinstance(value, SigmaRegularExpression):
            return ["kwre", str(value.regexp), flags_of(value)]
        raise InputError(f"Sigma keyword type {type(value).__name__} is not supported")
    raise InputError(f"Sigma condition element {type(node).__name__} is not supported")


@dataclass
class Compiled:
    """One condition compiled: its predicate, its literal requirements (as groups and as alternatives)
    and whether it reads the keyword text (Sigma keywords: values without a field)."""

    predicate: Predicate
    groups: Groups
    alternatives: Alternatives
    keywords: bool


def _cov(c: Any) -> Groups:
    if c is None:
        return ()
    if not isinstance(c, str):
        raise ValueError("bad literal in rule IR")
    return (frozenset([c]),)


def compile_ir(node: Any) -> Compiled:
    """Compile one IR node into a predicate and its literal requirements (ValueError on a bad tree)."""
    kind = node[0]
    if kind in ("and", "or"):
        parts = [compile_ir(a) for a in node[1]]
        preds = [c.predicate for c in parts]
        kw = any(c.keywords for c in parts)
        if kind == "and":
            groups: Groups = tuple(g for c in parts for g in c.groups)
            alts = _and_alternatives([c.alternatives for c in parts])
            return Compiled(lambda r, k: all(p(r, k) for p in preds), groups, alts, kw)
        bests = [best_group(c.groups) for c in parts]
        union: Groups = (frozenset().union(*bests),) if all(b is not None for b in bests) else ()  # type: ignore[arg-type]
        alts = _or_alternatives([c.alternatives for c in parts])
        return Compiled(lambda r, k: any(p(r, k) for p in preds), union, alts, kw)
    if kind == "not":
        inner = compile_ir(node[1])
        ip = inner.predicate
        return Compiled(lambda r, k: not ip(r, k), (), NO_REQUIREMENT, inner.keywords)
    if kind == "null":
        name = node[1]
        return Compiled(lambda r, k: not r.get(name), (), NO_REQUIREMENT, False)
    if kind == "exists":
        name, want = node[1], bool(node[2])
        return Compiled(lambda r, k: (name in r) == want, (), NO_REQUIREMENT, False)
    if kind == "str":
        name, rx = node[1], re.compile(node[2], re.IGNORECASE | re.DOTALL)
        g = _cov(node[3])
        shape = node[4] if len(node) > 4 else None
        if shape is not None and str(shape[1]).isascii():
            return Compiled(_string_test(name, str(shape[0]), str(shape[1]), rx), g, (g,), False)
        return Compiled(lambda r, k: name in r and rx.fullmatch(r[name]) is not None, g, (g,), False)
    if kind == "num":
        name, text = node[1], str(node[2])
        g = _cov(node[3])
        return Compiled(lambda r, k: r.get(name, "").strip() == text, g, (g,), False)
    if kind == "bool":
        name, text = node[1], str(node[2])
        return Compiled(lambda r, k: r.get(name, "").strip().lower() == text, (), NO_REQUIREMENT, False)
    if kind == "re":
        name, frx = node[1], re.compile(node[2], int(node[3]))
        return Compiled(lambda r, k: name in r and frx.search(r[name]) is not None, (), NO_REQUIREMENT, False)
    if kind == "cidr":
        name, net = node[1], ipaddress.ip_network(node[2], strict=False)

        def in_net(r: Record, k: str) -> bool:
            try:
                return ipaddress.ip_address(r.get(name, "").strip()) in net
            except ValueError:
                return False

        return Compiled(in_net, (), NO_REQUIREMENT, False)
    if kind == "kw":
        krx = re.compile(node[1], re.IGNORECASE | re.DOTALL)
        g = _cov(node[2])
        # Keywords match anywhere in the record's text (pySigma leaves them unanchored).
        return Compiled(lambda r, k: krx.search(k) is not None, g, (g,), True)
    if kind == "kwnum":
        ktext = str(node[1])
        g = _cov(node[2])
        return Compiled(lambda r, k: ktext in k, g, (g,), True)
    if kind == "kwre":
        # A regular-expression keyword: searched in the record's text (e.g. a published line pattern
        # such as Microsoft's ``powershell.*autodiscover\.json.*\@.*200``); no literal of its own.
        rrx = re.compile(node[1], int(node[2]))
        return Compiled(lambda r, k: rrx.search(k) is not None, (), NO_REQUIREMENT, True)
    raise ValueError(f"unknown rule IR node {kind!r}")


def _string_test(name: str, kind: str, needle: str, rx: re.Pattern[str]) -> Predicate:
    """A Sigma string test with string methods on the lower-cased value (a few times faster than the
    regular expression). Used for ASCII values only, where lower-casing and the regular expression's
    IGNORECASE agree; any other value goes to the regular expression."""

    def slow(v: str) -> bool:
        return rx.fullmatch(v) is not None

    if kind == "in":

        def test(r: Record, k: str) -> bool:
            v = r.get(name)
            if v is None:
                return False
            return needle in v.lower() if v.isascii() else slow(v)

    elif kind == "start":

        def test(r: Record, k: str) -> bool:
            v = r.get(name)
            if v is None:
                return False
            return v.lower().startswith(needle) if v.isascii() else slow(v)

    elif kind == "end":

        def test(r: Record, k: str) -> bool:
            v = r.get(name)
            if v is None:
                return False
            return v.lower().endswith(needle) if v.isascii() else slow(v)

    elif kind == "eq":

        def test(r: Record, k: str) -> bool:
            v = r.get(name)
            if v is None:
                return False
            return v.lower() == needle if v.isascii() else slow(v)

    else:
        raise ValueError(f"unknown string test {kind!r}")
    return test


def _compile(node: Any) -> tuple[Predicate, Groups]:
    """Compile one node of pySigma's condition tree into a predicate and its literal requirements."""
    c = compile_ir(to_ir(node))
    return c.predicate, c.groups


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


def _rule_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(x for x in p.rglob("*") if x.suffix.lower() in (".yml", ".yaml")))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such Sigma rule file or folder")
    return files


def _parse_rule_file(f: Path, text: str) -> list[dict[str, Any]]:
    """The rules of one Sigma file as cacheable entries (their conditions in the IR)."""
    import yaml
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError
    from sigma.rule import SigmaRule

    try:
        collection = SigmaCollection.from_yaml(text)
    except (SigmaError, ValueError, OSError, yaml.YAMLError) as exc:
        raise InputError(f"{f}: not a valid Sigma rule: {exc}") from exc
    out: list[dict[str, Any]] = []
    for rule in collection.rules:
        if not isinstance(rule, SigmaRule):
            continue  # correlation rules need several events; not evaluated here
        try:
            conditions = [to_ir(c.parse()) for c in rule.detection.parsed_condition]
        except SigmaError as exc:
            raise InputError(f"{f}: Sigma rule {rule.title!r} cannot be parsed: {exc}") from exc
        custom = dict(getattr(rule, "custom_attributes", {}) or {})
        meta = {str(k): str(v) for k, v in (custom.get("exwatch") or {}).items()}
        level = str(rule.level.name).lower() if rule.level else "medium"
        out.append(
            {
                "id": meta.get("id") or f"sigma.{rule.id or rule.title}",
                "title": rule.title,
                "description": rule.description or "",
                "level": level,
                "tags": [f"{t.namespace}.{t.name}" for t in rule.tags],
                "logsource": [rule.logsource.category, rule.logsource.product, rule.logsource.service],
                "conditions": conditions,
                "path": str(f),
                "meta": meta or {"confidence": _level_confidence(level)},
            }
        )
    return out


def _spec(entry: dict[str, Any]) -> SigmaRuleSpec:
    """A rule from its entry (ValueError, TypeError, KeyError or re.error when the entry is damaged)."""
    compiled = [compile_ir(c) for c in entry["conditions"]]
    if not compiled:
        raise ValueError("rule without a condition")
    if len(compiled) == 1:
        pred, groups, alts = compiled[0].predicate, compiled[0].groups, compiled[0].alternatives
    else:
        pred = _any_of([c.predicate for c in compiled])
        bests = [best_group(c.groups) for c in compiled]
        groups = (frozenset().union(*bests),) if all(b is not None for b in bests) else ()  # type: ignore[arg-type]
        alts = _or_alternatives([c.alternatives for c in compiled])
    cat, prod, svc = entry["logsource"]
    return SigmaRuleSpec(
        rule_id=str(entry["id"]),
        title=str(entry["title"]),
        description=str(entry["description"]),
        level=str(entry["level"]),
        tags=tuple(str(t) for t in entry["tags"]),
        logsource=(cat, prod, svc),
        predicate=pred,
        literals=best_group(groups),
        groups=groups,
        path=str(entry["path"]),
        meta={str(k): str(v) for k, v in dict(entry["meta"]).items()},
        alternatives=simplify_alternatives(alts),
        keywords=any(c.keywords for c in compiled),
    )


def _cache_parts(files: list[Path], contents: list[bytes]) -> list[bytes | str]:
    from importlib.metadata import PackageNotFoundError, version

    from exwatch import __version__

    try:
        sigma_version = version("pySigma")
    except PackageNotFoundError:
        sigma_version = "?"
    parts: list[bytes | str] = [__version__, sigma_version, Path(__file__).read_bytes()]
    for f, b in zip(files, contents, strict=True):
        parts += [str(f), b]
    return parts


def load_rules(paths: Iterable[Path]) -> list[SigmaRuleSpec]:
    """Load every Sigma rule (``.yml``/``.yaml``) under ``paths``; a bad rule is an InputError naming it.

    Parsed rules are kept in the on-disk rule cache (:mod:`exwatch.hunt.rules.cache`), keyed by the
    rule files' bytes: the next start compiles them from there without pySigma."""
    from exwatch.hunt.rules import cache

    files = _rule_files(paths)
    contents: list[bytes] = []
    for f in files:
        try:
            contents.append(f.read_bytes())
        except OSError as exc:
            raise InputError(f"{f}: not a valid Sigma rule: {exc}") from exc
    key = cache.make_key("sigma", _cache_parts(files, contents))
    entries = cache.load("sigma", key)
    if isinstance(entries, list):
        try:
            return [_spec(e) for e in entries]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, re.error):
            pass  # a damaged entry is rebuilt below
    entries = []
    for f, b in zip(files, contents, strict=True):
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{f}: not a valid Sigma rule: {exc}") from exc
        entries.extend(_parse_rule_file(f, text))
    specs = [_spec(e) for e in entries]
    cache.store("sigma", key, entries)
    return specs


def _any_of(preds: list[Predicate]) -> Predicate:
    return lambda r, k: any(p(r, k) for p in preds)
