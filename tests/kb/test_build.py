"""The build parser: every spelling met in the wild, garbage, and properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exwatch.errors import BuildError
from exwatch.kb import Build, parse_build

SPELLINGS = [
    ("15.1.2176.9", Build(15, 1, 2176, 9)),
    ("15.01.2176.009", Build(15, 1, 2176, 9)),
    ("Version 15.1 (Build 2176.9)", Build(15, 1, 2176, 9)),
    ("version 15.2 (build 858.2)", Build(15, 2, 858, 2)),
    ("Version 15.1 (Build 2176)", Build(15, 1, 2176, None)),
    ("15.2 (Build 1118.20)", Build(15, 2, 1118, 20)),
    ("15.1.2176", Build(15, 1, 2176, None)),
    ("14.3.513.0", Build(14, 3, 513, 0)),
    ("14.03.0513.000", Build(14, 3, 513, 0)),
    ("Exchange/15.02.0858.002", Build(15, 2, 858, 2)),
    ("  15.2.1118.20\n", Build(15, 2, 1118, 20)),
    ("v15.0.1497.44", Build(15, 0, 1497, 44)),
    ("8.3.083.6", Build(8, 3, 83, 6)),
]


@pytest.mark.parametrize(("text", "expected"), SPELLINGS, ids=[s[0].strip() for s in SPELLINGS])
def test_spellings(text: str, expected: Build) -> None:
    assert parse_build(text) == expected


GARBAGE = [
    "",
    "   ",
    "15",
    "15.1",
    "15.1.",
    "15.1.2176.",
    "15.1.2176.9.1",
    "15.1.2176.9a",
    "15..2176.9",
    "-15.1.2176.9",
    "15.1.99999.9",  # above 65535: not a Windows file version
    "15.1.2176.1234567",
    "Exchange/",
    "Version 15.1",
    "Build 2176.9",
    "١٥.١.٢١٧٦.٩",  # Arabic-Indic digits are not accepted as build numbers
    "15.1.2176.9; DROP TABLE",
    "x" * 500,
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_raises_build_error(text: str) -> None:
    with pytest.raises(BuildError) as info:
        parse_build(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 200


def test_str_and_properties() -> None:
    b = parse_build("15.01.2176.009")
    assert str(b) == "15.1.2176.9" and not b.cu_only and b.cu_key == (15, 1, 2176)
    cu = parse_build("15.1.2176")
    assert str(cu) == "15.1.2176" and cu.cu_only and cu.cu_key == b.cu_key


def test_ordering_is_numeric_and_cu_only_sorts_first() -> None:
    builds = [
        parse_build(s) for s in ("15.1.2242.4", "15.1.2176.12", "15.1.2176", "15.1.2176.9", "14.3.513.0")
    ]
    assert [str(b) for b in sorted(builds)] == [
        "14.3.513.0",
        "15.1.2176",
        "15.1.2176.9",
        "15.1.2176.12",
        "15.1.2242.4",
    ]
    assert parse_build("15.1.2176.12") > parse_build("15.1.2176.9")  # not a string comparison


parts = st.integers(min_value=0, max_value=65535)
builds = st.builds(Build, parts, parts, parts, st.one_of(st.none(), parts))


@given(builds)
def test_round_trip(b: Build) -> None:
    assert parse_build(str(b)) == b


@given(builds, st.integers(min_value=0, max_value=4))
def test_zero_padding_is_ignored(b: Build, pad: int) -> None:
    nums = [b.major, b.minor, b.build] + ([] if b.revision is None else [b.revision])
    padded = ".".join(str(n).zfill(len(str(n)) + pad) for n in nums)
    if all(len(p) <= 6 for p in padded.split(".")):
        assert parse_build(padded) == b
        assert parse_build(f"Exchange/{padded}") == b


@given(builds)
def test_version_build_spelling(b: Build) -> None:
    tail = f"{b.build}" if b.revision is None else f"{b.build}.{b.revision}"
    assert parse_build(f"Version {b.major}.{b.minor} (Build {tail})") == b


@settings(max_examples=500)
@given(st.text(max_size=60))
def test_never_crashes_with_anything_but_build_error(text: str) -> None:
    try:
        b = parse_build(text)
    except BuildError:
        return
    assert isinstance(b, Build)
    assert parse_build(str(b)) == b


@settings(max_examples=300)
@given(st.from_regex(r"[0-9.]{0,25}", fullmatch=True))
def test_digit_soup(text: str) -> None:
    try:
        b = parse_build(text)
    except BuildError:
        return
    # Accepted only when the text is three or four numbers, and then exactly those numbers.
    parts = [int(x) for x in text.split(".")]
    assert len(parts) in (3, 4)
    assert (b.major, b.minor, b.build, b.revision) == (*parts[:3], parts[3] if len(parts) == 4 else None)
    assert parse_build(str(b)) == b


@given(builds)
def test_verdict_never_crashes(b: Build) -> None:
    from exwatch import kb

    v = kb.verdict(b)
    assert set(v.waves) == {"proxylogon", "proxyshell", "proxynotshell"}
    assert all(w.reason for w in v.waves.values())


def test_build_and_verdict_pickle() -> None:
    import pickle

    from exwatch import kb

    b = parse_build("15.1.2176")
    assert pickle.loads(pickle.dumps(b)) == b
    v = kb.verdict(b)
    assert pickle.loads(pickle.dumps(v)).to_dict() == v.to_dict()
