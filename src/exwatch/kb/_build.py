"""Exchange build numbers: the ``Build`` value and the parser for every spelling met in the wild."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from exwatch.errors import BuildError

# Windows file versions hold four 16-bit parts, so no real build part exceeds 65535.
_PART_MAX = 65535
_MAX_INPUT = 200

_N = r"([0-9]{1,6})"
# Spellings (builds.md section 1, fingerprinting.md): 15.1.2176.9, 15.01.2176.009, 15.1.2176 (CU only),
# Exchange/15.02.0858.002 (X-ServerApplication), "Version 15.1 (Build 2176.9)" (Get-ExchangeServer's
# AdminDisplayVersion, also without the word "Version"), an optional leading "v".
_DOTTED = re.compile(rf"(?:exchange/|v)?{_N}\.{_N}\.{_N}(?:\.{_N})?", re.IGNORECASE | re.ASCII)
_VERSION_BUILD = re.compile(
    rf"(?:version\s+)?{_N}\.{_N}\s*\(\s*build\s+{_N}(?:\.{_N})?\s*\)", re.IGNORECASE | re.ASCII
)


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class Build:
    """An Exchange build ``major.minor.build.revision``; ``revision`` is None when only the CU is known."""

    major: int
    minor: int
    build: int
    revision: int | None = None

    def __str__(self) -> str:
        head = f"{self.major}.{self.minor}.{self.build}"
        return head if self.revision is None else f"{head}.{self.revision}"

    @property
    def cu_only(self) -> bool:
        """True when the revision is unknown (e.g. the OWA logon page's ``15.1.2176``)."""
        return self.revision is None

    @property
    def cu_key(self) -> tuple[int, int, int]:
        """``(major, minor, build)``: identifies the CU (or, for Exchange 2010, the update rollup)."""
        return (self.major, self.minor, self.build)

    @property
    def sort_key(self) -> tuple[int, int, int, int]:
        """Integer tuple for ordering; a CU-only build sorts before every full build of its CU."""
        return (self.major, self.minor, self.build, -1 if self.revision is None else self.revision)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Build):
            return NotImplemented
        return self.sort_key < other.sort_key

    def with_revision(self, revision: int | None) -> Build:
        """The same CU with another revision."""
        return Build(self.major, self.minor, self.build, revision)


def _to_int(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > _PART_MAX:
        raise ValueError(text)
    return value


@functools.lru_cache(maxsize=65536)
def parse_build(text: str) -> Build:
    """Parse any usual spelling of an Exchange build; raise BuildError for anything else.

    Zero-padded parts (``15.02.0858.002``) are read as integers, never compared as strings.
    """
    if not isinstance(text, str):
        raise BuildError(f"not a build string: {text!r}")
    raw = text.strip()
    shown = raw if len(raw) <= 60 else raw[:57] + "..."
    if not raw or len(raw) > _MAX_INPUT:
        raise BuildError(f"not an Exchange build: {shown!r} (expected e.g. 15.1.2176.9 or 15.1.2176)")
    match = _DOTTED.fullmatch(raw) or _VERSION_BUILD.fullmatch(raw)
    if match is None:
        raise BuildError(f"not an Exchange build: {shown!r} (expected e.g. 15.1.2176.9 or 15.1.2176)")
    try:
        major, minor, build, revision = (_to_int(g) for g in match.groups())
    except ValueError:
        raise BuildError(f"not an Exchange build: {shown!r} (a part is above {_PART_MAX})") from None
    assert major is not None and minor is not None and build is not None
    return Build(major, minor, build, revision)
