"""``exwatch kb update`` with Microsoft's two real build lists (May 2025, August 2026) and broken copies."""

from __future__ import annotations

import csv
import hashlib
import json
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from exwatch import kb
from exwatch.cli.main import cli
from exwatch.errors import ConfigError, InputError
from exwatch.kb import _current

OLD = "microsoft_build_numbers_2025-05.csv"
NEW = "microsoft_build_numbers_2026-08.csv"


def shipped_hash() -> str:
    data = resources.files("exwatch.kb").joinpath("data", "builds.csv").read_bytes()
    return hashlib.sha256(data).hexdigest()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_update_makes_new_builds_known(shared_reference: Path, exwatch_home: Path) -> None:
    before_hash = shipped_hash()
    ru30 = kb.parse_build("14.3.496.0")  # Exchange 2010 SP3 RU30: in Microsoft's list, not shipped
    preview = kb.parse_build("15.1.225.16")  # Exchange 2016 Preview
    assert kb.cu_name(ru30) is None
    assert not kb.verdict(ru30).known
    shipped_size = len(kb.catalogue())

    code, out, err = run("kb", "update", str(shared_reference / NEW), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["rows"] == 340 and doc["imported"] == 340 and doc["skipped"] == []
    added = {d["build"]: d for d in doc["added"]}
    assert added["14.3.496.0"]["cu"] == "SP3 RU30" and added["14.3.496.0"]["kb"] == "KB4536989"
    assert added["15.1.225.16"]["kind"] == "Preview"
    assert added["8.3.279.5"]["cu"] == "SP3 RU8v2"  # a v2 re-release of Exchange 2007
    assert doc["changed"] == []  # the August 2026 list agrees with the shipped catalogue
    assert doc["new_since_previous_import"] is None

    assert kb.cu_name(ru30) == "SP3 RU30"
    v = kb.verdict(ru30)
    assert v.known and v.cu == "SP3 RU30" and v.product == "Exchange 2010"
    assert v.waves["proxylogon"].state is kb.State.VULNERABLE  # below RU32
    assert kb.cu_name(preview) == "Preview"
    assert len(kb.catalogue()) == shipped_size + len(added)
    # The shipped copy is untouched; the import lives in the data directory.
    assert shipped_hash() == before_hash
    assert (exwatch_home / "kb" / "microsoft_build_numbers.csv").is_file()
    # Zero-padded builds and padded dates of Microsoft's list are read as numbers.
    entries = {str(e.build): e for e in kb.catalogue()}
    assert entries["14.3.461.1"].cu == "SP3 RU28"  # listed as 14.03.0461.001
    assert entries["15.0.1044.25"].release_date.isoformat() == "2014-12-09"  # listed as 12/09/2014
    assert entries["15.1.2176.2"].kb == "KB4588884"
    code, out, _ = run("kb", "builds", "--product", "2010")
    assert code == 0 and "63 builds (shipped catalogue + imported list of" in out and "SP3 RU30" in out
    # Verdicts of shipped builds are unchanged by the import.
    assert kb.verdict("15.1.2242.4").waves["proxyshell"].state is kb.State.VULNERABLE
    assert kb.verdict("15.1.2242.4").waves["proxylogon"].state is kb.State.PATCHED


def test_older_then_newer_shows_what_the_newer_adds(shared_reference: Path) -> None:
    code, out, err = run("kb", "update", str(shared_reference / OLD), "--format", "json")
    assert code == 0
    first = json.loads(out)
    assert first["rows"] == 306 and first["older_than_shipped"] is True
    assert "older than the shipped catalogue" in err
    # Microsoft later corrected four KB numbers; the May 2025 copy still has the old ones.
    assert {c["build"] for c in first["changed"]} == {
        "15.2.1544.25",
        "15.2.1544.27",
        "15.2.1748.24",
        "15.2.1748.26",
    }
    assert {e.build: e.kb for e in kb.catalogue()}[kb.parse_build("15.2.1544.25")] == "KB5050674"

    code, out, _ = run("kb", "update", str(shared_reference / NEW), "--format", "json")
    assert code == 0
    second = json.loads(out)
    new = [d["build"] for d in second["new_since_previous_import"]]
    assert len(new) == 34
    assert "15.2.2562.17" in new and "15.1.2507.72" in new  # SE RTM, 2016 CU23 Aug26SU
    assert all(d["release_date"] > "2025-05-31" for d in second["new_since_previous_import"])
    assert second["added"] == []  # the shipped catalogue already had them
    assert {c["build"] for c in second["changed"]} == set(
        ["15.2.1544.25", "15.2.1544.27", "15.2.1748.24", "15.2.1748.26"]
    )
    assert {e.build: e.kb for e in kb.catalogue()}[kb.parse_build("15.2.1544.25")] == "KB5050673"


def test_update_table_output(shared_reference: Path) -> None:
    code, out, _ = run("kb", "update", str(shared_reference / NEW))
    assert code == 0
    assert "Imported 340 of 340 rows" in out
    assert "14.3.496.0" in out or "Exchange 2010" in out


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


HEADER = "Product Name,Build Number,Date,KB,Blog\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01\x02PK\x03\x04binary", "not a text CSV"),
        (b"", "empty file"),
        (
            b"product,cu,build,release_date,kind\nExchange 2016,CU19,15.1.2176.2,2020-12-15,CU\n",
            "not Microsoft's",
        ),
        (HEADER.encode(), "no rows"),
        (b"just some text\nwith lines\n", "not Microsoft's"),
    ],
    ids=["binary", "empty", "other-csv", "header-only", "text"],
)
def test_update_refuses_files_that_are_not_the_list(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(content)
    code, out, err = run("kb", "update", str(path))
    assert code == 2
    assert message in err
    assert err.startswith("exwatch: error:") and err.strip().count("\n") == 0
    assert not kb.imported_path().exists()


def test_update_names_bad_rows_by_line(tmp_path: Path, exwatch_home: Path) -> None:
    path = _write(
        tmp_path / "list.csv",
        HEADER
        + "Exchange 2016 CU19,15.01.2176.002,12/15/2020,KB4588884,\n"  # line 2: fine
        + "Exchange 2016 CU19 Mar21SU,15.1.2176.9,31/31/2021,KB5000871,\n"  # line 3: bad date
        + "Exchange 2016 CU19 Apr21SU,15.1.x.12,4/13/2021,KB5001779,\n"  # line 4: bad build
        + "Exchange 2019 CU9,15.1.2242.4,3/16/2021,KB5000736,\n"  # line 5: build of 2016
        + "Exchange 2016 CU20,15.1.2242.4,3/16/2021,KB5000736,\n"  # line 6: fine
        + "Exchange 2016 CU20,15.1.2242.4,3/16/2021,KB5000736,\n"  # line 7: duplicate
        + "Exchange 2016 CU20 Apr21SU,15.1.2242.8,4/13/2021,5001779,\n",  # line 8: bad KB
    )
    code, out, err = run("kb", "update", str(path))
    assert code == 2
    for line in ("line 3", "line 4", "line 5", "line 7"):
        assert line in err
    assert "5 bad row(s)" in err
    assert not kb.imported_path().exists()  # nothing written

    code, out, err = run("kb", "update", str(path), "--skip-bad", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["imported"] == 2 and len(doc["skipped"]) == 5
    assert "skipped line 8" in err
    rows = list(csv.DictReader(kb.imported_path().open(encoding="utf-8")))
    assert [r["build"] for r in rows] == ["15.1.2176.2", "15.1.2242.4"]


def test_update_missing_file(tmp_path: Path) -> None:
    code, _, err = run("kb", "update", str(tmp_path / "nope.csv"))
    assert code == 2 and "cannot read" in err


def test_damaged_import_is_reported(exwatch_home: Path) -> None:
    target = kb.imported_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("garbage\n", encoding="utf-8")
    _current._current = None  # the next lookup loads the damaged file
    with pytest.raises(ConfigError, match="not a catalogue file"):
        kb.catalogue()


def test_import_api_refuses_bad_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.csv", HEADER + "Exchange 2099 CU1,15.9.1.1,1/1/2030,,\n")
    with pytest.raises(InputError, match="line 2"):
        kb.import_ms_list(path)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=5).map(lambda cells: ",".join(cells)), st.integers(0, 3))
def test_ms_list_parser_never_crashes(row: str, copies: int) -> None:
    from exwatch.kb._mslist import parse_ms_list

    try:
        parsed = parse_ms_list(HEADER + (row + "\n") * copies)
    except ValueError:
        return
    assert parsed.rows >= len(parsed.entries)
    for entry in parsed.entries:
        assert entry.product.startswith("Exchange")
        assert not entry.build.cu_only


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_import_of_random_bytes_is_refused_cleanly(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.csv"
        path.write_bytes(data)
        try:
            kb.import_ms_list(path)
        except InputError as exc:
            assert "\n" not in str(exc)
        else:  # pragma: no cover - random bytes are never a valid list
            raise AssertionError("random bytes were imported")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Exchange 2010 SP1 RTM", ("Exchange 2010", "SP1", "RTM", "")),
        ("Exchange 2010 SP3 RU32", ("Exchange 2010", "SP3 RU32", "RU", "")),
        ("Exchange 2013 SP1", ("Exchange 2013", "SP1", "CU", "")),
        ("Exchange 2013 SP1 Mar21SU", ("Exchange 2013", "SP1", "SU", "Mar21SU")),
        ("Exchange 2019 CU13 (2023H1)", ("Exchange 2019", "CU13", "CU", "")),
        ("Exchange 2019 RTM Mar21SU", ("Exchange 2019", "RTM", "SU", "Mar21SU")),
        ("Exchange 2016 Preview", ("Exchange 2016", "Preview", "Preview", "")),
        ("Exchange 2007 SP3 RU8v2", ("Exchange 2007", "SP3 RU8v2", "RU", "")),
        ("Exchange SE RTM May26HU", ("Exchange SE", "RTM", "HU", "May26HU")),
        ("Exchange 2016 CU23 Aug23SUv2", ("Exchange 2016", "CU23", "SU", "Aug23SUv2")),
        ("Exchange Server SE CU1", ("Exchange SE", "CU1", "CU", "")),
    ],
)
def test_product_names(name: str, expected: tuple[str, str, str, str]) -> None:
    from exwatch.kb._mslist import parse_product_name

    assert parse_product_name(name) == expected


@pytest.mark.parametrize(
    "name", ["Outlook 2016", "Exchange 2016 CU19 Mar21XX", "Exchange 2016 banana", "Exchange"]
)
def test_bad_product_names(name: str) -> None:
    from exwatch.kb._mslist import parse_product_name

    with pytest.raises(ValueError):
        parse_product_name(name)


def test_update_check_writes_nothing(shared_reference: Path) -> None:
    code, out, _ = run("kb", "update", str(shared_reference / NEW), "--check", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["written"] is False and len(doc["added"]) == 115
    assert not kb.imported_path().exists()
    assert kb.cu_name(kb.parse_build("14.3.496.0")) is None
    code, out, _ = run("kb", "update", str(shared_reference / NEW), "--check")
    assert code == 0 and out.startswith("Would import (--check: nothing written) 340 of 340 rows")
