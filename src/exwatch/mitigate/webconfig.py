"""Pure reading of an IIS web.config: the site's rewrite rules and how each mitigation rule stands.

The validation follows HealthChecker's criteria for the ProxyNotShell rule (mitigations.md section 4,
from microsoft/CSS-Exchange ``Invoke-AnalyzerSecurityCve-2022-41040.NotPublished.ps1``) and applies them to
the ProxyLogon rules too, matching on semantics as well as on names since admins rename rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exwatch.errors import InputError
from exwatch.mitigate.rules import RewriteRule
from exwatch.mitigate.xmltext import Node, parse_text

RULES_PATH = ("system.webServer", "rewrite", "rules")
# Location paths that mean "this site itself" in a site's web.config.
_SITE_LOCATIONS = ("", ".")
# Actions that end the request: a rule that aborts needs no stopProcessing to protect what follows.
_ENDING_ACTIONS = ("abortrequest", "customresponse")


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() == "true"


def _get(attrs: dict[str, str], name: str) -> str | None:
    """An attribute by name, case-insensitively (IIS attribute names are case-sensitive, but be lenient)."""
    if name in attrs:
        return attrs[name]
    low = name.lower()
    for key, value in attrs.items():
        if key.lower() == low:
            return value
    return None


@dataclass
class RulesBlock:
    """A ``rules`` element of the site, with where it sits."""

    node: Node
    location: str | None  # None: at the top level; else the <location path="..."> value
    inherited: bool  # False inside <location inheritInChildApplications="false">


@dataclass
class FoundRule:
    """One ``<rule>`` of the site's rules, as IIS would read it."""

    node: Node
    block: RulesBlock
    name: str
    enabled: bool
    stop_processing: bool
    pattern_syntax: str
    match_url: str | None
    match_negate: bool
    conditions: list[dict[str, str]]
    logical_grouping: str
    action: str | None
    neutralized_by: str | None = None  # "<clear/>" or "<remove/>" later in the same file
    alone: bool = False  # the only rule of its rules element


def load(text: str, label: str = "web.config") -> Node:
    """The parsed document; its root must be ``<configuration>``."""
    root = parse_text(text, label)
    if root.name != "configuration":
        raise InputError(
            f"{label}: the root element is <{root.name}>, not <configuration>: not an IIS configuration file"
        )
    return root


def _descend(node: Node, names: tuple[str, ...]) -> list[Node]:
    found = [node]
    for name in names:
        found = [child for parent in found for child in parent.elements(name)]
    return found


def site_blocks(root: Node) -> list[RulesBlock]:
    """The ``rules`` elements that configure the site itself, in document order."""
    blocks: list[RulesBlock] = []
    for child in root.elements():
        if child.name == "system.webServer":
            blocks += [RulesBlock(n, None, True) for n in _descend(child, RULES_PATH[1:])]
        elif child.name == "location":
            path = (_get(child.attrs, "path") or "").strip()
            if path in _SITE_LOCATIONS:
                inherited = _bool(_get(child.attrs, "inheritInChildApplications"), True)
                blocks += [RulesBlock(n, path, inherited) for n in _descend(child, RULES_PATH)]
    blocks.sort(key=lambda b: b.node.start)
    return blocks


def other_location_blocks(root: Node) -> list[RulesBlock]:
    """``rules`` elements inside ``<location>`` elements for a sub-path (they do not cover the site)."""
    blocks: list[RulesBlock] = []
    for loc in root.elements("location"):
        path = (_get(loc.attrs, "path") or "").strip()
        if path not in _SITE_LOCATIONS:
            blocks += [RulesBlock(n, path, True) for n in _descend(loc, RULES_PATH)]
    return blocks


def _read_rule(node: Node, block: RulesBlock) -> FoundRule:
    match = node.elements("match")
    conditions_el = node.elements("conditions")
    action = node.elements("action")
    conds: list[dict[str, str]] = []
    grouping = "MatchAll"
    if conditions_el:
        grouping = _get(conditions_el[0].attrs, "logicalGrouping") or "MatchAll"
        for add in conditions_el[0].elements("add"):
            conds.append({k: v for k, v in add.attrs.items()})
    return FoundRule(
        node=node,
        block=block,
        name=_get(node.attrs, "name") or "",
        enabled=_bool(_get(node.attrs, "enabled"), True),
        stop_processing=_bool(_get(node.attrs, "stopProcessing"), False),
        pattern_syntax=_get(node.attrs, "patternSyntax") or "ECMAScript",
        match_url=_get(match[0].attrs, "url") if match else None,
        match_negate=_bool(_get(match[0].attrs, "negate"), False) if match else False,
        conditions=conds,
        logical_grouping=grouping,
        action=_get(action[0].attrs, "type") if action else None,
    )


def site_rules(root: Node) -> tuple[list[FoundRule], list[FoundRule]]:
    """(effective rules in evaluation order, rules written in the file but cleared or removed after).

    IIS merges a collection in order: ``<clear/>`` drops what came before, ``<remove name=.../>``
    drops one entry, ``<rule>`` adds one.
    """
    effective: list[FoundRule] = []
    dropped: list[FoundRule] = []
    for block in site_blocks(root):
        rule_nodes = block.node.elements("rule")
        for child in block.node.elements():
            if child.name == "clear":
                for rule in effective:
                    rule.neutralized_by = "a later <clear/>"
                dropped += effective
                effective = []
            elif child.name == "remove":
                target = (_get(child.attrs, "name") or "").lower()
                for rule in [r for r in effective if r.name.lower() == target]:
                    rule.neutralized_by = f'a later <remove name="{rule.name}"/>'
                    effective.remove(rule)
                    dropped.append(rule)
            elif child.name == "rule":
                rule = _read_rule(child, block)
                rule.alone = len(rule_nodes) == 1
                effective.append(rule)
    return effective, dropped


@dataclass
class RuleStatus:
    """How one mitigation rule stands in a file: ``ok``, ``invalid`` or ``missing``."""

    rule: RewriteRule
    status: str
    found_as: str | None = None  # the name of the valid rule when it is not ours
    problems: list[str] = field(default_factory=list)
    node: Node | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.rule.name,
            "wave": self.rule.wave,
            "cve": self.rule.cve,
            "status": self.status,
            "found_as": self.found_as,
            "problems": list(self.problems),
        }


def rule_problems(ref: RewriteRule, found: FoundRule, before: list[FoundRule]) -> list[str]:
    """Why ``found`` does not implement ``ref`` (empty when it does); ``before`` precedes it in order."""
    problems: list[str] = []
    if found.neutralized_by:
        problems.append(f"dropped by {found.neutralized_by}")
    if not found.block.inherited:
        problems.append(
            'inside <location inheritInChildApplications="false">: Exchange\'s applications (owa, ecp, '
            "autodiscover) do not inherit it"
        )
    if not found.enabled:
        problems.append('disabled (enabled="false")')
    syntax = found.pattern_syntax.strip().lower()
    if syntax in ("wildcard", "exactmatch"):
        problems.append(f"patternSyntax is {found.pattern_syntax}, expected regular expressions (ECMAScript)")
    if found.match_url != ref.match_url:
        problems.append(f"match url is {found.match_url!r}, expected {ref.match_url!r}")
    if found.match_negate:
        problems.append('match has negate="true"')
    if (found.action or "").lower() not in _ENDING_ACTIONS:
        problems.append(f"action is {found.action!r}, expected {ref.action!r}")
    # PowerShell's -eq, which HealthChecker uses, compares strings case-insensitively.
    cond = [c for c in found.conditions if (_get(c, "input") or "").lower() == ref.input.lower()]
    if not cond:
        inputs = ", ".join(repr(_get(c, "input")) for c in found.conditions) or "none"
        problems.append(f"no condition on {ref.input} (condition inputs: {inputs})")
    else:
        c = cond[0]
        pattern = _get(c, "pattern")
        if (pattern or "").lower() != ref.pattern.lower():
            problems.append(f"condition pattern is {pattern!r}, expected {ref.pattern!r}")
        if _bool(_get(c, "negate"), False):
            problems.append('condition has negate="true"')
        if (_get(c, "matchType") or "Pattern").strip().lower() not in ("pattern", "0"):
            problems.append(f"condition matchType is {_get(c, 'matchType')}, expected Pattern")
        if not _bool(_get(c, "ignoreCase"), True):
            problems.append('condition has ignoreCase="false": the pattern would be case-sensitive')
        if len(found.conditions) > 1 and found.logical_grouping.lower() != "matchany":
            problems.append(
                f"{len(found.conditions) - 1} more condition(s) must also match (logicalGrouping MatchAll)"
            )
    if ref.stop_processing and not found.stop_processing and not found.alone:
        problems.append("stopProcessing is false and it is not the only rule")
    for earlier in before:
        if _stops_others(earlier):
            problems.append(f"rule {earlier.name!r} comes first and stops processing (order)")
    return problems


def _stops_others(rule: FoundRule) -> bool:
    """Whether a matching ``rule`` would keep later rules from running (without ending the request)."""
    return rule.enabled and rule.stop_processing and (rule.action or "").lower() not in _ENDING_ACTIONS


def evaluate(root: Node, refs: tuple[RewriteRule, ...]) -> list[RuleStatus]:
    """The status of each mitigation rule in the parsed file."""
    effective, dropped = site_rules(root)
    statuses: list[RuleStatus] = []
    # Only rules that stop processing matter for the order; collect them once (files may hold many rules).
    stoppers_before: list[list[FoundRule]] = []
    seen: list[FoundRule] = []
    for found in effective:
        stoppers_before.append(list(seen))
        if _stops_others(found):
            seen.append(found)
    for ref in refs:
        by_name: list[tuple[FoundRule, list[str]]] = []
        equivalent: list[FoundRule] = []
        wanted_input = ref.input.lower()
        for i, found in enumerate(effective):
            named = found.name.lower() == ref.name.lower()
            if not named and all((_get(c, "input") or "").lower() != wanted_input for c in found.conditions):
                continue  # cannot be an equivalent rule: no condition on the right input
            problems = rule_problems(ref, found, stoppers_before[i])
            if named:
                by_name.append((found, problems))
            elif not problems:
                equivalent.append(found)
        for found in dropped:
            if found.name.lower() == ref.name.lower():
                by_name.append((found, rule_problems(ref, found, [])))
        valid = [f for f, p in by_name if not p]
        if valid:
            statuses.append(RuleStatus(ref, "ok", node=valid[0].node))
        elif equivalent:
            statuses.append(RuleStatus(ref, "ok", found_as=equivalent[0].name, node=equivalent[0].node))
        elif by_name:
            found, problems = by_name[0]
            statuses.append(RuleStatus(ref, "invalid", problems=problems, node=found.node))
        else:
            statuses.append(RuleStatus(ref, "missing"))
    return statuses


def child_override(text: str, label: str) -> tuple[bool, set[str]]:
    """(whether a child config clears inherited rules, the rule names it removes), per section 4."""
    root = load(text, label)
    clears = False
    removes: set[str] = set()
    for node in _all_rules_elements(root):
        for child in node.elements():
            if child.name == "clear":
                clears = True
            elif child.name == "remove":
                removes.add((_get(child.attrs, "name") or "").lower())
    return clears, removes


def _all_rules_elements(root: Node) -> list[Node]:
    found = _descend(root, RULES_PATH)
    for loc in root.elements("location"):
        found += _descend(loc, RULES_PATH)
    return found
