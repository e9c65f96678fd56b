"""Where the hunt's CPU time goes: ``python -m benchmarks.hunt.profile PACKAGE [--out PROFILE.md]``.

Runs the hunt's stages one after the other in one process over a triage package and reports the
CPU-seconds of each, per GB of package, next to ripgrep's CPU time on the same literals:

- start-up: imports, rules parsed afresh (rule cache off) and from the on-disk rule cache, the
  pre-filters (Hyperscan database and RE2 line patterns) built for every log family;
- the walk of the evidence tree;
- reading every text log (the I/O floor), then the pre-filter alone (Hyperscan, line check, line
  numbers), then the whole text-log hunt (pre-filter, then parsing and rules on candidate lines);
- the event-log exports and the other files;
- the cost per candidate line of each step (decode, rule picker, record, keyword text, time, rules).

With ``--py-spy`` (py-spy on PATH or next to this Python; not a dependency of exwatch) it also
samples a whole ``exwatch hunt --jobs 1`` and lists the functions with the most samples.
Timings are CPU time of this process (``time.process_time``): on a shared machine they move less
than wall time, but they still move; read them as proportions.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _cpu() -> float:
    return time.process_time()


def stages(pkg: Path) -> dict[str, Any]:
    """CPU seconds of each stage of the hunt over ``pkg`` (one process)."""
    out: dict[str, Any] = {}
    t0 = _cpu()
    from exwatch.hunt import HuntTask, RuleSpec, worker
    from exwatch.hunt.limits import ArchiveLimits
    from exwatch.hunt.rules import cache
    from exwatch.hunt.sources.files import walk
    from exwatch.hunt.sources.lines import keyword_text, record_time
    from exwatch.hunt.sources.textlog import decode_line, iter_candidates
    from exwatch.logformats import build_record, parse_fields_header

    out["imports"] = _cpu() - t0
    os.environ[cache.ENV_CACHE] = "0"
    t = _cpu()
    worker.load_rules([worker.builtin_sigma_dir()])
    out["rules, parsed (pySigma)"] = _cpu() - t
    os.environ[cache.ENV_CACHE] = "1"
    worker.load_rules([worker.builtin_sigma_dir()])  # fills the cache
    t = _cpu()
    worker.load_rules([worker.builtin_sigma_dir()])
    out["rules, from the disk cache"] = _cpu() - t
    t = _cpu()
    bundle = worker.load_bundle(RuleSpec())
    out["bundle (rules, YARA-X, indicators)"] = _cpu() - t
    t = _cpu()
    files = list(walk(pkg, tempfile.mkdtemp(prefix="exwatch-prof-"), ArchiveLimits(), []))
    out["walk"] = _cpu() - t
    text = [f for f in files if f.family in worker.TEXT_LOG_FAMILIES]

    def fam(f: Any) -> str:
        return "httpproxy" if f.family == "exchange_log" else str(f.family)

    t = _cpu()
    for f in text:
        bundle.finder_for(fam(f))
        bundle.rule_picker(fam(f))
    out["pre-filters built (Hyperscan, RE2, Aho-Corasick)"] = _cpu() - t
    t = _cpu()
    n_bytes = 0
    for f in text:
        with open(f.path, "rb") as fh:
            while block := fh.read(16 << 20):
                n_bytes += len(block)
    out["read text logs"] = _cpu() - t
    t = _cpu()
    lines: list[tuple[str, list[str], bytes]] = []
    for f in text:
        fields: list[str] = list(worker.DEFAULT_FIELDS.get(f.family) or [])
        with open(f.path, "rb") as fh:
            for c in iter_candidates(fh, bundle.finder_for(fam(f))):
                lines.append((fam(f), fields, c.data))
    out["pre-filter (Hyperscan, line check, line numbers)"] = _cpu() - t
    per: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    for f in files:
        t = _cpu()
        worker.hunt_file(HuntTask(path=f.path, rel=f.rel, family=f.family, size=f.size, mtime=f.mtime))
        kind = (
            "text logs"
            if f.family in worker.TEXT_LOG_FAMILIES
            else "event logs"
            if "evtx" in f.family
            else "files"
        )
        per[kind] += _cpu() - t
        sizes[kind] += f.size
    for k in ("text logs", "event logs", "files"):
        out[f"hunt: {k}"] = per[k]
    out["_sizes"] = dict(sizes)
    out["_text_bytes"] = n_bytes
    out["_package_bytes"] = sum(f.size for f in files)

    # Cost per candidate line, step by step (headers re-read so that records get their fields).
    cand: list[tuple[str, list[str], str]] = []
    fields_by: dict[str, list[str]] = {}
    for family, fields, data in lines:
        text_line = decode_line(data)
        if text_line.startswith("#"):
            if text_line[:8].lower() == "#fields:":
                fields_by[family] = parse_fields_header(text_line)
            continue
        cand.append((family, fields_by.get(family, fields), text_line))
    step: dict[str, float] = {}
    n = max(1, len(cand))
    t = _cpu()
    picks = [bundle.rule_picker(fa)(tx.lower()) for fa, _, tx in cand]
    step["rule picker (lower-case, Aho-Corasick, alternatives)"] = _cpu() - t
    t = _cpu()
    recs = [build_record(fa, fl, tx) for fa, fl, tx in cand]
    step["record (tokenizer, decoded fields)"] = _cpu() - t
    t = _cpu()
    for (_fa, _fl, tx), rec in zip(cand, recs, strict=True):
        tx + "\n" + keyword_text(rec)
    step["keyword text (built only for keyword rules)"] = _cpu() - t
    t = _cpu()
    for (fa, _fl, tx), rec in zip(cand, recs, strict=True):
        record_time(fa, rec, tx)
    step["time (parsed only for a window or a finding)"] = _cpu() - t
    t = _cpu()
    for (_fa, _fl, tx), rec, (picked, _ioc) in zip(cand, recs, picks, strict=True):
        for rule in picked:
            rule.predicate(rec, tx)
    step["rules (predicates of the picked rules)"] = _cpu() - t
    out["_per_line"] = {k: v / n * 1e6 for k, v in step.items()}
    out["_candidates"] = len(cand)
    return out


def rg_cpu(pkg: Path, literals: Path, jobs: int) -> float:
    """User+system CPU seconds of ``rg -uuu -F -i -c -f literals`` over ``pkg``."""
    rg = shutil.which("rg")
    if rg is None:
        return float("nan")
    before = os.times()
    subprocess.run(
        [rg, "-uuu", "-F", "-i", "-j", str(jobs), "-c", "-f", str(literals), str(pkg)],
        capture_output=True,
        check=False,
    )
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


def py_spy(pkg: Path, top: int = 20) -> list[tuple[float, str]] | None:
    """The functions with the most samples (own time) in ``exwatch hunt --jobs 1``, or None."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "spy.txt"
        subprocess.run(
            [spy, "record", "-r", "250", "-f", "raw", "-o", str(raw), "--", sys.executable, "-m", "exwatch"]
            + ["hunt", str(pkg), "--format", "json", "--no-store", "--jobs", "1"],
            capture_output=True,
            check=False,
        )
        if not raw.exists():
            return None
        own: collections.Counter[str] = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            if not line.strip():
                continue
            stack, _, count = line.rpartition(" ")
            frame = stack.split(";")[-1]
            m = re.match(r"(.*) \((.*):\d+\)", frame)
            name = f"{m.group(1)} ({Path(m.group(2)).name})" if m else frame
            own[name] += int(count)
            total += int(count)
    return [(100.0 * v / max(1, total), k) for k, v in own.most_common(top)]


def render(pkg: Path, st: dict[str, Any], rg: float, spy: list[tuple[float, str]] | None) -> list[str]:
    gb = st["_package_bytes"] / 1e9
    rows = [
        f"# Where `exwatch hunt` spends its CPU time (`python -m benchmarks.hunt.profile {pkg}`)",
        "",
        f"Package {gb:.2f} GB ({st['_text_bytes'] / 1e9:.2f} GB of text logs), one process, CPU seconds "
        f"(`time.process_time`); {os.getloadavg()[0]:.2f} load average (1 minute) at the end, "
        f"{os.cpu_count()} cores.",
        "",
        "| Stage | CPU s | CPU s per GB of package |",
        "|---|---|---|",
    ]
    total = 0.0
    for k, v in st.items():
        if k.startswith("_"):
            continue
        rows.append(f"| {k} | {v:.2f} | {v / gb:.2f} |")
        if k in (
            "imports",
            "rules, from the disk cache",
            "walk",
            "hunt: text logs",
            "hunt: event logs",
            "hunt: files",
        ):
            total += v
    rows += [
        f"| **hunt total** (imports, cached rules, walk, text logs, event logs, files) | **{total:.2f}** | **{total / gb:.2f}** |",
        f"| ripgrep `rg -uuu -F -i -c -f literals.txt` (user+system) | {rg:.2f} | {rg / gb:.2f} |",
        "",
        f"Candidate lines (after the pre-filter, headers excluded): {st['_candidates']:,} "
        f"({st['_candidates'] / gb:,.0f} per GB). Cost of each step per candidate line:",
        "",
        "| Step | microseconds per line |",
        "|---|---|",
    ]
    rows += [f"| {k} | {v:.1f} |" for k, v in st["_per_line"].items()]
    if spy:
        rows += [
            "",
            "py-spy, `exwatch hunt --jobs 1` on the same package, functions with the most own samples:",
            "",
            "| Share | Function |",
            "|---|---|",
        ]
        rows += [f"| {share:.1f}% | `{name}` |" for share, name in spy if name]
    return rows + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--out", type=Path, default=HERE / "PROFILE.md")
    ap.add_argument("--jobs", type=int, default=2, help="ripgrep threads")
    ap.add_argument("--py-spy", action="store_true", help="also sample a whole hunt with py-spy")
    args = ap.parse_args()
    from benchmarks.hunt.run import literals_file

    st = stages(args.package)
    with tempfile.TemporaryDirectory() as tmp:
        lits = Path(tmp) / "literals.txt"
        literals_file(lits)
        rg_cpu(args.package, lits, args.jobs)  # warm
        rg = rg_cpu(args.package, lits, args.jobs)
    spy = py_spy(args.package) if args.py_spy else None
    text = "\n".join(render(args.package, st, rg, spy))
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
