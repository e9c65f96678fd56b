"""Fuzzing the parsers that take hostile text: web.config files, build strings, scan targets.

``make fuzz`` runs each test with the ``fuzz`` profile (10,000 examples); inside ``make test`` each runs
a few dozen.  The properties: a parser either returns a value that holds up (re-parses to itself,
stays inside what was asked) or raises the project's one-line error, never anything else.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exwatch.errors import ExwatchError, InputError
from exwatch.kb import verdict
from exwatch.kb._build import parse_build
from exwatch.mitigate.edit import plan_apply, plan_rollback
from exwatch.mitigate.rules import rules_for
from exwatch.mitigate.webconfig import child_override, evaluate, load
from exwatch.mitigate.xmltext import decode_bytes, encode_text
from exwatch.scan.targets import parse_spec

QUICK = 50
EXAMPLES = settings().max_examples if settings().max_examples >= 10_000 else QUICK
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
RULES = rules_for("all")


def one_line(exc: ExwatchError) -> None:
    assert "\n" not in str(exc) and str(exc)


# --- web.config ------------------------------------------------------------------------------------

PIECES = [
    "<configuration>", "</configuration>", "<system.webServer>", "</system.webServer>", "<rewrite>",
    "</rewrite>", "<rules>", "</rules>", "<rules/>", "<clear/>", '<remove name="PowerShell - inbound"/>',
    '<rule name="PowerShell - inbound" stopProcessing="true">', "</rule>", '<match url=".*"/>',
    '<action type="AbortRequest"/>', "<conditions>", "</conditions>",
    '<add input="{UrlDecode:{REQUEST_URI}}" pattern="(?=.*autodiscover)(?=.*powershell)"/>',
    '<location path="Default Web Site" inheritInChildApplications="false">', "</location>",
    "<!-- c -->", "<!--", "-->", "<![CDATA[x]]>", "<?xml version='1.0'?>", "<!DOCTYPE x>", "&amp;", "&bogus;",
    "\ufeff", "\r\n", "\n", "\t", " ", "<", ">", '"', "'", "=", "a", "\x00", "\udcff", "é",
]  # fmt: skip


@st.composite
def config_bytes(draw: st.DrawFn) -> bytes:
    """web.config-shaped bytes: pieces of real markup shuffled with noise, in one of the encodings IIS reads."""
    parts = draw(st.lists(st.sampled_from(PIECES) | st.text(max_size=6), max_size=40))
    text = "".join(parts)
    if draw(st.booleans()):
        text = (
            "<configuration><system.webServer><rewrite><rules>"
            + text
            + "</rules></rewrite></system.webServer></configuration>"
        )
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "raw"]))
    if encoding == "raw":
        return draw(st.binary(max_size=64)) + text.encode("utf-8", "surrogatepass")
    return text.encode(encoding, "replace")


@FUZZ
@given(config_bytes())
def test_web_config_parse_apply_rollback(data: bytes) -> None:
    """Decode, parse, evaluate, apply, rollback: each step returns or raises InputError; a file that
    applies cleanly rolls back to its exact bytes."""
    try:
        text, encoded = decode_bytes(data, "fuzz.config")
        root = load(text, "fuzz.config")
        statuses = evaluate(root, RULES)
        assert {s.status for s in statuses} <= {"ok", "missing", "invalid"}
        child_override(text, "fuzz.config")
        applied = plan_apply(text, RULES, label="fuzz.config")
        new = encode_text(applied.text, encoded, "fuzz.config")
    except InputError as exc:
        one_line(exc)
        return
    # what apply wrote must parse, hold every rule, and roll back to the original bytes
    again_text, again_enc = decode_bytes(new, "fuzz.config")
    assert all(s.status == "ok" for s in evaluate(load(again_text, "fuzz.config"), RULES))
    if applied.added and not applied.replaced:
        back = plan_rollback(again_text, RULES, label="fuzz.config")
        assert encode_text(back.text, again_enc, "fuzz.config") == data


# --- build strings ---------------------------------------------------------------------------------

build_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.integers(min_value=-5, max_value=10**12).map(str) | st.text("0123456789", min_size=1, max_size=25),
             min_size=1, max_size=6).map(".".join),
    st.tuples(st.sampled_from(["15", "14", "8", "15.0", "15.1", "15.2", "15.02"]),
              st.integers(0, 99999), st.integers(0, 9999)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}"),
    st.text(alphabet="0123456789. VvCU-_/\t\n\u0660\u06f5\uff11", max_size=30),
)  # fmt: skip


@FUZZ
@given(build_text)
def test_build_strings(text: str) -> None:
    """A build parses to four small integers that print and re-parse to the same build, or a BuildError;
    the verdict of any parsed build names every wave."""
    try:
        build = parse_build(text)
    except InputError as exc:
        one_line(exc)
        return
    assert parse_build(str(build)) == build
    assert all(0 <= p < 2**31 for p in (build.major, build.minor, build.build, build.revision or 0))
    try:
        doc = verdict(str(build)).to_dict()
    except InputError as exc:
        one_line(exc)
        return
    assert set(doc["waves"]) >= {"proxylogon", "proxyshell", "proxynotshell"}


# --- scan targets ----------------------------------------------------------------------------------

octet = st.integers(0, 300).map(str)
ipv4 = st.tuples(octet, octet, octet, octet).map(".".join)
ipv6 = st.ip_addresses(v=6).map(str)
target_text = st.one_of(
    ipv4,
    ipv6,
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.tuples(ipv4, st.integers(-1, 40)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(ipv6, st.integers(-1, 140)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(ipv4, ipv4).map(lambda t: f"{t[0]}-{t[1]}"),
    st.tuples(ipv4, st.integers(0, 300)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.tuples(st.sampled_from(["http", "https", "ftp", ""]), ipv4 | ipv6.map(lambda a: f"[{a}]"),
              st.integers(-1, 70000)).map(lambda t: f"{t[0]}://{t[1]}:{t[2]}/owa"),
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}(:\d{1,6})?", fullmatch=True),
    st.text(max_size=40),
)  # fmt: skip


@FUZZ
@given(target_text, st.lists(st.from_regex(r"[a-z]{1,8}=[a-z0-9]{0,8}", fullmatch=True), max_size=3))
def test_targets(text: str, tags: list[str]) -> None:
    """A target parses into an address range that is ordered and of one IP version, a name, or a port
    in range; or it raises the one-line TargetError."""
    line = " ".join([text, *tags])
    try:
        spec = parse_spec(line)
    except InputError as exc:
        one_line(exc)
        return
    if spec.first is not None and spec.last is not None:
        assert spec.first <= spec.last
        first = ipaddress.ip_address(spec.first) if spec.version == 4 else ipaddress.IPv6Address(spec.first)
        assert first.version == spec.version
    if spec.port is not None:
        assert 0 < spec.port < 65536
    assert len(spec.tags) == len(tags)
