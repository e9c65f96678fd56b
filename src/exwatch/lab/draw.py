"""Draw a random fleet whose builds look like the Exchange servers on the internet in March 2021."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping
from datetime import date

from exwatch.errors import InputError
from exwatch.lab import _catalogue
from exwatch.lab.spec import EXCHANGE_VARIANTS, HOSTILE_VARIANTS, OTHER_VARIANTS, ServerSpec

# Where Exchange servers stood in March 2021, by update level. The rough shape (most servers on
# 2013 CU23, 2016 CU17 to CU19 and 2019 CU6 to CU8; a long tail of older CUs and some 2010) follows
# the counts published in March 2021 (exposure_timeline.md); the exact weights are the lab's choice.
BUILD_GROUPS: tuple[tuple[float, str, tuple[str, ...]], ...] = (
    (0.22, "Exchange 2013", ("CU23",)),
    (0.34, "Exchange 2016", ("CU17", "CU18", "CU19")),
    (0.22, "Exchange 2019", ("CU6", "CU7", "CU8")),
    (0.03, "Exchange 2016", ("CU20",)),
    (0.02, "Exchange 2019", ("CU9",)),
    (0.06, "Exchange 2013", ("CU19", "CU20", "CU21", "CU22", "SP1")),
    (0.06, "Exchange 2016", ("CU8", "CU9", "CU10", "CU11", "CU12", "CU13", "CU14", "CU15", "CU16")),
    (0.02, "Exchange 2019", ("RTM", "CU1", "CU2", "CU3", "CU4", "CU5")),
    (0.03, "Exchange 2010", ("SP3 RU29", "SP3 RU30", "SP3 RU31", "SP3 RU32")),
)
MARCH_2021_END = date(2021, 3, 31)

# Default shares of server kinds in a drawn fleet (options of ``draw_fleet`` and ``exwatch lab serve``).
DEFAULT_EXCHANGE_VARIANTS: dict[str, float] = {
    "standard": 0.70,
    "no_owa_version": 0.12,
    "adfs": 0.06,
    "no_exporttool": 0.06,
    "proxy_strip": 0.06,
}
DEFAULT_OTHER_SHARE = 0.20  # servers that are not Exchange, or not reachable, or hostile
DEFAULT_OTHER_VARIANTS: dict[str, float] = {
    "iis": 0.25,
    "nginx": 0.20,
    "refuse": 0.15,
    "reset": 0.08,
    "silent": 0.08,
    **dict.fromkeys(HOSTILE_VARIANTS, 0.04),
}


def _pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    names = [k for k, v in weights.items() if v > 0]
    if not names:
        raise InputError("no variant has a positive share")
    return rng.choices(names, weights=[weights[k] for k in names])[0]


def _builds_by_cu(until: date) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for entry in _catalogue.catalogue():
        if entry.release_date <= until:
            out.setdefault((entry.product, entry.cu), []).append(entry.build)
    return out


def draw_build(rng: random.Random, patched_share: float, until: date = MARCH_2021_END) -> str:
    """One build: a CU from BUILD_GROUPS, then its newest build (patched) or an older one of the CU."""
    by_cu = _builds_by_cu(until)
    weights = [g[0] for g in BUILD_GROUPS]
    while True:
        _, product, cus = rng.choices(BUILD_GROUPS, weights=weights)[0]
        choices = [c for c in cus if (product, c) in by_cu]
        if choices:
            break
    builds = sorted(by_cu[(product, rng.choice(choices))], key=_catalogue.build_tuple)
    if len(builds) == 1 or rng.random() < patched_share:
        return builds[-1]
    return rng.choice(builds[:-1])


def _addresses(base: str) -> ipaddress.IPv4Address:
    try:
        addr = ipaddress.IPv4Address(base)
    except ValueError as exc:
        raise InputError(f"bad base address {base!r}") from exc
    if not addr.is_loopback:
        raise InputError(f"the lab serves loopback addresses only (127.0.0.0/8), not {base}")
    return addr


def draw_fleet(
    n: int,
    seed: int,
    base_address: str = "127.1.0.1",
    *,
    https_port: int = 443,
    http_port: int = 80,
    http_share: float = 0.0,
    only_exchange: bool = False,
    other_share: float = DEFAULT_OTHER_SHARE,
    exchange_variants: Mapping[str, float] | None = None,
    other_variants: Mapping[str, float] | None = None,
    patched_share: float = 0.45,
    mitigated_share: float = 0.12,
    until: date = MARCH_2021_END,
) -> list[ServerSpec]:
    """``n`` server specs, one loopback address each from ``base_address`` up, reproducible from ``seed``.

    ``mitigated_share`` of the Exchange servers carry the ProxyLogon rules (a few also the others).
    """
    if n < 0:
        raise InputError("the fleet size must be zero or more")
    for label, share in (
        ("http", http_share),
        ("other", other_share),
        ("patched", patched_share),
        ("mitigated", mitigated_share),
    ):
        if not 0.0 <= share <= 1.0:
            raise InputError(f"the {label} share must be between 0 and 1, not {share}")
    ex_weights = dict(exchange_variants or DEFAULT_EXCHANGE_VARIANTS)
    other_weights = dict(other_variants or DEFAULT_OTHER_VARIANTS)
    for name in [*ex_weights, *other_weights]:
        if name not in EXCHANGE_VARIANTS and name not in OTHER_VARIANTS and name not in HOSTILE_VARIANTS:
            raise InputError(f"unknown variant {name!r}")
    rng = random.Random(seed)
    addr = _addresses(base_address)
    specs: list[ServerSpec] = []
    for i in range(n):
        while addr.packed[3] in (0, 255):
            addr += 1
        if not addr.is_loopback:
            raise InputError(f"the fleet does not fit in 127.0.0.0/8 from {base_address}")
        exchange = only_exchange or rng.random() >= other_share
        variant = _pick(rng, ex_weights) if exchange else _pick(rng, other_weights)
        scheme = "http" if variant != "bad_tls" and rng.random() < http_share else "https"
        port = https_port if scheme == "https" else http_port
        name = f"host{i + 1:04d}"
        if exchange:
            build = draw_build(rng, patched_share, until)
            mitigations: list[str] = []
            if rng.random() < mitigated_share:
                mitigations = ["proxylogon"]
                if rng.random() < 0.25:
                    mitigations += ["proxyshell", "proxynotshell"]
            specs.append(
                ServerSpec(
                    name, str(addr), port, scheme, _catalogue.product_of(build), build, mitigations, variant
                )
            )
        else:
            specs.append(ServerSpec(name, str(addr), port, scheme, "", None, [], variant))
        addr += 1
    return specs
