"""The behavioural probes' requests and judgements, from the decision table of fingerprinting.md 4."""

from __future__ import annotations

import pytest

from exwatch.scan.probes import (
    PROXYLOGON_COOKIE,
    USER_AGENT,
    ProbeResponse,
    judge_probe,
    probe_requests,
)

OK = ProbeResponse(200, {"Server": "Microsoft-IIS/10.0"}, b"")
ABORT = ProbeResponse(None, {}, b"", "reset")
EOF_ABORT = ProbeResponse(None, {}, b"", "eof")
TIMEOUT = ProbeResponse(None, {}, b"", "timeout")
LOCALHOST = ProbeResponse(500, {"x-calculatedbetarget": "localhost"}, b"NegotiateSecurityContext")
ADFS_LOCALHOST = ProbeResponse(302, {"X-CalculatedBETarget": "LocalHost"}, b"")
NORMAL_BE = ProbeResponse(404, {"X-CalculatedBETarget": "exch01.contoso.local"}, b"")
SHELL_VULN = ProbeResponse(
    302,
    {
        "Location": "/owa/auth/errorfe.aspx?httpCode=500&owaError=Microsoft.Exchange.Clients.Owa2.Server.Core."
        "OwaADUserNotFoundException&owaVer=15.2.858.2"
    },
    b"<html><head><title>Object moved</title></head></html>",
)
SHELL_MAPI = ProbeResponse(200, {}, b"<title>Exchange MAPI/HTTP Connectivity Endpoint</title>")


def test_requests_shapes() -> None:
    attack, control = probe_requests("proxylogon")
    assert (attack.method, attack.path) == ("GET", "/owa/auth/x.js")
    assert attack.headers["Cookie"] == PROXYLOGON_COOKIE
    assert "Cookie" not in control.headers and control.path == attack.path
    attack, control = probe_requests("proxyshell")
    assert attack.path.startswith("/autodiscover/autodiscover.json?@test.com/owa/?&Email=")
    attack, control = probe_requests("proxynotshell")
    assert "autodiscover" in attack.path.lower() and "powershell" in attack.path.lower()
    assert "autodiscover" in control.path.lower() and "powershell" not in control.path.lower()
    for wave in ("proxylogon", "proxyshell", "proxynotshell"):
        for req in probe_requests(wave):
            assert req.headers["User-Agent"] == USER_AGENT
    with pytest.raises(ValueError):
        probe_requests("heartbleed")


@pytest.mark.parametrize(
    ("wave", "attack", "control", "outcome"),
    [
        ("proxylogon", LOCALHOST, OK, "vulnerable"),
        ("proxylogon", ADFS_LOCALHOST, OK, "vulnerable"),  # status deliberately ignored (CSS-Exchange PR 199)
        ("proxylogon", ABORT, OK, "mitigated"),
        ("proxylogon", EOF_ABORT, OK, "mitigated"),
        ("proxylogon", NORMAL_BE, OK, "patched"),
        ("proxylogon", OK, OK, "patched"),
        ("proxylogon", LOCALHOST, ABORT, "inconclusive"),  # control failed: the probe says nothing
        ("proxylogon", ABORT, ABORT, "inconclusive"),
        ("proxylogon", TIMEOUT, OK, "inconclusive"),  # slow is not aborted
        ("proxylogon", ProbeResponse(502, {}, b""), OK, "mitigated"),
        ("proxylogon", ProbeResponse(502, {}, b""), ProbeResponse(502, {}, b""), "patched"),
        ("proxyshell", SHELL_VULN, OK, "vulnerable"),
        ("proxyshell", SHELL_MAPI, OK, "vulnerable"),
        ("proxyshell", ProbeResponse(400, {}, b"bad request"), OK, "patched"),
        ("proxyshell", ABORT, OK, "mitigated"),
        ("proxyshell", SHELL_VULN, TIMEOUT, "inconclusive"),
        ("proxynotshell", ABORT, OK, "mitigated"),
        ("proxynotshell", ProbeResponse(302, {}, b"moved"), OK, "vulnerable"),
        ("proxynotshell", ProbeResponse(302, {}, b"Protocol XYZ"), OK, "patched"),
        ("proxynotshell", ProbeResponse(401, {}, b""), OK, "patched"),
    ],
)
def test_judge(wave: str, attack: ProbeResponse, control: ProbeResponse, outcome: str) -> None:
    result = judge_probe(wave, attack, control)
    assert result.outcome == outcome, result.reason
    assert result.reason
    assert result.validated is (wave != "proxynotshell" or outcome in ("mitigated", "inconclusive"))


def test_judge_unknown_wave() -> None:
    with pytest.raises(ValueError):
        judge_probe("nope", OK, OK)
