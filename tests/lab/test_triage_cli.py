"""The option parsers of ``exwatch lab triage``: sizes and times, including hostile input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exwatch.cli.lab_triage import parse_size, parse_time
from exwatch.errors import InputError

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB", 2_000_000_000),
        ("500MB", 500_000_000),
        ("1.5GiB", 1_610_612_736),
        ("3000000", 3_000_000),
        (" 20 mb ", 20_000_000),
    ],
)
def test_parse_size_table(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@given(st.integers(min_value=0, max_value=5000), st.sampled_from(sorted(UNITS)))
def test_parse_size_any_count_and_unit(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * UNITS[unit]
    assert parse_size(f"{n}{unit.lower()}") == n * UNITS[unit]


@given(st.text(max_size=20))
def test_parse_size_never_crashes(text: str) -> None:
    try:
        value = parse_size(text)
    except InputError as exc:
        assert "is not a size" in str(exc) or "too large" in str(exc)
    else:
        assert value >= 0


def test_parse_size_huge_is_an_input_error() -> None:
    with pytest.raises(InputError, match="too large"):
        parse_size("9" * 400 + "GB")


def test_parse_time_defaults_to_utc() -> None:
    assert parse_time("2021-03-03T06:49:42Z", "--x") == datetime(2021, 3, 3, 6, 49, 42, tzinfo=UTC)
    assert parse_time("2021-03-03T06:49:42", "--x") == datetime(2021, 3, 3, 6, 49, 42, tzinfo=UTC)
    assert parse_time("2021-03-03T08:49:42+02:00", "--x") == datetime(2021, 3, 3, 6, 49, 42, tzinfo=UTC)


@given(st.text(max_size=30))
def test_parse_time_never_crashes(text: str) -> None:
    try:
        t = parse_time(text, "--start")
    except InputError as exc:
        assert "--start" in str(exc)
    else:
        assert t.tzinfo is not None
