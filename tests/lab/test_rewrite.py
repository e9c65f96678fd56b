"""The URL Rewrite evaluator: the mitigation rules and the rule features they use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exwatch.lab.rewrite import RewriteRequest, evaluate, expand, mitigation_rules, parse_rules

PROBE_COOKIE = (
    "X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; "
    "X-BEResource=localhost/owa/auth/logon.aspx?~3;"
)


def rules_xml(body: str, rules_attrs: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<configuration><system.webServer><rewrite>'
        f"<rules{rules_attrs}>{body}</rules></rewrite></system.webServer></configuration>"
    )


def req(target: str, cookie: str | None = None) -> RewriteRequest:
    return RewriteRequest(target, {"cookie": cookie} if cookie else {})


@pytest.mark.parametrize(
    ("mitigations", "request_", "action"),
    [
        (["proxylogon"], req("/owa/auth/x.js", PROBE_COOKIE), "abort"),
        (
            ["proxylogon"],
            req("/owa/auth/x.js", "X-AnonResource-Backend=localhost/ecp/default.flt?~3"),
            "abort",
        ),
        (["proxylogon"], req("/ecp/y.js", "X-BEResource=a/b~1"), "abort"),
        (["proxylogon"], req("/ecp/y.js", "X-BEResource=ab1"), "pass"),  # not host/path~n
        (["proxylogon"], req("/owa/", "ClientId=abc"), "pass"),
        (["proxylogon"], req("/owa/auth/x.js"), "pass"),
        (["proxynotshell"], req("/autodiscover/autodiscover.json?x=powershell"), "abort"),
        (["proxynotshell"], req("/autodiscover/autodiscover.json?x=Power%73hell"), "abort"),  # decoded first
        (["proxynotshell"], req("/autodiscover/autodiscover.json?x=a"), "pass"),
        (["proxynotshell"], req("/owa/mailbox/powershell"), "pass"),  # OWASSRF is not covered
        (
            ["proxyshell"],
            req(
                "/autodiscover/autodiscover.json?@test.com/owa/?&Email=autodiscover/autodiscover.json%3F@test.com"
            ),
            "abort",
        ),
        (["proxyshell"], req("/autodiscover/autodiscover.json?Email=a"), "pass"),
        ([], req("/owa/auth/x.js", PROBE_COOKIE), "pass"),
    ],
)
def test_mitigation_rules(mitigations: list[str], request_: RewriteRequest, action: str) -> None:
    assert evaluate(mitigation_rules(mitigations), request_).action == action


def test_names_do_not_matter_semantics_do() -> None:
    xml = rules_xml(
        '<rule name="renamed by the admin" stopProcessing="true"><match url=".*"/>'
        '<conditions><add input="{HTTP_COOKIE}" pattern="(.*)X-AnonResource-Backend(.*)"/></conditions>'
        '<action type="AbortRequest"/></rule>'
    )
    assert evaluate(parse_rules(xml), req("/x", PROBE_COOKIE)).action == "abort"


def test_disabled_rule_and_negate_and_match_any() -> None:
    disabled = rules_xml(
        '<rule name="r" enabled="false"><match url=".*"/><action type="AbortRequest"/></rule>'
    )
    assert evaluate(parse_rules(disabled), req("/")).action == "pass"
    negated = rules_xml(
        '<rule name="r"><match url="^owa/" negate="true"/><action type="AbortRequest"/></rule>'
    )
    assert evaluate(parse_rules(negated), req("/owa/x")).action == "pass"
    assert evaluate(parse_rules(negated), req("/ecp/x")).action == "abort"
    any_of = rules_xml(
        '<rule name="r"><match url=".*"/><conditions logicalGrouping="MatchAny">'
        '<add input="{QUERY_STRING}" pattern="^a=1$"/><add input="{URL}" pattern="secret"/></conditions>'
        '<action type="AbortRequest"/></rule>'
    )
    assert evaluate(parse_rules(any_of), req("/x?a=1")).action == "abort"
    assert evaluate(parse_rules(any_of), req("/top%20secret")).action == "abort"
    assert evaluate(parse_rules(any_of), req("/x?a=2")).action == "pass"
    cond_negate = rules_xml(
        '<rule name="r"><match url=".*"/><conditions>'
        '<add input="{HTTP_COOKIE}" pattern="ok" negate="true"/></conditions><action type="AbortRequest"/></rule>'
    )
    assert evaluate(parse_rules(cond_negate), req("/", "ok=1")).action == "pass"
    assert evaluate(parse_rules(cond_negate), req("/", "no=1")).action == "abort"


def test_stop_processing_and_custom_response() -> None:
    xml = rules_xml(
        '<rule name="first" stopProcessing="true"><match url="^stop"/><action type="None"/></rule>'
        '<rule name="second"><match url=".*"/><action type="CustomResponse" statusCode="403" '
        'statusReason="Forbidden: blocked" statusDescription="no"/></rule>'
    )
    rules = parse_rules(xml)
    assert evaluate(rules, req("/stop/here")).action == "pass"
    verdict = evaluate(rules, req("/other"))
    assert (verdict.action, verdict.status, verdict.reason, verdict.rule) == (
        "respond",
        403,
        "Forbidden: blocked",
        "second",
    )


def test_case_sensitivity_follows_ignore_case() -> None:
    strict = rules_xml(
        '<rule name="r"><match url=".*"/><conditions><add input="{REQUEST_URI}" pattern="PowerShell" ignoreCase="false"/>'
        '</conditions><action type="AbortRequest"/></rule>'
    )
    assert evaluate(parse_rules(strict), req("/a?PowerShell")).action == "abort"
    assert evaluate(parse_rules(strict), req("/a?powershell")).action == "pass"


def test_clear_and_remove() -> None:
    xml = rules_xml(
        '<rule name="a"><match url=".*"/><action type="AbortRequest"/></rule><clear/>'
        '<rule name="b"><match url=".*"/><action type="AbortRequest"/></rule><remove name="B"/>'
    )
    assert parse_rules(xml).rules == ()


def test_broken_file_is_a_configuration_error() -> None:
    broken = parse_rules("<configuration><system.webServer>")
    assert broken.error and "not well-formed" in broken.error
    assert evaluate(broken, req("/")).status == 500
    bad_regex = parse_rules(
        rules_xml('<rule name="r"><match url="(unclosed"/><action type="AbortRequest"/></rule>')
    )
    assert bad_regex.error and "'r'" in bad_regex.error


def test_expand_server_variables() -> None:
    r = RewriteRequest("/a%20b?x=%41", {"cookie": "c=1", "host": "h", "user-agent": "ua"})
    assert expand("{REQUEST_URI}", r) == "/a%20b?x=%41"
    assert expand("{URL}", r) == "/a b"
    assert expand("{QUERY_STRING}", r) == "x=%41"
    assert expand("{UrlDecode:{REQUEST_URI}}", r) == "/a b?x=A"
    assert expand("{ToLower:{HTTP_HOST}}-{HTTP_USER_AGENT}", r) == "h-ua"
    assert expand("{HTTP_COOKIE}", r) == "c=1"


def test_bom_and_crlf_file() -> None:
    text = "\ufeff" + rules_xml(
        '<rule name="r"><match url=".*"/><action type="AbortRequest"/></rule>'
    ).replace("><", ">\r\n<")
    assert evaluate(parse_rules(text.encode("utf-8")), req("/")).action == "abort"


@given(st.text(max_size=400))
def test_any_text_is_rules_or_an_error(text: str) -> None:
    rules = parse_rules(text)
    verdict = evaluate(rules, req("/owa/?a", "c=1"))
    if rules.error is not None:
        # a configuration IIS cannot read answers every request with a 500
        assert (verdict.action, verdict.status) == ("respond", 500) and not rules.rules
    else:
        assert verdict.action in ("pass", "abort", "respond")


@given(st.text(alphabet="()[]{}.*+?|^$\\azAZ09-", max_size=30))
def test_any_pattern_compiles_or_is_a_configuration_error(pattern: str) -> None:
    xml = rules_xml(
        '<rule name="r"><match url=".*"/><conditions>'
        f'<add input="{{URL}}" pattern="{pattern}"/></conditions><action type="AbortRequest"/></rule>'
    )
    rules = parse_rules(xml)
    verdict = evaluate(rules, req("/x"))
    assert verdict.action in ("pass", "abort", "respond")
