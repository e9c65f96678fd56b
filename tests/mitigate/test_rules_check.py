"""Table tests of the rule validation (HealthChecker's criteria) and the rules data."""

from __future__ import annotations

import pytest

from exwatch.errors import InputError
from exwatch.mitigate.rules import all_rules, rules_for, waves_for
from exwatch.mitigate.webconfig import evaluate, load

PNS = rules_for("proxynotshell")

GOOD_RULE = (
    '<rule name="PowerShell - inbound" {attrs}><match url="{url}" />'
    '<conditions{grouping}><add input="{input}" pattern="{pattern}"{cond} />{extra}</conditions>'
    '<action type="{action}" /></rule>'
)


def config(before: str = "", attrs: str = 'stopProcessing="true"', url: str = ".*", grouping: str = "",
           input: str = "{UrlDecode:{REQUEST_URI}}", pattern: str = "(?=.*autodiscover)(?=.*powershell)",
           cond: str = "", extra: str = "", action: str = "AbortRequest", after: str = "") -> str:  # fmt: skip
    rule = GOOD_RULE.format(attrs=attrs, url=url, grouping=grouping, input=input, pattern=pattern, cond=cond,
                            extra=extra, action=action)  # fmt: skip
    return f"<configuration><system.webServer><rewrite><rules>{before}{rule}{after}</rules></rewrite></system.webServer></configuration>"


OTHER = (
    '<rule name="Other" stopProcessing="true"><match url="^x$" /><action type="Redirect" url="/y" /></rule>'
)
ABORTER = (
    '<rule name="Aborter" stopProcessing="true"><match url="^x$" /><action type="AbortRequest" /></rule>'
)

CASES = [
    ("valid", config(), "ok", None),
    ("custom response counts", config(action="CustomResponse"), "ok", None),
    ("pattern differs only in case", config(pattern="(?=.*AutoDiscover)(?=.*PowerShell)"), "ok", None),
    ("only rule without stopProcessing", config(attrs=""), "ok", None),
    (
        "stopProcessing false with another rule",
        config(attrs="", after=OTHER),
        "invalid",
        "stopProcessing is false",
    ),
    ("disabled", config(attrs='enabled="false" stopProcessing="true"'), "invalid", "disabled"),
    (
        "wildcard",
        config(attrs='patternSyntax="Wildcard" stopProcessing="true"'),
        "invalid",
        "patternSyntax is Wildcard",
    ),
    ("match url", config(url="autodiscover"), "invalid", "match url is 'autodiscover'"),
    ("input", config(input="{REQUEST_URI}"), "invalid", "no condition on {UrlDecode:{REQUEST_URI}}"),
    ("pattern", config(pattern="powershell"), "invalid", "condition pattern is 'powershell'"),
    ("negated condition", config(cond=' negate="true"'), "invalid", 'negate="true"'),
    ("case-sensitive", config(cond=' ignoreCase="false"'), "invalid", "case-sensitive"),
    ("redirect action", config(action="Redirect"), "invalid", "action is 'Redirect'"),
    ("extra condition", config(extra='<add input="{HTTPS}" pattern="on" />'), "invalid", "more condition(s)"),
    (
        "extra condition, MatchAny",
        config(grouping=' logicalGrouping="MatchAny"', extra='<add input="{HTTPS}" pattern="on" />'),
        "ok",
        None,
    ),
    (
        "a stopping rule first",
        config(before=OTHER),
        "invalid",
        "rule 'Other' comes first and stops processing",
    ),
    ("an aborting rule first", config(before=ABORTER), "ok", None),
    ("cleared after", config(after="<clear />"), "invalid", "dropped by a later <clear/>"),
    ("removed after", config(after='<remove name="powershell - inbound" />'), "invalid", "<remove"),
    ("cleared before", config(before=OTHER + "<clear/>"), "ok", None),
]


@pytest.mark.parametrize(("label", "text", "status", "problem"), CASES, ids=[c[0] for c in CASES])
def test_proxynotshell_rule_validation(label: str, text: str, status: str, problem: str | None) -> None:
    (result,) = evaluate(load(text), PNS)
    assert result.status == status, (label, result.problems)
    if problem:
        assert any(problem in p for p in result.problems), result.problems
    else:
        assert result.problems == []


def test_rules_data_is_the_reference() -> None:
    rows = {
        (r.wave, r.name, r.match_url, r.input, r.pattern, r.action, r.stop_processing) for r in all_rules()
    }
    # mitigations.md, sections 1 and 3
    assert rows == {
        ("proxylogon", "X-AnonResource-Backend Abort - inbound", ".*", "{HTTP_COOKIE}", "(.*)X-AnonResource-Backend(.*)", "AbortRequest", False),
        ("proxylogon", "X-BEResource Abort - inbound", ".*", "{HTTP_COOKIE}", "(.*)X-BEResource=(.+)/(.+)~(.+)", "AbortRequest", True),
        ("proxynotshell", "PowerShell - inbound", ".*", "{UrlDecode:{REQUEST_URI}}", "(?=.*autodiscover)(?=.*powershell)", "AbortRequest", True),
    }  # fmt: skip
    assert [r.name for r in rules_for("proxylogon")] == [
        "X-AnonResource-Backend Abort - inbound",
        "X-BEResource Abort - inbound",
    ]
    assert waves_for("ALL") == ("proxylogon", "proxynotshell")
    with pytest.raises(InputError, match="proxyshell"):
        waves_for("proxyshell")


@pytest.mark.parametrize(
    ("outcome", "kb_state", "state"),
    [
        ("mitigated", None, "mitigated"),
        ("mitigated", "vulnerable", "mitigated"),
        ("mitigated", "patched", "patched"),
        ("patched", "vulnerable", "unknown"),
        ("patched", "patched", "patched"),
        ("vulnerable", "patched", "vulnerable"),
        ("inconclusive", "vulnerable", "unknown"),
    ],
)
def test_probe_and_build_combined(outcome: str, kb_state: str | None, state: str) -> None:
    from exwatch.mitigate.remote import judge_with_build

    assert judge_with_build(outcome, "r", kb_state)[0] == state


@pytest.mark.parametrize(
    ("text", "address", "port", "scheme"),
    [
        ("mail.example.org", "mail.example.org", 443, "https"),
        ("127.30.0.1:8443", "127.30.0.1", 8443, "https"),
        ("http://127.30.0.1", "127.30.0.1", 80, "http"),
        ("https://[::1]:444/owa/", "::1", 444, "https"),
    ],
)
def test_parse_target(text: str, address: str, port: int, scheme: str) -> None:
    from exwatch.mitigate.remote import parse_target

    t = parse_target(text)
    assert (t.address, t.port, t.scheme) == (address, port, scheme)
