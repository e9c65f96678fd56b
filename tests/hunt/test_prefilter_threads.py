"""The pre-filter is shared between threads (threaded Dask workers, the cluster hunt): it must not clash."""

from __future__ import annotations

import platform
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from exwatch.hunt.sources.textlog import LiteralFinder

BODY = b"".join(
    (
        b"2021-03-03T06:40:01Z,GET,/owa/auth/x.js,X-AnonResource-Backend=localhost/ecp/default.flt?~3\n"
        if i % 97 == 0
        else b"2021-03-03T06:40:01Z,GET,/owa/,benign line of traffic here\n"
    )
    for i in range(40_000)
)
EXPECTED = sum(1 for i in range(40_000) if i % 97 == 0)


@pytest.mark.parametrize("strategy", ["hyperscan", "re2", "ahocorasick", "regex"])
def test_one_finder_many_threads(strategy: str) -> None:
    if strategy == "hyperscan" and not (sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip("hyperscan is a dependency on Linux x86_64 only")
    finder = LiteralFinder(["x-anonresource-backend"], strategy)

    def count(_: int) -> int:
        return sum(1 for _ in finder.positions(BODY))

    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(count, range(24)))
    assert counts == [EXPECTED] * 24
