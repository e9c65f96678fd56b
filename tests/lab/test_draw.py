"""Drawn fleets, spec files and the ground truth functions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from exwatch.errors import InputError
from exwatch.lab import ServerSpec, draw_fleet, load_specs, truth, truth_passive


def test_draw_is_reproducible_and_march_2021_shaped() -> None:
    a = draw_fleet(1000, seed=3)
    assert a == draw_fleet(1000, seed=3)
    assert a != draw_fleet(1000, seed=4)
    exchange = [s for s in a if s.is_exchange]
    assert 700 <= len(exchange) <= 880
    cus = Counter(".".join(s.build.split(".")[:3]) for s in exchange if s.build)
    main = sum(
        cus[c]
        for c in ("15.0.1497", "15.1.2044", "15.1.2106", "15.1.2176", "15.2.595", "15.2.659", "15.2.721")
    )
    assert main / len(exchange) > 0.6  # 2013 CU23, 2016 CU17-19, 2019 CU6-8 dominate
    assert any(s.build.startswith("14.3.") for s in exchange if s.build)  # some 2010
    states = Counter(truth(s)["proxylogon"] for s in exchange)
    assert states["vulnerable"] > 100 and states["patched"] > 100 and states["mitigated"] > 10
    assert all(truth(s)["proxyshell"] in ("vulnerable", "mitigated", "not_affected") for s in exchange)
    addresses = [s.address for s in a]
    assert len(set(addresses)) == 1000 and addresses[0] == "127.1.0.1"
    assert not any(addr.endswith((".0", ".255")) for addr in addresses)


def test_only_exchange_and_shares() -> None:
    specs = draw_fleet(200, seed=1, only_exchange=True, exchange_variants={"adfs": 1.0})
    assert {s.variant for s in specs} == {"adfs"}
    hostile = draw_fleet(100, seed=1, other_share=1.0, other_variants={"tarpit": 1, "garbage": 1})
    assert {s.variant for s in hostile} == {"tarpit", "garbage"}
    http = draw_fleet(100, seed=1, http_share=1.0, https_port=1443, http_port=1080)
    assert {(s.scheme, s.port) for s in http if s.variant != "bad_tls"} == {("http", 1080)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_address": "10.0.0.1"}, "loopback"),
        ({"other_share": 1.5}, "between 0 and 1"),
        ({"exchange_variants": {"nope": 1.0}}, "unknown variant"),
    ],
)
def test_draw_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        draw_fleet(5, 1, **kwargs)  # type: ignore[arg-type]


def test_truth_passive_differs_where_a_passive_scan_cannot_see() -> None:
    mitigated = ServerSpec(
        "a", "127.10.4.1", 1, "https", "Exchange 2016", "15.1.2176.2", ["proxylogon"], "standard"
    )
    assert truth(mitigated)["proxylogon"] == "mitigated"
    assert truth_passive(mitigated)["proxylogon"] == "vulnerable"
    # behind the stripping proxy only the CU is visible: 2016 CU19 had a fixing SU, so "unknown"
    hidden = ServerSpec("b", "127.10.4.2", 1, "https", "Exchange 2016", "15.1.2176.9", [], "proxy_strip")
    assert truth(hidden)["proxylogon"] == "patched"
    assert truth_passive(hidden)["proxylogon"] == "unknown"
    for variant, state in (
        ("iis", "not_exchange"),
        ("redirect_loop", "not_exchange"),
        ("refuse", "unreachable"),
        ("tarpit", "unreachable"),
    ):
        other = ServerSpec("c", "127.10.4.3", 1, "https", "", None, [], variant)
        assert set(truth(other).values()) == set(truth_passive(other).values()) == {state}


def test_load_specs_round_trip_and_errors(tmp_path: Path) -> None:
    specs = draw_fleet(5, seed=2, base_address="127.10.5.1")
    path = tmp_path / "specs.json"
    path.write_text(json.dumps([s.to_dict() for s in specs]))
    assert load_specs(path) == specs
    cases = {
        "not json": "not JSON",
        "{}": "expected a JSON list",
        '[{"name": "a", "address": "127.0.0.1"}]': "missing 'port'",
        '[{"name": "a", "address": "8.8.8.8", "port": 443}]': "loopback",
        '[{"name": "a", "address": "127.0.0.1", "port": 443, "variant": "weird"}]': "unknown variant",
        '[{"name": "a", "address": "127.0.0.1", "port": 443, "variant": "standard"}]': "needs a build",
        '[{"name": "a", "address": "127.0.0.1", "port": 443, "color": 1}]': "unknown key 'color'",
        '[{"name": "a", "address": "127.0.0.1", "port": 443, "build": "15.1.x"}]': "server 'a'",
        '[{"name": "a", "address": "127.0.0.1", "port": 443, "build": "15.1.2176"}]': "CU only",
        '[{"name": "a", "address": "127.0.0.1", "port": 443, "variant": "iis"},'
        ' {"name": "a", "address": "127.0.0.2", "port": 443, "variant": "iis"}]': "duplicate server name",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            load_specs(path)
    path.write_text('[{"name": "a", "address": "127.0.0.1", "port": 443, "build": "15.01.2176.009"}]')
    (spec,) = load_specs(path)
    assert (spec.build, spec.product, spec.variant) == ("15.1.2176.9", "Exchange 2016", "standard")
    with pytest.raises(InputError, match="cannot read"):
        load_specs(tmp_path / "missing.json")


def test_public_api_is_pinned() -> None:
    import exwatch.lab

    assert exwatch.lab.__all__ == sorted(exwatch.lab.__all__)
    assert set(exwatch.lab.__all__) >= {
        "LabFleet",
        "ServerSpec",
        "draw_fleet",
        "run_fleet_in_thread",
        "truth",
        "truth_passive",
        "VARIANTS",
    }
