"""Benchmark of ``exwatch.kb.verdict`` at scanner scale: ``python -m benchmarks.kb.run [--hosts N]``.

A scan calls ``verdict`` once per host; the CERT use case is about 400,000 hosts (exposure_timeline.md:
"a total universe of nearly 400,000 Exchange servers"). The host population is drawn (seeded) from the
catalogue with the spellings met in the wild: plain, zero-padded, ``Exchange/`` header form, CU-only, OWA's
``15.2.858.2``, and unpublished revisions.

The reference is HealthChecker's own way of deciding (``Test-ExchangeBuildGreaterOrEqualThanSecurityPatch``
in microsoft/CSS-Exchange, builds.md section 3), transcribed as a script would run it: per call, filter the
build list for the product's entries of each security update, sort them, compare; no index and no cache.
HealthChecker itself is PowerShell and runs on one server, so it cannot be run here; the transcription also
serves as a cross-check: both must give the same states on every full build.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from exwatch import kb
from exwatch.kb import _current

HERE = Path(__file__).resolve().parent
FIX_UPDATE = {
    "CVE-2021-26855": "Mar21SU",
    "CVE-2021-26857": "Mar21SU",
    "CVE-2021-26858": "Mar21SU",
    "CVE-2021-27065": "Mar21SU",
    "CVE-2021-34473": "Apr21SU",
    "CVE-2021-34523": "Apr21SU",
    "CVE-2021-31207": "May21SU",
    "CVE-2022-41040": "Nov22SU",
    "CVE-2022-41082": "Nov22SU",
}


def population(n: int, seed: int = 7) -> list[str]:
    """``n`` build strings as a scan would read them: a few hundred distinct values, skewed."""
    rng = random.Random(seed)
    entries = kb.catalogue()
    weights = [1.0 / (1 + i % 40) for i in range(len(entries))]
    out = []
    for _ in range(n):
        e = rng.choices(entries, weights)[0]
        b = e.build
        r = rng.random()
        if r < 0.55:
            out.append(str(b))
        elif r < 0.70:
            out.append(f"{b.major}.{b.minor:02d}.{b.build:04d}.{b.revision:03d}")
        elif r < 0.80:
            out.append(f"Exchange/{b.major}.{b.minor:02d}.{b.build:04d}.{b.revision:03d}")
        elif r < 0.93:
            out.append(f"{b.major}.{b.minor}.{b.build}")  # CU only (OWA logon page)
        elif r < 0.96:
            out.append("15.2.858.2")
        else:
            out.append(f"{b}{rng.randint(0, 9)}")  # an unpublished revision, e.g. 15.1.2176.91
    return out


def reference_states(build: str, rows: list[kb.CatalogueEntry]) -> dict[str, str]:
    """HealthChecker's algorithm, transcribed without index or cache (full builds of 2013/2016/2019)."""
    b = kb.parse_build(build)
    product = kb.product_of(b)
    states: dict[str, str] = {}
    for w in kb.WAVES:
        cve_states = []
        for cve in w.cves:
            affected = kb.cve(cve).affected
            if product == "Exchange SE":
                cve_states.append("patched")
                continue
            if product not in affected:
                cve_states.append("not_affected")
                continue
            if product == "Exchange 2010":
                cve_states.append("patched" if b >= kb.parse_build("14.3.513.0") else "vulnerable")
                continue
            su = [e for e in rows if e.product == product and e.su_name == FIX_UPDATE[cve]]
            su.sort(key=lambda e: (e.release_date, e.build))
            if not su:
                cve_states.append("not_affected")
            elif b >= su[-1].build:
                cve_states.append("patched")
            else:
                own = [e for e in su if e.build.cu_key == b.cu_key]
                cve_states.append("patched" if own and b >= own[0].build else "vulnerable")
        for s in ("vulnerable", "unknown", "patched", "not_affected"):
            if s in cve_states:
                states[w.id] = s
                break
    return states


def timed(func, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=400_000)
    parser.add_argument(
        "--reference-hosts", type=int, default=0, help="0: every full build of the population"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    load = os.getloadavg()
    load_s, _ = timed(_current.reload)
    hosts = population(args.hosts)
    distinct = len(set(hosts))

    def run_ours(items: list[str]) -> int:
        vulnerable = 0
        for h in items:
            if kb.verdict(h).vulnerable:
                vulnerable += 1
        return vulnerable

    cold, warm = [], []
    vulnerable = 0
    for _ in range(args.repeat):
        _current.reload()
        kb.parse_build.cache_clear()
        t, vulnerable = timed(run_ours, hosts)
        cold.append(t)
        t, _ = timed(run_ours, hosts)
        warm.append(t)

    # Cost of one uncached verdict (what a scan pays once per distinct build).
    engine = kb.current().engine
    builds = [kb.parse_build(h) for h in set(hosts)]
    uncached_s, _ = timed(lambda bs: [engine._compute(b) for b in bs], builds)

    rows = kb.catalogue()
    full = [
        h
        for h in hosts
        if not kb.parse_build(h).cu_only and kb.parse_build(h) not in kb.current().engine.aliases
    ]
    sample = full[: args.reference_hosts] if args.reference_hosts else full
    # Same treatment for both sides: one run each, exwatch.kb starting from cold caches.
    _current.reload()
    ours_s, ours_states = timed(
        lambda items: [{w: v.state.value for w, v in kb.verdict(h).waves.items()} for h in items], sample
    )
    ref_s, ref_states = timed(lambda items: [reference_states(h, rows) for h in items], sample)
    disagree = sum(1 for a, b in zip(ref_states, ours_states, strict=True) if a != b)

    best_cold, best_warm = min(cold), min(warm)
    per_host_cold_us = best_cold / len(hosts) * 1e6
    per_host_warm_us = best_warm / len(hosts) * 1e6
    ref_per_host_us = ref_s / len(sample) * 1e6
    ours_sample_us = ours_s / len(sample) * 1e6
    lines = [
        "# kb benchmark: verdict at scanner scale",
        "",
        f"Run: {datetime.now(UTC).isoformat(timespec='seconds')}, `python -m benchmarks.kb.run --hosts {args.hosts}`"
        f" (best of {args.repeat}); load average at the start {load[0]:.1f} on {os.cpu_count()} CPUs"
        " (the machine is shared: expect about 2x variation between runs).",
        "",
        f"- Knowledge base load (catalogue of {len(rows)} builds, computed fixes, indexes): {load_s * 1000:.1f} ms",
        f"- Hosts: {len(hosts):,}, distinct build strings: {distinct:,}, vulnerable to a wave: {vulnerable:,}",
        f"- `verdict()` over all hosts, caches cold: {best_cold:.3f} s ({per_host_cold_us:.2f} µs/host,"
        f" {len(hosts) / best_cold:,.0f} hosts/s); median {statistics.median(cold):.3f} s",
        f"- `verdict()` over all hosts, caches warm: {best_warm:.3f} s ({per_host_warm_us:.2f} µs/host,"
        f" {len(hosts) / best_warm:,.0f} hosts/s)",
        f"- One uncached verdict (no lru_cache): {uncached_s / len(builds) * 1e6:.1f} µs per distinct build",
        "",
        f"Reference (HealthChecker's algorithm transcribed: scan and sort the build list per call) on"
        f" {len(sample):,} hosts with a full build (CU-only and alias spellings are outside its algorithm):",
        "",
        f"- reference: {ref_s:.3f} s ({ref_per_host_us:.1f} µs/host); exwatch.kb on the same hosts, cold caches,"
        f" one run: {ours_s:.3f} s ({ours_sample_us:.2f} µs/host)",
        f"- ratio: exwatch.kb is {ref_per_host_us / ours_sample_us:,.0f}x faster per host",
        f"- state disagreements between the two: {disagree} of {len(sample):,}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text, encoding="utf-8")
    return 0 if disagree == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
