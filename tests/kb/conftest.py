"""Every kb test starts and ends with a fresh knowledge base, so an import never leaks between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exwatch.kb import _current


@pytest.fixture(autouse=True)
def fresh_kb(exwatch_home: object) -> Iterator[None]:
    """Drop the loaded knowledge base before and after each test (it depends on EXWATCH_HOME)."""
    _current._current = None
    yield
    _current._current = None
