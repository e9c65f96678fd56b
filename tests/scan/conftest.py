"""Lab fleets for the scan tests, in 127.20.0.0/16 on high ports (CONTRACTS.md: one range per suite)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from exwatch.lab import draw_fleet, run_fleet_in_thread

HTTPS_PORT = 18443
HTTP_PORT = 18080


@pytest.fixture(scope="module")
def lab500() -> Iterator[tuple[Any, dict[str, Any]]]:
    """500 servers of every variant (Exchange, plain, unreachable, hostile), a tenth over plain HTTP."""
    specs = draw_fleet(
        500, seed=20, base_address="127.20.1.1", https_port=HTTPS_PORT, http_port=HTTP_PORT, http_share=0.1
    )
    with run_fleet_in_thread(specs) as fleet:
        yield fleet, fleet.manifest()


def states(rec: dict[str, Any]) -> dict[str, str]:
    """The per-wave states of an observation record."""
    return {w: v["state"] for w, v in rec["waves"].items()}
