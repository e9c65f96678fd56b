"""``verdict(build, as_of=DAY)``: the knowledge of that day (only updates released by then), a table.

Dates from the shipped catalogue (builds.csv, Microsoft's build list): Mar21SU 2021-03-02, Exchange 2016
CU20 2021-03-16, Apr21SU 2021-04-13, May21SU 2021-05-11, Exchange 2010 SP3 RU32 2021-03-02.
"""

from __future__ import annotations

from datetime import date

import pytest

from exwatch import kb

CASES = [
    # build, as_of, wave, state, security_update builds named, cumulative update named, text contains
    ("15.1.2176.2", date(2021, 3, 1), "proxylogon", "vulnerable", [], None, "No update fixing ProxyLogon"),
    ("15.1.2176.2", date(2021, 3, 10), "proxylogon", "vulnerable", ["15.1.2176.9"], None, "KB5000871"),
    ("15.1.2176.2", date(2021, 3, 20), "proxylogon", "vulnerable", ["15.1.2176.9"], "15.1.2242.4", "CU20"),
    ("15.1.2176.2", None, "proxylogon", "vulnerable", ["15.1.2176.9"], "15.1.2242.4", "CU20"),
    ("15.1.2176.9", date(2021, 3, 10), "proxylogon", "patched", [], None, "Nothing to install"),
    # patched by Apr21SU: open as of the day before, and ProxyShell had no fix yet
    ("15.1.2176.12", date(2021, 4, 12), "proxyshell", "vulnerable", [], None, "No update fixing ProxyShell"),
    # Apr21SU closed two of ProxyShell's CVEs; CVE-2021-31207 waited for May21SU
    ("15.1.2176.12", date(2021, 4, 20), "proxyshell", "vulnerable", [], None, "No update fixing ProxyShell"),
    ("15.1.2176.12", date(2021, 5, 20), "proxyshell", "vulnerable", ["15.1.2176.14"], None, "KB5003435"),
    ("15.1.2176.14", date(2021, 5, 20), "proxyshell", "patched", [], None, "Nothing to install"),
    ("14.3.509.0", date(2021, 3, 1), "proxylogon", "vulnerable", [], None, "No update fixing ProxyLogon"),
    ("14.3.509.0", date(2021, 3, 10), "proxylogon", "vulnerable", ["14.3.513.0"], None, "Rollup 32"),
    ("14.3.513.0", date(2021, 3, 10), "proxylogon", "patched", [], None, "Nothing to install"),
]


@pytest.mark.parametrize(("build", "as_of", "wave", "state", "su", "cu", "text"), CASES)
def test_verdict_as_of(
    build: str, as_of: date | None, wave: str, state: str, su: list[str], cu: str | None, text: str
) -> None:
    wv = kb.verdict(build, as_of=as_of).waves[wave]
    assert wv.state.value == state
    assert list(wv.fix.security_update) == su
    assert wv.fix.cumulative_update == cu
    assert text in wv.fix.text


def test_as_of_today_is_the_plain_verdict_and_as_of_is_pure() -> None:
    plain = kb.verdict("15.1.2176.2").to_dict()
    assert kb.verdict("15.1.2176.2", as_of=None).to_dict() == plain
    kb.verdict("15.1.2176.2", as_of=date(2021, 3, 1))
    assert kb.verdict("15.1.2176.2").to_dict() == plain  # an as-of call changes nothing for later calls


def test_as_of_reason_says_no_fix_yet() -> None:
    wv = kb.verdict("15.1.2176.2", as_of=date(2021, 3, 1)).waves["proxylogon"]
    assert "as of 2021-03-01" in wv.reason
