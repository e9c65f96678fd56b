"""Ground truth of a lab server: its actual per-wave state, and what a passive scan can rightly conclude."""

from __future__ import annotations

import functools

from exwatch.lab import _catalogue
from exwatch.lab.exchange import cu_path
from exwatch.lab.rewrite import RewriteRequest, RuleSet, evaluate, load_rules, mitigation_rules
from exwatch.lab.spec import WAVES, ServerSpec

# Variants that answer no HTTP at all within a scanner's budget, and the ones that answer but are not Exchange.
UNREACHABLE = frozenset({"refuse", "reset", "silent", "tarpit", "garbage", "bad_tls"})

# The attack-shaped requests of each wave (fingerprinting.md 4.1, 4.3, 4.4): a server is mitigated
# for a wave when its rewrite rules abort every one of them.
ATTACK_REQUESTS: dict[str, tuple[RewriteRequest, ...]] = {
    "proxylogon": (
        RewriteRequest(
            "/owa/auth/x.js",
            {
                "cookie": "X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; "
                "X-BEResource=localhost/owa/auth/logon.aspx?~3;"
            },
        ),
    ),
    "proxyshell": (
        RewriteRequest(
            "/autodiscover/autodiscover.json?@test.com/owa/?&Email=autodiscover/autodiscover.json%3F@test.com"
        ),
        RewriteRequest(
            "/autodiscover/autodiscover.json?@test.com/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@test.com"
        ),
    ),
    "proxynotshell": (
        RewriteRequest(
            "/autodiscover/autodiscover.json?a@foo.var/owa/?&Email=autodiscover/autodiscover.json?a@foo.var"
            "&Protocol=XYZ&FooProtocol=Powershell"
        ),
    ),
}


def rules_of(spec: ServerSpec) -> RuleSet:
    """The rewrite rules in force: the web.config file when the spec names one, else the built-in mitigations."""
    if spec.web_config is not None:
        return load_rules(str(spec.web_config))
    return mitigation_rules(spec.mitigations)


@functools.lru_cache(maxsize=1024)
def mitigated_waves(rules: RuleSet) -> frozenset[str]:
    """The waves whose attack requests these rules abort (a broken web.config aborts nothing)."""
    if rules.error:
        return frozenset()
    return frozenset(
        w for w, reqs in ATTACK_REQUESTS.items() if all(evaluate(rules, r).action == "abort" for r in reqs)
    )


def _host_state(spec: ServerSpec) -> str | None:
    if spec.variant in UNREACHABLE:
        return "unreachable"
    if not spec.is_exchange:
        return "not_exchange"
    return None


def truth(spec: ServerSpec, rules: RuleSet | None = None) -> dict[str, str]:
    """The actual state per wave: kb.verdict(build), with vulnerable + covering mitigation -> mitigated."""
    host = _host_state(spec)
    if host is not None:
        return dict.fromkeys(WAVES, host)
    assert spec.build is not None
    facts = _catalogue.wave_facts(spec.build)
    covered = mitigated_waves(rules if rules is not None else rules_of(spec))
    out: dict[str, str] = {}
    for wave in WAVES:
        state = facts[wave].state if wave in facts else "unknown"
        out[wave] = "mitigated" if state == "vulnerable" and wave in covered else state
    return out


def passive_build(spec: ServerSpec) -> str | None:
    """The build a scan without behavioural probes can learn: full, CU only, or nothing."""
    if not spec.is_exchange or spec.build is None:
        return None
    if spec.variant == "adfs" and spec.build.startswith("14."):
        # Exchange 2010 sends no X-OWA-Version, has no /ecp/ export tool, and behind the federation
        # redirect its logon page (the only place showing its build) is never served: nothing to learn.
        return None
    if spec.variant == "proxy_strip":
        # No X-OWA-Version, /ecp/ blocked: only the logon page's CU folder is left (2010: full build).
        return cu_path(spec.build)
    return spec.build  # X-OWA-Version, the manifest, the ECP folder or the 2010 logon page give it


def truth_passive(spec: ServerSpec) -> dict[str, str]:
    """What a passive scan can rightly conclude: the build verdict, mitigations invisible."""
    host = _host_state(spec)
    if host is not None:
        return dict.fromkeys(WAVES, host)
    build = passive_build(spec)
    if build is None:
        return dict.fromkeys(WAVES, "unknown")
    facts = _catalogue.wave_facts(build)
    return {w: facts[w].state if w in facts else "unknown" for w in WAVES}
