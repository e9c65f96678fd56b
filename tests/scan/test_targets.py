"""Target parsing, streaming expansion, shuffling and exclusions (pure), with property tests."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exwatch.errors import InputError
from exwatch.scan.targets import (
    Exclusions,
    Port,
    Target,
    TargetError,
    TargetSet,
    _permuted,
    connect_allowed,
    expand,
    parse_ports,
    parse_spec,
    window_shuffle,
)

PORTS = parse_ports("443,80")


def _keys(text: str, ports: tuple[Port, ...] = PORTS) -> list[str]:
    return [t.key for t in expand([parse_spec(text)], ports)]


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("192.0.2.7", ["https://192.0.2.7:443", "http://192.0.2.7:80"]),
        (
            "192.0.2.0/31",
            ["https://192.0.2.0:443", "http://192.0.2.0:80", "https://192.0.2.1:443", "http://192.0.2.1:80"],
        ),
        (
            "192.0.2.5/31",
            ["https://192.0.2.4:443", "http://192.0.2.4:80", "https://192.0.2.5:443", "http://192.0.2.5:80"],
        ),
        (
            "192.0.2.1-192.0.2.2",
            ["https://192.0.2.1:443", "http://192.0.2.1:80", "https://192.0.2.2:443", "http://192.0.2.2:80"],
        ),
        (
            "192.0.2.9-10",
            [
                "https://192.0.2.9:443",
                "http://192.0.2.9:80",
                "https://192.0.2.10:443",
                "http://192.0.2.10:80",
            ],
        ),
        ("mail.Contoso.example", ["https://mail.contoso.example:443", "http://mail.contoso.example:80"]),
        ("https://mail.contoso.example:8443/owa/", ["https://mail.contoso.example:8443"]),
        ("http://192.0.2.3", ["http://192.0.2.3:80"]),
        ("https://[2001:db8::1]/", ["https://[2001:db8::1]:443"]),
        ("2001:db8::2", ["https://[2001:db8::2]:443", "http://[2001:db8::2]:80"]),
    ],
)
def test_parse_and_expand(text: str, keys: list[str]) -> None:
    assert _keys(text) == keys


def test_tags_and_comments() -> None:
    spec = parse_spec("192.0.2.0/30 org=ACME site=paris   # the Paris office")
    assert spec.tags == (("org", "ACME"), ("site", "paris"))
    assert {t.tags for t in expand([spec], PORTS)} == {(("org", "ACME"), ("site", "paris"))}
    names = [t.name for t in expand([parse_spec("mail.example.org")], PORTS)]
    assert names == ["mail.example.org", "mail.example.org"]
    assert [t.name for t in expand([parse_spec("192.0.2.1")], PORTS)] == [None, None]


@pytest.mark.parametrize(
    "bad",
    [
        "300.1.1.1",
        "192.0.2.0/33",
        "192.0.2.9-192.0.2.1",
        "192.0.2.1-300",
        "ftp://host/",
        "https://",
        "bad_name!",
        "a b",
        "192.0.2.1 notatag",
        "-lead.example",
    ],
)
def test_malformed(bad: str) -> None:
    with pytest.raises(TargetError):
        parse_spec(bad)


def test_ports() -> None:
    assert parse_ports("443,80") == (Port(443, "https"), Port(80, "http"))
    assert parse_ports("8443/https, 8080") == (Port(8443, "https"), Port(8080, "http"))
    for bad in ("", "0", "70000", "443/ftp", "x"):
        with pytest.raises(InputError):
            parse_ports(bad)


def test_file_with_bad_lines_reports_line_numbers(tmp_path: Path) -> None:
    f = tmp_path / "targets.txt"
    f.write_text("# fleet\n192.0.2.1 org=A\n\nnot an address!\n192.0.2.2\n999.1.1.1\n", encoding="utf-8")
    tset = TargetSet((str(f),), (), parse_ports("443"))
    total, problems = tset.check(yes_large=False)
    assert total == 2
    assert [(p.line, p.source) for p in problems] == [(4, str(f)), (6, str(f))]
    assert "not an address" in problems[0].message or "unexpected" in problems[0].message
    assert [t.key for t in tset] == ["https://192.0.2.1:443", "https://192.0.2.2:443"]


@pytest.mark.parametrize("content", [b"\x00\x01\x02binary", b"\xff\xfe\xfa\xfb" * 100, bytes(range(256))])
def test_non_text_file(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "targets.bin"
    f.write_bytes(content)
    with pytest.raises(InputError, match="not a text file|not UTF-8"):
        TargetSet((), (f,)).check(False)


def test_manifest_detected_by_content(tmp_path: Path) -> None:
    f = tmp_path / "fleet.txt"  # no .json suffix: detected by what it holds
    f.write_text(
        '{"ca_cert": null, "servers": [{"name": "ex1", "address": "127.20.0.5", "port": 18443, "scheme": "https"},'
        ' {"name": "ex2", "address": "127.20.0.6", "port": 18080, "scheme": "http"}]}',
        encoding="utf-8",
    )
    targets = list(TargetSet((str(f),), (), PORTS))
    assert [t.key for t in targets] == ["https://127.20.0.5:18443", "http://127.20.0.6:18080"]
    assert targets[0].tags == (("lab", "ex1"),) and targets[0].name is None


def test_manifest_read_again_when_it_changes(tmp_path: Path) -> None:
    """The specs of a manifest are parsed once per scan (counted, then streamed): a rewritten manifest
    (another size or modification time) is read afresh, never served from the earlier parse."""
    import os

    f = tmp_path / "manifest.json"

    def write(addresses: list[str], mtime_ns: int) -> None:
        servers = ", ".join(f'{{"name": "ex", "address": "{a}", "port": 443}}' for a in addresses)
        f.write_text('{"servers": [' + servers + "]}", encoding="utf-8")
        os.utime(f, ns=(mtime_ns, mtime_ns))

    write(["127.20.0.5"], 1_000_000_000)
    tset = TargetSet((), (f,), parse_ports("443"))
    assert tset.check(False)[0] == 1
    assert [t.key for t in tset] == ["https://127.20.0.5:443"]
    write(["127.20.0.7"], 1_000_000_000)  # same size, same time: only the cache could tell them apart
    write(["127.20.0.8"], 2_000_000_000)
    assert [t.key for t in TargetSet((), (f,), parse_ports("443"))] == ["https://127.20.0.8:443"]
    write(["127.20.0.8", "127.20.0.9"], 2_000_000_000)  # same time, another size
    assert [t.key for t in TargetSet((), (f,), parse_ports("443"))] == [
        "https://127.20.0.8:443",
        "https://127.20.0.9:443",
    ]


def test_exclusions_and_connect_check(tmp_path: Path) -> None:
    f = tmp_path / "optout.txt"
    f.write_text("198.51.100.0/24\nmail.optout.example\n", encoding="utf-8")
    ex = Exclusions(["192.0.2.10-192.0.2.20"], [f])
    assert ex.address_excluded("192.0.2.10") and ex.address_excluded("192.0.2.20")
    assert not ex.address_excluded("192.0.2.9") and not ex.address_excluded("192.0.2.21")
    assert ex.address_excluded("198.51.100.77")
    assert ex.address_excluded("not-an-address")  # never connect to something that is not an address
    target = Target("192.0.2.1", 443, "https", "192.0.2.1")
    assert connect_allowed(target, "192.0.2.1", ex)
    assert not connect_allowed(target, "192.0.2.2", ex)  # an address target connects only to itself
    named = Target("mail.example.org", 443, "https", "mail.example.org", name="mail.example.org")
    assert connect_allowed(named, "203.0.113.5", ex)
    assert not connect_allowed(named, "198.51.100.5", ex)  # resolved into an exclusion
    optout = Target("mail.optout.example", 443, "https", "mail.optout.example", name="mail.optout.example")
    assert not connect_allowed(optout, "203.0.113.5", ex)


def test_exclusions_reread_when_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "optout.txt"
    f.write_text("192.0.2.1\n", encoding="utf-8")
    ex = Exclusions([], [f], recheck=0.0)
    assert not ex.address_excluded("192.0.2.2")
    f.write_text("192.0.2.1\n192.0.2.2\n", encoding="utf-8")
    import os

    os.utime(f, (1, 1))  # a different mtime, whatever the clock's resolution
    ex.refresh()
    assert ex.address_excluded("192.0.2.2")


# -- properties ---------------------------------------------------------------------------------


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_parse_spec_never_crashes(text: str) -> None:
    try:
        spec = parse_spec(text)
    except TargetError:
        return
    assert spec.size >= 1


@given(st.integers(0, 2**32 - 1), st.integers(16, 32))
@settings(max_examples=200, deadline=None)
def test_cidr_expansion_matches_ipaddress(value: int, prefix: int) -> None:
    net = ipaddress.ip_network(f"{ipaddress.IPv4Address(value)}/{prefix}", strict=False)
    if net.num_addresses > 4096:
        net = ipaddress.ip_network(f"{net.network_address}/20")
    hosts = [t.host for t in expand([parse_spec(str(net))], (Port(443, "https"),))]
    assert hosts == [str(a) for a in net]


@given(st.integers(1, 5000), st.integers(0, 2**31))
@settings(max_examples=100, deadline=None)
def test_permutation_visits_each_once(n: int, seed: int) -> None:
    values = list(_permuted(1000, 1000 + n - 1, random.Random(seed)))
    assert sorted(values) == list(range(1000, 1000 + n))


@given(st.lists(st.integers(0, 10_000), max_size=500), st.integers(1, 64), st.integers(0, 99))
@settings(max_examples=100, deadline=None)
def test_window_shuffle_is_a_permutation(values: list[int], window: int, seed: int) -> None:
    items = [Target(str(v), 443, "https", str(v)) for v in values]
    out = list(window_shuffle(items, random.Random(seed), window))
    assert sorted(t.host for t in out) == sorted(t.host for t in items)


@given(
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 64)), max_size=20), st.integers(0, 2**16 + 80)
)
@settings(max_examples=200, deadline=None)
def test_exclusions_match_brute_force(ranges: list[tuple[int, int]], probe: int) -> None:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    items = [f"{ipaddress.IPv4Address(base + a)}-{ipaddress.IPv4Address(base + a + w)}" for a, w in ranges]
    ex = Exclusions(items)
    expected = any(a <= probe <= a + w for a, w in ranges)
    assert ex.address_excluded(str(ipaddress.IPv4Address(base + probe))) == expected
