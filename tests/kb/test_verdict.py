"""Table tests: expected per-wave states for real builds (builds.md section 5), CVE detail and fixes."""

from __future__ import annotations

import pytest

from exwatch import kb
from exwatch.errors import BuildError
from exwatch.kb import State

V, P, N, U = State.VULNERABLE, State.PATCHED, State.NOT_AFFECTED, State.UNKNOWN

# build -> (ProxyLogon, ProxyShell, ProxyNotShell)
CASES: list[tuple[str, tuple[State, State, State]]] = [
    # Exchange 2010: only CVE-2021-26857 applies, fixed by RU32 14.3.513.0.
    ("14.3.509.0", (V, N, N)),
    ("14.3.513.0", (P, N, N)),
    ("14.03.0513.000", (P, N, N)),
    ("14.3.513", (P, N, N)),
    ("14.3.496.0", (V, N, N)),
    ("14.1.218.15", (V, N, N)),
    # Exchange 2013
    ("15.0.516.32", (V, V, V)),
    ("15.0.847.32", (V, V, V)),
    ("15.0.847.64", (P, V, V)),
    ("15.0.1076.9", (V, V, V)),
    ("15.0.1395.4", (V, V, V)),
    ("15.0.1395.12", (P, V, V)),
    ("15.0.1473.6", (P, V, V)),
    ("15.0.1497.2", (V, V, V)),
    ("15.0.1497.12", (P, V, V)),
    ("15.0.1497.15", (P, V, V)),
    ("15.0.1497.18", (P, P, V)),
    ("15.0.1497.42", (P, P, V)),
    ("15.0.1497.44", (P, P, P)),
    ("15.0.1497.48", (P, P, P)),
    ("15.0.1497", (U, U, U)),
    ("15.0.1395", (U, V, V)),
    ("15.0.1104", (V, V, V)),
    # Exchange 2016: every CU that received the March 2021 SU, with and without it.
    ("15.1.225.42", (V, V, V)),
    ("15.1.1261.35", (V, V, V)),
    ("15.1.1415.2", (V, V, V)),
    ("15.1.1415.10", (P, V, V)),
    ("15.1.1466.3", (V, V, V)),
    ("15.1.1466.16", (P, V, V)),
    ("15.1.1531.3", (V, V, V)),
    ("15.1.1531.12", (P, V, V)),
    ("15.1.1591.10", (V, V, V)),
    ("15.1.1591.18", (P, V, V)),
    ("15.1.1713.5", (V, V, V)),
    ("15.1.1713.10", (P, V, V)),
    ("15.1.1779.8", (P, V, V)),
    ("15.1.1847.12", (P, V, V)),
    ("15.1.1913.12", (P, V, V)),
    ("15.1.1979.8", (P, V, V)),
    ("15.1.2044.13", (P, V, V)),
    ("15.1.2106.2", (V, V, V)),
    ("15.1.2106.13", (P, V, V)),
    ("15.1.2176.2", (V, V, V)),
    ("15.1.2176.9", (P, V, V)),
    ("15.1.2176.12", (P, V, V)),
    ("15.1.2176.14", (P, P, V)),
    # The CU20 boundary: a later CU's RTM is above CU19's SUs yet lacks the April fixes.
    ("15.1.2242.4", (P, V, V)),
    ("15.1.2242.8", (P, V, V)),
    ("15.1.2242.10", (P, P, V)),
    ("15.1.2308.8", (P, P, V)),
    ("15.1.2375.7", (P, P, V)),
    ("15.1.2375.37", (P, P, P)),
    ("15.1.2507.6", (P, P, V)),
    ("15.1.2507.16", (P, P, P)),
    ("15.1.2507.72", (P, P, P)),
    # Spellings of the same build.
    ("15.01.2176.009", (P, V, V)),
    ("Version 15.1 (Build 2176.9)", (P, V, V)),
    ("Exchange/15.01.2176.002", (V, V, V)),
    # HealthChecker's numbers for CU8/CU9 Mar21SU (builds.md section 7).
    ("15.1.1415.8", (P, V, V)),
    ("15.1.1466.13", (P, V, V)),
    # CU-only (OWA logon page paths).
    ("15.1.1261", (V, V, V)),
    ("15.1.2176", (U, U, V)),
    ("15.1.2242", (P, U, V)),
    ("15.1.2308", (P, P, V)),
    ("15.1.2507", (P, P, U)),
    # Exchange 2019: every CU that received the March 2021 SU.
    ("15.2.221.12", (V, V, V)),
    ("15.2.221.18", (P, V, V)),
    ("15.2.330.11", (P, V, V)),
    ("15.2.397.11", (P, V, V)),
    ("15.2.464.15", (P, V, V)),
    ("15.2.529.13", (P, V, V)),
    ("15.2.595.8", (P, V, V)),
    ("15.2.659.12", (P, V, V)),
    ("15.2.721.2", (V, V, V)),
    ("15.2.721.13", (P, V, V)),
    ("15.2.792.3", (V, V, V)),
    ("15.2.792.10", (P, V, V)),
    ("15.2.792.13", (P, V, V)),
    ("15.2.792.15", (P, P, V)),
    # The CU9 boundary, and OWA's own spelling of CU9.
    ("15.2.858.5", (P, V, V)),
    ("15.2.858.2", (P, V, V)),
    ("Exchange/15.02.0858.002", (P, V, V)),
    ("15.2.858.10", (P, V, V)),
    ("15.2.858.12", (P, P, V)),
    ("15.2.922.7", (P, P, V)),
    ("15.2.986.5", (P, P, V)),
    ("15.2.986.36", (P, P, P)),
    ("15.2.1118.7", (P, P, V)),
    ("15.2.1118.20", (P, P, P)),
    ("15.2.1258.12", (P, P, P)),
    ("15.2.1748.10", (P, P, P)),
    ("15.2.721", (U, V, V)),
    ("15.2.792", (U, U, V)),
    ("15.2.858", (P, U, V)),
    ("15.2.986", (P, P, U)),
    ("15.2.1258", (P, P, P)),
    # Exchange SE post-dates all three waves.
    ("15.2.2562.17", (P, P, P)),
    ("15.2.2562.46", (P, P, P)),
    ("15.2.2562", (P, P, P)),
    # Builds not in the catalogue.
    ("15.1.2176.10", (P, V, V)),  # unpublished revision between .9 and .12
    ("15.1.2176.1", (V, V, V)),  # below the CU's release build
    ("15.1.2200.1", (U, V, V)),  # unpublished CU between CU19 and CU20
    ("15.1.2300.1", (P, U, V)),  # unpublished CU between CU20 and CU21
    ("15.1.2600.1", (P, P, U)),  # beyond 2016 CU23, the last CU to get Nov22SU
    ("15.2.1800.1", (P, P, P)),  # a 2019 CU after CU15
    ("16.0.100.1", (U, U, U)),  # not an Exchange version
    ("8.3.83.6", (N, N, N)),  # Exchange 2007 SP3: not among the affected products
]


@pytest.mark.parametrize(("build", "expected"), CASES, ids=[c[0] for c in CASES])
def test_wave_states(build: str, expected: tuple[State, State, State]) -> None:
    v = kb.verdict(build)
    got = tuple(v.waves[w].state for w in ("proxylogon", "proxyshell", "proxynotshell"))
    assert got == expected, {w: (v.waves[w].state, v.waves[w].reason) for w in v.waves}
    for w in v.waves.values():
        assert w.reason.endswith(".") and len(w.reason) > 30
        assert w.fix_text


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60


def test_cve_states_of_cu20_rtm() -> None:
    v = kb.verdict("15.1.2242.4")
    assert v.product == "Exchange 2016" and v.cu == "CU20"
    assert v.waves["proxylogon"].cves == dict.fromkeys(kb.wave("proxylogon").cves, P)
    assert v.waves["proxyshell"].cves == {"CVE-2021-34473": V, "CVE-2021-34523": V, "CVE-2021-31207": V}
    fix = v.waves["proxyshell"].fix
    assert fix.security_update == ("15.1.2242.8", "15.1.2242.10")
    assert fix.cumulative_update == "15.1.2308.8"  # CU21: the first CU that contains Apr21SU and May21SU
    assert "15.1.2242.10" in fix.text


def test_partial_proxyshell_fix_is_per_cve() -> None:
    v = kb.verdict("15.1.2242.8")  # CU20 Apr21SU: May21SU's CVE-2021-31207 still open
    assert v.waves["proxyshell"].cves == {"CVE-2021-34473": P, "CVE-2021-34523": P, "CVE-2021-31207": V}
    assert v.waves["proxyshell"].fix.security_update == ("15.1.2242.10",)


def test_exchange_2010_only_26857() -> None:
    v = kb.verdict("14.3.509.0")
    assert v.waves["proxylogon"].cves == {
        "CVE-2021-26855": N,
        "CVE-2021-26857": V,
        "CVE-2021-26858": N,
        "CVE-2021-27065": N,
    }
    assert v.waves["proxylogon"].fix.security_update == ("14.3.513.0",)
    assert v.support == "out_of_support"


def test_cu_only_states_both_possibilities() -> None:
    w = kb.verdict("15.1.2176").waves["proxylogon"]
    assert w.state is U
    assert "15.1.2176.9 or later" in w.reason and "vulnerable below" in w.reason
    assert w.fix.security_update == ("15.1.2176.9",)
    assert w.fix.cumulative_update == "15.1.2242.4"


def test_cu_without_su_needs_cu_update() -> None:
    w = kb.verdict("15.1.1261.35").waves["proxylogon"]
    assert w.fix.security_update == ()
    assert w.fix.cumulative_update == "15.1.2242.4"  # 2016 CU20
    assert "CU8 to CU19" in w.reason


def test_no_later_cu_contains_fix() -> None:
    w = kb.verdict("15.0.1395.4").waves["proxynotshell"]  # 2013 CU21: only CU23 got Nov22SU
    assert w.fix.cumulative_update is None
    assert "CU23" in w.fix.text and "15.0.1497.44" in w.fix.text


def test_owa_spelling_of_cu9() -> None:
    v = kb.verdict("15.2.858.2")
    assert v.cu == "CU9" and str(v.same_as) == "15.2.858.5"
    assert "15.2.858.2" in v.waves["proxyshell"].reason
    assert kb.cu_name(kb.parse_build("15.2.858.2")) == "CU9"


def test_unpublished_revision_reason() -> None:
    v = kb.verdict("15.1.2176.10")
    assert not v.known
    assert "nearest lower known build 15.1.2176.9" in v.note
    assert (
        "not in the catalogue, judged as its nearest lower known build 15.1.2176.9"
        in v.waves["proxyshell"].reason
    )
    below = kb.verdict("15.1.2176.1").waves["proxylogon"].reason
    assert "below the CU's release build 15.1.2176.2" in below


def test_to_dict_returns_independent_copies() -> None:
    v = kb.verdict("15.1.2176.2")
    d = v.to_dict()
    d["waves"]["proxylogon"]["cves"]["CVE-2021-26855"] = "patched"
    d["waves"]["proxylogon"]["fix"]["security_update"].append("1.2.3.4")
    d["catalogue_entry"]["fixes"].append("x")
    again = v.to_dict()
    assert again["waves"]["proxylogon"]["cves"]["CVE-2021-26855"] == "vulnerable"
    assert again["waves"]["proxylogon"]["fix"]["security_update"] == ["15.1.2176.9"]
    assert again["catalogue_entry"]["fixes"] == []


def test_se_and_support() -> None:
    v = kb.verdict("15.2.2562.17")
    assert v.product == "Exchange SE" and v.support == "supported"
    assert kb.verdict("15.2.1748.10").product == "Exchange 2019"


def test_verdict_to_dict_contract() -> None:
    d = kb.verdict("15.1.2176.2").to_dict()
    assert d["build"] == "15.1.2176.2" and d["product"] == "Exchange 2016" and d["cu"] == "CU19"
    assert d["support"] in ("supported", "out_of_support")
    assert set(d["waves"]) == {"proxylogon", "proxyshell", "proxynotshell"}
    pl = d["waves"]["proxylogon"]
    assert pl["state"] == "vulnerable"
    assert set(pl["cves"]) == set(kb.wave("proxylogon").cves)
    assert pl["fix"] == {
        "security_update": ["15.1.2176.9"],
        "cumulative_update": "15.1.2242.4",
        "text": pl["fix"]["text"],
    }


def test_verdict_accepts_build_objects_and_caches() -> None:
    b = kb.parse_build("15.1.2176.2")
    assert kb.verdict(b) is kb.verdict("15.1.2176.2")


def test_bad_build_raises() -> None:
    with pytest.raises(BuildError):
        kb.verdict("not a build")


def test_waves_data() -> None:
    assert [w.id for w in kb.WAVES] == ["proxylogon", "proxyshell", "proxynotshell"]
    pl = kb.wave("proxylogon")
    assert pl.cves == ("CVE-2021-26855", "CVE-2021-26857", "CVE-2021-26858", "CVE-2021-27065")
    assert pl.first_exploited.isoformat() == "2021-01-03"
    assert "DIVD" in pl.first_exploited_source
    assert kb.wave("proxyshell").cves == ("CVE-2021-34473", "CVE-2021-34523", "CVE-2021-31207")
    assert kb.wave("proxynotshell").cves == ("CVE-2022-41040", "CVE-2022-41082")
    assert kb.cve("CVE-2021-26857").affected[0] == "Exchange 2010"
    with pytest.raises(KeyError):
        kb.wave("nope")


def test_one_off_march_package_is_flagged() -> None:
    old_cu = kb.verdict("15.1.1415.10").waves["proxylogon"]  # 2016 CU8: one-off package for an old CU
    assert old_cu.state is P
    assert "only the four ProxyLogon CVEs" in old_cu.fix_text
    regular = kb.verdict("15.1.2176.9").waves["proxylogon"]  # 2016 CU19: a regular Mar21SU
    assert regular.state is P and "one-off" not in regular.fix_text
    later_cu = kb.verdict("15.1.2242.4").waves["proxylogon"]  # fixed by a later CU, not by a package
    assert "one-off" not in later_cu.fix_text


def test_a_new_wave_is_a_data_change() -> None:
    """Add a wave to waves.json's data only: the engine judges it from the catalogue with no code change."""
    import json

    from exwatch.kb._catalogue import read_data_text
    from exwatch.kb._verdict import Engine
    from exwatch.kb._waves import parse_waves

    doc = json.loads(read_data_text("waves.json"))
    doc["waves"].append(
        {
            "id": "examplewave",
            "name": "Example",
            "first_exploited": "2023-01-01",
            "cves": [
                {
                    "id": "CVE-2023-00001",
                    "affected": ["Exchange 2016", "Exchange 2019"],
                    "fixed_by": "Jan23SU",
                }
            ],
        }
    )
    waves = parse_waves(json.dumps(doc))
    engine = Engine(kb.current().catalogue, waves)

    def state(build: str) -> State:
        return engine.verdict(kb.parse_build(build)).waves["examplewave"].state

    assert state("15.1.2507.16") is V  # 2016 CU23 Nov22SU
    assert state("15.1.2507.17") is P  # 2016 CU23 Jan23SU
    assert state("15.2.1118.21") is P  # 2019 CU12 Jan23SU
    assert state("15.2.1258.12") is P  # 2019 CU13: a later CU
    assert state("15.2.1118") is U  # CU-only, CU12 received Jan23SU
    assert state("15.0.1497.48") is N  # 2013 is not affected in this example
    w = engine.verdict(kb.parse_build("15.1.2507.16")).waves["examplewave"]
    assert "January 2023 security update" in w.reason and w.fix.security_update == ("15.1.2507.17",)
