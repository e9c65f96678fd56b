"""The pages parse to the same document as before the Jinja2 templates (tags, attributes, text)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden_pages import GOLDEN, pages  # noqa: E402


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return pages(tmp_path_factory.mktemp("pages"))


NAMES = sorted(p.stem for p in GOLDEN.glob("*.json"))


def test_every_page_is_pinned(produced: dict[str, object]) -> None:
    assert sorted(produced) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_page_unchanged(name: str, produced: dict[str, object]) -> None:
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    assert json.loads(json.dumps(produced[name])) == want
