"""Fuzz tests: a short run inside ``make test`` (the default profile), the long one with ``make fuzz``.

``make fuzz`` loads the ``fuzz`` profile below (at least 10,000 examples per test). A fuzz test takes its
example count from the loaded profile through its own ``@settings``: with the default profile it runs a
few dozen examples, so that it keeps working without slowing ``make test``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = 10_000

settings.register_profile(
    "fuzz",
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
