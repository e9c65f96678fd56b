"""Shared fixtures: an isolated data directory for every test, and the PostgreSQL URL from make test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Machines here are noisy: no per-example deadline, and no health check about slow data generation.
settings.register_profile(
    "exwatch", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("exwatch")

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(autouse=True)
def exwatch_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data directory and default store, never the user's."""
    home = tmp_path_factory.mktemp("exwatch-home")
    monkeypatch.setenv("EXWATCH_HOME", str(home))
    monkeypatch.delenv("EXWATCH_DB", raising=False)
    yield home


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The throwaway PostgreSQL started by ``scripts/with-postgres.sh``; missing it fails on CI."""
    url = os.environ.get("EXWATCH_TEST_PG_URL")
    if not url:
        if os.environ.get("CI_REQUIRE_POSTGRES") or os.environ.get("CI"):
            pytest.fail("EXWATCH_TEST_PG_URL is not set: run the tests through `make test`")
        pytest.skip("no PostgreSQL: run through `make test` (scripts/with-postgres.sh)")
    return url


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """The reference folder beside the repository (read-only)."""
    if not SHARED_REFERENCE.is_dir():
        pytest.fail(f"reference folder missing: {SHARED_REFERENCE}")
    return SHARED_REFERENCE
