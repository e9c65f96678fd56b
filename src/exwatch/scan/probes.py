"""Behavioural probes for the three waves: request builders and response judges (pure, no IO).

Each wave has one attack-shaped request and one control request. The control must bring back a complete
HTTP response, otherwise the attack's result says nothing (fingerprinting.md 4.2). An attack request that
is aborted (no status line) while its control answered is the signature of the IIS URL Rewrite
``AbortRequest`` mitigations (mitigations.md 1 and 3).

Request shapes and decision rules (fingerprinting.md 4):

- ProxyLogon (CVE-2021-26855): ``GET /owa/auth/x.js`` with the anonymous-resource cookies of Microsoft's
  ``http-vuln-cve2021-26855.nse`` (microsoft/CSS-Exchange, Security/src, v4); vulnerable iff the response
  carries ``X-CalculatedBETarget`` containing ``localhost``, whatever the status.
- ProxyShell (CVE-2021-34473): the ``autodiscover.json`` path-confusion request of nuclei's
  ``CVE-2021-34473.yaml``; vulnerable if the answer shows an OWA or MAPI back end reached
  (``OwaADUserNotFoundException``, ``Exchange MAPI/HTTP Connectivity Endpoint``).
- ProxyNotShell (CVE-2022-41040): the EOMTv2 rule check: a URL with both ``autodiscover`` and
  ``powershell`` is aborted by the rule while the same URL without ``powershell`` answers. The SSRF
  heuristic (nuclei PR 8595: 302 and no ``Protocol`` in the body) is unvalidated and reported as such.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from exwatch.record import ProbeEntry

# Every request the scanner sends carries this User-Agent so that a log hunt on the target can recognise
# (and exclude) the scanner's own attack-shaped requests (fingerprinting.md 4, scanner_practice.md 3).
USER_AGENT = "exwatch-scan/0.1 (+authorised exposure scan; https://github.com/exwatch)"

Outcome = Literal["vulnerable", "mitigated", "patched", "inconclusive"]
OUTCOMES: tuple[str, ...] = ("vulnerable", "mitigated", "patched", "inconclusive")
PROBE_WAVES: tuple[str, ...] = ("proxylogon", "proxyshell", "proxynotshell")

# Error classes that mean "the connection ended before a status line came back" after the request was
# sent: what an IIS AbortRequest looks like to a client (reset, TLS close or plain end of stream).
ABORT_ERRORS = frozenset({"reset", "eof", "protocol", "tls"})

PROXYLOGON_COOKIE = (
    "X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; "
    "X-BEResource=localhost/owa/auth/logon.aspx?~3;"
)
PROXYSHELL_PATH = (
    "/autodiscover/autodiscover.json?@test.com/owa/?&Email=autodiscover/autodiscover.json%3F@test.com"
)
PROXYSHELL_MARKERS = (
    "Microsoft.Exchange.Clients.Owa2.Server.Core.OwaADUserNotFoundException",
    "Exchange MAPI/HTTP Connectivity Endpoint",
)
PROXYNOTSHELL_PATH = (
    "/autodiscover/autodiscover.json?a@foo.var/owa/?&Email=autodiscover/autodiscover.json?a@foo.var"
    "&Protocol=XYZ&FooProtocol=Powershell"
)
# The control names autodiscover but neither powershell nor the '@' path confusion, so that no
# mitigation rule (EOMTv2's, or a ProxyShell one) aborts it on a reachable server.
PROXYNOTSHELL_CONTROL_PATH = "/autodiscover/autodiscover.json?exwatch=control"


@dataclass(frozen=True)
class ProbeRequest:
    """One HTTP request to send: method, path (with query), extra headers, body."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class ProbeResponse:
    """What came back: ``status`` None means the connection ended with no response (``error`` says how)."""

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None

    def header(self, name: str) -> str | None:
        """A header's value, name matched case-insensitively (HTTP/2 and some clients lower-case them)."""
        return self._by_lower_name.get(name.lower())

    @functools.cached_property
    def _by_lower_name(self) -> dict[str, str]:
        """Headers by lower-case name, the first spelling winning (computed once per response)."""
        out: dict[str, str] = {}
        for key, value in self.headers.items():
            out.setdefault(key.lower(), value)
        return out

    @property
    def answered(self) -> bool:
        """True when a complete status line came back."""
        return self.status is not None

    @property
    def aborted(self) -> bool:
        """True when the connection ended before a status line, in a way an AbortRequest rule produces."""
        return self.status is None and (self.error or "eof") in ABORT_ERRORS


@dataclass(frozen=True)
class ProbeOutcome:
    """The judgement of one wave's probe: outcome, why, and whether the probe is a validated one."""

    outcome: Outcome
    reason: str
    validated: bool = True

    def to_dict(self) -> ProbeEntry:
        """A JSON-ready form, as stored in observation records under ``probes``."""
        return {"outcome": self.outcome, "reason": self.reason, "validated": self.validated}


def _base_headers() -> dict[str, str]:
    return {"User-Agent": USER_AGENT, "Accept": "*/*"}


def probe_requests(wave: str) -> tuple[ProbeRequest, ProbeRequest]:
    """The (attack-shaped, control) requests of ``wave``; send the control first."""
    if wave == "proxylogon":
        attack = ProbeRequest("GET", "/owa/auth/x.js", {**_base_headers(), "Cookie": PROXYLOGON_COOKIE})
        control = ProbeRequest("GET", "/owa/auth/x.js", _base_headers())
        return attack, control
    if wave == "proxyshell":
        attack = ProbeRequest("GET", PROXYSHELL_PATH, _base_headers())
        control = ProbeRequest("GET", "/autodiscover/autodiscover.json", _base_headers())
        return attack, control
    if wave == "proxynotshell":
        attack = ProbeRequest("GET", PROXYNOTSHELL_PATH, _base_headers())
        control = ProbeRequest("GET", PROXYNOTSHELL_CONTROL_PATH, _base_headers())
        return attack, control
    raise ValueError(f"no behavioural probe for wave {wave!r}; known: {', '.join(PROBE_WAVES)}")


# The MAPI variant of the ProxyShell request (nuclei CVE-2021-34473.yaml), tried when the OWA variant is aborted.
PROXYSHELL_MAPI_REQUEST = ProbeRequest(
    "GET",
    "/autodiscover/autodiscover.json?@test.com/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@test.com",
    _base_headers(),
)


def _control_problem(control: ProbeResponse) -> ProbeOutcome | None:
    if not control.answered:
        return ProbeOutcome(
            "inconclusive",
            f"control request got no HTTP response ({control.error or 'no answer'}): the probe says nothing",
        )
    return None


def _attack_not_answered(wave: str, attack: ProbeResponse, control: ProbeResponse) -> ProbeOutcome | None:
    """Shared handling of an attack request that got no status line, or a proxy's 502 in its place."""
    if attack.aborted:
        return ProbeOutcome(
            "mitigated",
            f"{wave} probe aborted ({attack.error or 'eof'}) while the control answered {control.status}: "
            "an AbortRequest rule is in place",
        )
    if not attack.answered:
        return ProbeOutcome("inconclusive", f"{wave} probe got no response ({attack.error}); not an abort")
    # A reverse proxy in front of IIS can turn the abort into a 502 (mitigations.md 9).
    if attack.status == 502 and control.status != 502:
        return ProbeOutcome(
            "mitigated",
            f"{wave} probe answered 502 while the control answered {control.status}: an abort seen through a proxy",
        )
    return None


def _text(resp: ProbeResponse) -> str:
    return resp.body.decode("utf-8", "replace")


def judge_probe(wave: str, attack: ProbeResponse, control: ProbeResponse) -> ProbeOutcome:
    """Judge one wave's probe from the attack-shaped response and the control response."""
    if wave not in PROBE_WAVES:
        raise ValueError(f"no behavioural probe for wave {wave!r}; known: {', '.join(PROBE_WAVES)}")
    problem = _control_problem(control)
    if problem is not None:
        return problem
    if wave == "proxylogon":
        target = attack.header("X-CalculatedBETarget")
        if attack.answered and target is not None and "localhost" in target.lower():
            return ProbeOutcome(
                "vulnerable",
                f"ProxyLogon SSRF: the front end computed back end {target!r} from the cookie "
                f"(status {attack.status})",
            )
        decided = _attack_not_answered(wave, attack, control)
        if decided is not None:
            return decided
        return ProbeOutcome(
            "patched",
            f"ProxyLogon probe answered {attack.status} without a localhost back-end target: not vulnerable by this path",
        )
    if wave == "proxyshell":
        if attack.answered:
            seen = " ".join(
                [_text(attack), attack.header("Location") or "", attack.header("X-OWA-Error") or ""]
            )
            for marker in PROXYSHELL_MARKERS:
                if marker in seen:
                    return ProbeOutcome(
                        "vulnerable",
                        f"ProxyShell path confusion reached a back end ({marker.rsplit('.', 1)[-1]}, "
                        f"status {attack.status})",
                    )
        decided = _attack_not_answered(wave, attack, control)
        if decided is not None:
            return decided
        return ProbeOutcome(
            "patched",
            f"ProxyShell probe answered {attack.status} with no back-end marker: not vulnerable by this path",
        )
    # proxynotshell
    decided = _attack_not_answered(wave, attack, control)
    if decided is not None:
        return decided
    if attack.status == 302 and "Protocol" not in _text(attack):
        return ProbeOutcome(
            "vulnerable",
            "ProxyNotShell SSRF heuristic matched (302, no 'Protocol' in the body; unvalidated probe) "
            "and no EOMTv2 rule aborted the request",
            validated=False,
        )
    return ProbeOutcome(
        "patched",
        f"ProxyNotShell probe answered {attack.status}: no EOMTv2 rule, no SSRF sign (unvalidated probe)",
        validated=False,
    )
