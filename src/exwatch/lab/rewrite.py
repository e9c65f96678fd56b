"""A small evaluator of IIS URL Rewrite inbound rules: the subset the Exchange mitigations use.

Pure: ``parse_rules(xml_text)`` turns a web.config into rules, ``evaluate(rules, request)`` says what
IIS would do with a request. Supported: ``<rule name enabled patternSyntax stopProcessing>``,
``<match url ignoreCase negate>``, ``<conditions logicalGrouping>`` with ``<add input pattern negate
ignoreCase matchType>``, server variables ``{HTTP_COOKIE}``, ``{REQUEST_URI}``, ``{URL}``,
``{QUERY_STRING}``, ``{HTTP_HOST}``, any ``{HTTP_<HEADER>}``, the functions ``{UrlDecode:...}``,
``{ToLower:...}`` and ``{UrlEncode:...}``, and the actions ``AbortRequest``, ``CustomResponse`` and
``None`` (other actions are recognised and do nothing here). Rule semantics follow the IIS URL Rewrite
module reference (learn.microsoft.com, "URL Rewrite Module Configuration Reference"): ``match url`` is
tested against the URL path without the leading slash and without the query string; conditions
default to ``MatchAll``; ``ignoreCase`` defaults to true; ``stopProcessing`` ends evaluation after a
matching rule; ``AbortRequest`` drops the connection without a response.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from exwatch.errors import ConfigError
from exwatch.kb import WAVE_IDS


@dataclass(frozen=True)
class Condition:
    """One ``<add input=... pattern=.../>`` of a rule's conditions."""

    input: str
    pattern: str
    negate: bool = False
    ignore_case: bool = True
    match_type: str = "pattern"  # pattern | isfile | isdirectory


@dataclass(frozen=True)
class Rule:
    """One inbound rewrite rule."""

    name: str
    url: str = ".*"
    url_negate: bool = False
    url_ignore_case: bool = True
    syntax: str = "ecmascript"  # ecmascript | wildcard | exactmatch
    conditions: tuple[Condition, ...] = ()
    match_any: bool = False
    action: str = "none"  # abortrequest | customresponse | none | rewrite | redirect
    status: int = 403
    reason: str = "Forbidden"
    stop: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class RuleSet:
    """The rules of one web.config, or the error that makes IIS refuse every request."""

    rules: tuple[Rule, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class RewriteRequest:
    """The parts of a request that rules can see. ``target`` is the raw request target (path?query)."""

    target: str
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names


@dataclass(frozen=True)
class Verdict:
    """What the rules decide: ``pass``, ``abort`` or ``respond`` (with status and reason), and which rule."""

    action: str
    rule: str | None = None
    status: int = 0
    reason: str = ""


PASS = Verdict("pass")


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes")


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


def parse_rules(xml_text: str | bytes) -> RuleSet:
    """The inbound rules of a web.config (``system.webServer/rewrite/rules``); a broken file yields an error set."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        return RuleSet(error=f"web.config is not well-formed XML: {exc}")
    rules: list[Rule] = []
    for rewrite_el in root.iter():
        if _local(rewrite_el.tag) != "rewrite":
            continue
        for rules_el in rewrite_el:
            if _local(rules_el.tag) != "rules":
                continue
            for child in rules_el:
                tag = _local(child.tag)
                if tag == "clear":
                    rules.clear()
                elif tag == "remove":
                    name = (child.get("name") or "").lower()
                    rules = [r for r in rules if r.name.lower() != name]
                elif tag == "rule":
                    try:
                        rules.append(_parse_rule(child))
                    except (ValueError, re.error) as exc:
                        return RuleSet(error=f"rule {child.get('name')!r}: {exc}")
    return RuleSet(tuple(rules))


def _parse_rule(el: ET.Element) -> Rule:
    match = next((c for c in el if _local(c.tag) == "match"), None)
    if match is None:
        raise ValueError("no <match> element")
    conds_el = next((c for c in el if _local(c.tag) == "conditions"), None)
    conditions: list[Condition] = []
    match_any = False
    if conds_el is not None:
        match_any = (conds_el.get("logicalGrouping") or "MatchAll").lower() == "matchany"
        for add in conds_el:
            if _local(add.tag) != "add":
                continue
            mt = (add.get("matchType") or "Pattern").strip().lower()
            mt = {"0": "pattern", "1": "isfile", "2": "isdirectory"}.get(mt, mt)
            conditions.append(
                Condition(
                    input=add.get("input") or "",
                    pattern=add.get("pattern") or "",
                    negate=_bool(add.get("negate"), False),
                    ignore_case=_bool(add.get("ignoreCase"), True),
                    match_type=mt,
                )
            )
    action_el = next((c for c in el if _local(c.tag) == "action"), None)
    action = (action_el.get("type") or "None").lower() if action_el is not None else "none"
    status = 403
    reason = "Forbidden"
    if action_el is not None and action == "customresponse":
        status = int(action_el.get("statusCode") or "403")
        reason = action_el.get("statusReason") or action_el.get("statusDescription") or "Forbidden"
    syntax = (el.get("patternSyntax") or "ECMAScript").lower().replace(" ", "")
    syntax = {"regularexpressions": "ecmascript"}.get(syntax, syntax)
    rule = Rule(
        name=el.get("name") or "",
        url=match.get("url") or "",
        url_negate=_bool(match.get("negate"), False),
        url_ignore_case=_bool(match.get("ignoreCase"), True),
        syntax=syntax,
        conditions=tuple(conditions),
        match_any=match_any,
        action=action,
        status=status,
        reason=reason,
        stop=_bool(el.get("stopProcessing"), False),
        enabled=_bool(el.get("enabled"), True),
    )
    # Compile once here so that a bad pattern is a configuration error, as in IIS.
    _compile(rule.url, rule.syntax, rule.url_ignore_case)
    for cond in rule.conditions:
        if cond.match_type == "pattern":
            _compile(cond.pattern, rule.syntax, cond.ignore_case)
    return rule


_CACHE: dict[tuple[str, str, bool], re.Pattern[str]] = {}


def _compile(pattern: str, syntax: str, ignore_case: bool) -> re.Pattern[str]:
    key = (pattern, syntax, ignore_case)
    found = _CACHE.get(key)
    if found is None:
        if syntax == "wildcard":
            regex = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
        elif syntax == "exactmatch":
            regex = "^" + re.escape(pattern) + "$"
        else:
            regex = pattern
        with warnings.catch_warnings():  # ECMAScript patterns may look odd to Python's re (FutureWarning)
            warnings.simplefilter("ignore")
            found = re.compile(regex, re.IGNORECASE if ignore_case else 0)
        _CACHE[key] = found
    return found


def _matches(pattern: str, syntax: str, ignore_case: bool, value: str) -> bool:
    return _compile(pattern, syntax, ignore_case).search(value) is not None


_VAR_RE = re.compile(r"\{([A-Za-z_]+)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")


def expand(template: str, request: RewriteRequest) -> str:
    """Expand server variables and functions in a condition input, e.g. ``{UrlDecode:{REQUEST_URI}}``."""

    def variable(name: str) -> str:
        upper = name.upper()
        path, _, query = request.target.partition("?")
        if upper == "REQUEST_URI":
            return request.target
        if upper == "URL":
            return unquote(path)
        if upper == "QUERY_STRING":
            return query
        if upper.startswith("HTTP_"):
            return request.headers.get(upper[5:].lower().replace("_", "-"), "")
        return ""

    def replace(m: re.Match[str]) -> str:
        name, arg = m.group(1), m.group(2)
        if arg is None:
            return variable(name)
        inner = expand(arg, request)
        func = name.lower()
        if func == "urldecode":
            return unquote(inner)
        if func == "tolower":
            return inner.lower()
        if func == "urlencode":
            from urllib.parse import quote

            return quote(inner, safe="")
        return ""

    return _VAR_RE.sub(replace, template)


def evaluate(rule_set: RuleSet, request: RewriteRequest) -> Verdict:
    """What IIS URL Rewrite does with this request: pass it on, abort it, or answer it itself."""
    if rule_set.error:
        return Verdict("respond", None, 500, "Internal Server Error")
    path = request.target.partition("?")[0]
    url_input = unquote(path).lstrip("/")
    for rule in rule_set.rules:
        if not rule.enabled:
            continue
        hit = _matches(rule.url, rule.syntax, rule.url_ignore_case, url_input) != rule.url_negate
        if hit and rule.conditions:
            results = (_condition(c, rule.syntax, request) for c in rule.conditions)
            hit = any(results) if rule.match_any else all(results)
        if not hit:
            continue
        if rule.action == "abortrequest":
            return Verdict("abort", rule.name)
        if rule.action == "customresponse":
            return Verdict("respond", rule.name, rule.status, rule.reason)
        if rule.stop:
            break
    return PASS


def _condition(cond: Condition, syntax: str, request: RewriteRequest) -> bool:
    value = expand(cond.input, request)
    if cond.match_type != "pattern":
        result = False  # the lab has no file system behind its URLs
    else:
        result = _matches(cond.pattern, syntax, cond.ignore_case, value)
    return result != cond.negate


def load_rules(path: str) -> RuleSet:
    """Read and parse a web.config; a missing file means no rules, an unreadable one is an error."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return RuleSet()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_rules(data)


# The mitigation rules as Microsoft's scripts write them (mitigations.md sections 1 and 3), and one
# lab-defined rule for ProxyShell: Microsoft published no URL Rewrite mitigation for CVE-2021-34473, so
# the emulator's "proxyshell" mitigation is its own rule aborting the autodiscover.json '@' path confusion.
MITIGATION_RULES: dict[str, tuple[tuple[str, str, str, bool], ...]] = {
    "proxylogon": (
        ("X-AnonResource-Backend Abort - inbound", "{HTTP_COOKIE}", "(.*)X-AnonResource-Backend(.*)", False),
        ("X-BEResource Abort - inbound", "{HTTP_COOKIE}", "(.*)X-BEResource=(.+)/(.+)~(.+)", True),
    ),
    "proxyshell": (
        (
            "Lab ProxyShell autodiscover.json - inbound",
            "{UrlDecode:{REQUEST_URI}}",
            r"autodiscover\.json.*@",
            True,
        ),
    ),
    "proxynotshell": (
        ("PowerShell - inbound", "{UrlDecode:{REQUEST_URI}}", "(?=.*autodiscover)(?=.*powershell)", True),
    ),
}


def _xml_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def mitigation_web_config(mitigations: list[str] | tuple[str, ...]) -> str:
    """A Default Web Site web.config carrying the rules of the given mitigations, as the scripts write them."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<configuration>",
        "  <system.webServer>",
        "    <rewrite>",
        "      <rules>",
    ]
    for wave in WAVE_IDS:
        if wave not in mitigations:
            continue
        for name, cond_input, pattern, stop in MITIGATION_RULES[wave]:
            lines += [
                f'        <rule name="{_xml_attr(name)}" patternSyntax="ECMAScript" stopProcessing="{str(stop).lower()}">',
                '          <match url=".*" />',
                "          <conditions>",
                f'            <add input="{_xml_attr(cond_input)}" pattern="{_xml_attr(pattern)}" />',
                "          </conditions>",
                '          <action type="AbortRequest" />',
                "        </rule>",
            ]
    lines += ["      </rules>", "    </rewrite>", "  </system.webServer>", "</configuration>", ""]
    return "\n".join(lines)


def mitigation_rules(mitigations: list[str] | tuple[str, ...]) -> RuleSet:
    """The parsed rules of ``mitigation_web_config`` (the same evaluator serves built-in and file rules)."""
    return parse_rules(mitigation_web_config(tuple(mitigations)))
