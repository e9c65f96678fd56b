"""The engine's event loop: uvloop when installed (the ``fast`` extra), asyncio's own otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from exwatch.scan import engine
from exwatch.scan.engine import ScanSummary


async def _loop_kind() -> ScanSummary:
    summary = ScanSummary(0)
    summary.problems.append(type(asyncio.get_running_loop()).__module__)
    return summary


def test_uvloop_runs_the_engine_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert engine._run_loop(_loop_kind()).problems == ["uvloop"]


def test_asyncio_loop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert engine._run_loop(_loop_kind()).problems[0].startswith("asyncio")
