"""Fixtures of the mitigate tests: the sample web.config files, copied where a test may change them."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
GOOD = sorted(
    p.name
    for p in DATA.glob("*.config")
    if not p.name.startswith(("malformed", "wrong", "location_noinherit"))
)
MALFORMED = sorted(p.name for p in DATA.glob("malformed_*.config"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def copy_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A function copying a sample into a fresh folder as ``web.config``; returns the new path."""

    def _copy(name: str) -> Path:
        folder = tmp_path / name.removesuffix(".config")
        folder.mkdir()
        dest = folder / "web.config"
        shutil.copyfile(DATA / name, dest)
        return dest

    return _copy
