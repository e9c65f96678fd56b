"""A real Dask LocalCluster (2 worker processes) and a lab fleet in 127.60.0.0/16 on high ports."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exwatch.lab import draw_fleet, run_fleet_in_thread

HTTPS_PORT = 18643
HTTP_PORT = 18680


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A client of a LocalCluster with two single-threaded worker processes on loopback."""
    import distributed  # exwatch[cluster], in [all]: installed by make test, so never a skip

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def lab200(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any], Path]]:
    """200 servers of every variant, a tenth over plain HTTP; yields (fleet, manifest, manifest file)."""
    specs = draw_fleet(
        200, seed=60, base_address="127.60.1.1", https_port=HTTPS_PORT, http_port=HTTP_PORT, http_share=0.1
    )
    with run_fleet_in_thread(specs) as fleet:
        manifest = fleet.manifest()
        path = tmp_path_factory.mktemp("lab") / "manifest.json"
        path.write_text(json.dumps(manifest), encoding="utf-8")
        yield fleet, manifest, path
