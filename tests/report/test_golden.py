"""The read side's JSON outputs are byte-for-byte those of the code before the typed read API (issue 16)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden_outputs import GOLDEN, outputs  # noqa: E402


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return outputs(tmp_path_factory.mktemp("golden"))


NAMES = sorted(p.stem for p in GOLDEN.glob("*.json"))


def test_every_output_is_pinned(produced: dict[str, object]) -> None:
    assert sorted(produced) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_output_unchanged(name: str, produced: dict[str, object]) -> None:
    want = (GOLDEN / f"{name}.json").read_text()
    got = json.dumps(produced[name], indent=1, sort_keys=False) + "\n"
    assert got == want
