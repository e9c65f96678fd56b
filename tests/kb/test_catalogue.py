"""The shipped catalogue: size, lookups, and the computed ``fixes`` against the reference CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from exwatch import kb
from exwatch.kb import parse_build


def test_catalogue_size_and_products() -> None:
    entries = kb.catalogue()
    assert len(entries) == 297
    per_product: dict[str, int] = {}
    for e in entries:
        per_product[e.product] = per_product.get(e.product, 0) + 1
    # builds.md section 7: 2010: 2, 2013: 58, 2016: 114, 2019: 113, SE: 10.
    assert per_product == {
        "Exchange 2010": 2,
        "Exchange 2013": 58,
        "Exchange 2016": 114,
        "Exchange 2019": 113,
        "Exchange SE": 10,
    }
    assert [str(e.build) for e in entries[:2]] == ["14.3.509.0", "14.3.513.0"]


def test_fixes_agree_with_reference(shared_reference: Path) -> None:
    """``fixes`` is computed with the builds.md section 3 algorithm; the reference computed it too."""
    with (shared_reference / "exchange_builds_extended.csv").open(encoding="utf-8") as fh:
        reference = {
            row["build"]: tuple(c for c in row["fixes"].split(";") if c) for row in csv.DictReader(fh)
        }
    ours = {str(e.build): e.fixes for e in kb.catalogue()}
    assert ours.keys() == reference.keys()
    mismatches = {b: (ours[b], reference[b]) for b in ours if ours[b] != reference[b]}
    assert mismatches == {}


def test_shipped_copy_matches_reference(shared_reference: Path) -> None:
    from importlib import resources

    data = resources.files("exwatch.kb").joinpath("data")
    assert (
        data.joinpath("builds.csv").read_bytes()
        == (shared_reference / "exchange_builds_extended.csv").read_bytes()
    )
    assert (
        data.joinpath("su_cves.csv").read_bytes() == (shared_reference / "exchange_su_cves.csv").read_bytes()
    )


def test_builds_for_cu_newest_first() -> None:
    got = [str(b) for b in kb.builds_for_cu(parse_build("15.1.2242"))]
    assert got == ["15.1.2242.12", "15.1.2242.10", "15.1.2242.8", "15.1.2242.4"]
    assert kb.builds_for_cu(parse_build("15.1.2200")) == []


def test_cu_name_and_product_of() -> None:
    assert kb.cu_name(parse_build("15.1.2176.9")) == "CU19"
    assert kb.cu_name(parse_build("15.1.2176")) == "CU19"
    assert kb.cu_name(parse_build("15.0.847.64")) == "SP1"
    assert kb.cu_name(parse_build("14.3.513.0")) == "SP3 RU32"
    assert kb.cu_name(parse_build("15.2.2562.46")) == "RTM"
    assert kb.cu_name(parse_build("15.1.2200.1")) is None
    assert kb.product_of(parse_build("15.2.2561.1")) == "Exchange 2019"
    assert kb.product_of(parse_build("15.2.2562.1")) == "Exchange SE"
    assert kb.product_of(parse_build("15.0.1497.2")) == "Exchange 2013"
    assert kb.product_of(parse_build("14.3.513.0")) == "Exchange 2010"
    assert kb.product_of(parse_build("8.3.83.6")) == "Exchange 2007"
    assert kb.product_of(parse_build("17.0.1.1")) == "Unknown"


def test_entry_fields() -> None:
    entry = next(e for e in kb.catalogue() if str(e.build) == "15.1.2176.9")
    assert (entry.product, entry.cu, entry.kind, entry.su_name, entry.kb) == (
        "Exchange 2016",
        "CU19",
        "SU",
        "Mar21SU",
        "KB5000871",
    )
    assert entry.release_date.isoformat() == "2021-03-02"
    assert entry.fixes == ("CVE-2021-26855", "CVE-2021-26857", "CVE-2021-26858", "CVE-2021-27065")


def test_regenerate_reproduces_the_shipped_copies(shared_reference: Path, tmp_path: Path) -> None:
    from importlib import resources

    from exwatch.kb.regenerate import main

    assert main([str(shared_reference), "--out", str(tmp_path)]) == 0
    data = resources.files("exwatch.kb").joinpath("data")
    for name in ("builds.csv", "su_cves.csv"):
        assert (tmp_path / name).read_bytes() == data.joinpath(name).read_bytes()


def test_regenerate_refuses_a_wrong_folder(tmp_path: Path) -> None:
    from exwatch.kb.regenerate import main

    (tmp_path / "exchange_builds_extended.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    assert main([str(tmp_path), "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "builds.csv").exists()


def test_waves_json_agrees_with_su_cve_map() -> None:
    """Every tracked CVE's fixing update and products in waves.json match the shipped su_cves.csv."""
    import io
    from importlib import resources

    text = resources.files("exwatch.kb").joinpath("data", "su_cves.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    for w in kb.WAVES:
        for cve_id in w.cves:
            c = kb.cve(cve_id)
            su_rows = [r for r in rows if r["cve"] == cve_id and r["su_name"] == c.fixed_by]
            assert len(su_rows) == 1, cve_id
            tokens = set(su_rows[0]["applies_to"].split(";"))
            su_products = {p for p in c.affected if p.replace(" ", "") in tokens}
            assert su_products == {p for p in c.affected if p not in c.fixed_in_build}, cve_id
            for product, fix in c.fixed_in_build.items():
                ru = [r for r in rows if r["cve"] == cve_id and product.replace(" ", "") in r["applies_to"]]
                assert ru and "RU32" in ru[0]["su_name"] and str(fix.build) == "14.3.513.0"
