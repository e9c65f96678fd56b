"""Scan benchmark: exwatch against nmap on a lab fleet of 1,000 HTTPS servers, and a 1,000,000-target stream.

Run: ``python -m benchmarks.scan.run`` (as root for port 443; ``--quick`` for 200 servers, no stream).

1. A lab fleet of 1,000 HTTPS Exchange servers (``exwatch lab serve``, its own process) on 127.50.0.0/16,
   every server's TLS context made before anything is timed.
2. ``exwatch scan`` (passive fingerprinting, SQLite store), ``exwatch scan --probe`` and nmap doing
   comparable work (``-p 443 --script http-headers,http-title``), by :mod:`benchmarks.method`: each run
   once untimed (warm-up), then alternately, medians of ``--runs`` (at least 3), load before and after.
   Every verdict of exwatch's last runs is checked against the manifest's truth.
3. One ``exwatch scan`` under cProfile: where the scan process's CPU goes, by part.
4. ``exwatch scan 127.48.0.0/12`` on port 443 (1,048,576 targets, loopback only; only the fleet's 1,000
   addresses listen, the rest refuse): peak RSS of the streaming scan (``--skip-stream`` to leave out).

Figures are printed and written to ``benchmarks/scan/RESULTS.md`` by this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.method import Comparison, Contestant, compare, machine_line

HERE = Path(__file__).resolve().parent
EXWATCH = [sys.executable, "-m", "exwatch"]
BASE = "127.50.0.1"
STREAM_RANGE = "127.48.0.0/12"  # 1,048,576 loopback addresses; the fleet's 127.50.0.x are inside


def _tree(pid: int) -> list[int]:
    """The process and its descendants (from /proc)."""
    out = [pid]
    i = 0
    while i < len(out):
        for task in Path(f"/proc/{out[i]}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            out.extend(int(k) for k in kids)
        i += 1
    return out


def _rss_kb(pid: int, field: str = "VmRSS:") -> int:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


LAB_PID = 0


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Run:
    """A command run: wall time, its CPU time, the lab's CPU time meanwhile, and the peak RSS of its
    process tree (sampled every 50 ms)."""

    def __init__(
        self, cmd: list[str], stdout: Any = subprocess.DEVNULL, env: dict[str, str] | None = None
    ) -> None:
        self.cmd = cmd
        self.peak_kb = 0
        self.peak_anon_kb = 0
        self.cpu = 0.0
        self.lab_cpu = 0.0
        self._cpu0 = _children_cpu()
        self._lab0 = _cpu_of(LAB_PID) if LAB_PID else 0.0
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self.proc.poll() is None:
            self.peak_kb = max(self.peak_kb, _rss_kb(self.proc.pid))
            self.peak_anon_kb = max(self.peak_anon_kb, _rss_kb(self.proc.pid, "RssAnon:"))
            time.sleep(0.05)

    def wait(self, timeout: float) -> tuple[int, float, str]:
        _, err = self.proc.communicate(timeout=timeout)
        seconds = time.monotonic() - self.start
        self._sampler.join(1)
        self.cpu = _children_cpu() - self._cpu0
        self.lab_cpu = (_cpu_of(LAB_PID) - self._lab0) if LAB_PID else 0.0
        return self.proc.returncode, seconds, err


def start_lab(n: int, manifest: Path) -> subprocess.Popen[str]:
    cmd = [
        *EXWATCH,
        "lab",
        "serve",
        "--fleet",
        str(n),
        "--seed",
        "2021",
        "--base-address",
        BASE,
        "--https-port",
        "443",
        "--only-exchange",
        "--manifest",
        str(manifest),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not manifest.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the lab did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    return proc


def warm_lab(addresses: list[str], port: int = 443) -> float:
    """One TLS handshake with every server before anything is timed; returns the seconds it took.

    The lab makes each server's certificate and TLS context on its first handshake (lab/tls.py); without
    this pass the tool that runs first would pay for 1,000 certificate signings in the lab's process.
    """
    import asyncio
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    async def one(address: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            _, writer = await asyncio.open_connection(address, port, ssl=ctx)
            writer.transport.abort()

    async def every() -> None:
        gate = asyncio.Semaphore(100)
        await asyncio.gather(*(one(a, gate) for a in addresses))

    start = time.monotonic()
    asyncio.run(every())
    return time.monotonic() - start


def unlearnable(server: dict[str, Any]) -> bool:
    """Exchange 2010 behind ADFS in the lab: no response carries its build (see tests/scan/test_lab_truth.py)."""
    return server["variant"] == "adfs" and str(server["build"]).startswith("14.")


def expected(server: dict[str, Any], key: str) -> dict[str, str]:
    """The lab's truth; for the servers no scanner can fingerprint, ``unknown`` except a mitigation
    that the probes see (an aborted request)."""
    if not unlearnable(server):
        return dict(server[key])
    return {w: ("mitigated" if s == "mitigated" else "unknown") for w, s in server[key].items()}


def check_verdicts(manifest: dict[str, Any], jsonl: Path) -> tuple[int, list[str]]:
    truth = {
        f"{s['scheme']}://{s['address']}:{s['port']}": expected(s, "truth_passive")
        for s in manifest["servers"]
    }
    got: dict[str, dict[str, str]] = {}
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        got[rec["key"]] = {w: v["state"] for w, v in rec["waves"].items()}
    wrong = [k for k, want in truth.items() if got.get(k) != want]
    return len(got), wrong


def run_exwatch(manifest_file: Path, work: Path, probe: bool) -> dict[str, Any]:
    out = work / ("probe.jsonl" if probe else "passive.jsonl")
    # One store per contestant, kept across its runs: the untimed warm-up run makes it (and migrates it
    # to the newest revision), every timed run stores one more scan into it, as a user's scans do.
    # A first scan into a new store also creates the schema (Alembic): 0.3 to 0.4 s of CPU more, once.
    db = work / ("probe.db" if probe else "passive.db")
    cmd = [
        *EXWATCH,
        "scan",
        "--targets-file",
        str(manifest_file),
        "--db",
        f"sqlite:///{db}",
        "--format",
        "jsonl",
        "--concurrency",
        "256",
    ]
    if probe:
        cmd.append("--probe")
    with out.open("w", encoding="utf-8") as fh:
        run = Run(cmd, stdout=fh)
        code, seconds, err = run.wait(1800)
    # The summary line on stderr ("scan N: 1,000 host(s), 1,000 service(s) in 1.1 s; ...") times the loop.
    loop = re.search(r"service\(s\) in ([0-9.]+) s", err)
    return {
        "code": code,
        "seconds": seconds,
        "loop_seconds": float(loop.group(1)) if loop else None,
        "peak_kb": run.peak_kb,
        "cpu": run.cpu,
        "lab_cpu": run.lab_cpu,
        "out": out,
        "stderr": err[-500:],
        "cmd": cmd,
    }


def run_nmap(addresses: list[str], work: Path) -> dict[str, Any]:
    listing = work / "addresses.txt"
    listing.write_text("\n".join(addresses) + "\n", encoding="utf-8")
    xml = work / "nmap.xml"
    cmd = [
        "nmap",
        "-n",
        "-Pn",
        "-p",
        "443",
        "--script",
        "http-headers,http-title",
        "-iL",
        str(listing),
        "-oX",
        str(xml),
    ]
    run = Run(cmd)
    code, seconds, err = run.wait(3600)
    text = xml.read_text(encoding="utf-8", errors="replace") if xml.exists() else ""
    return {
        "code": code,
        "seconds": seconds,
        "peak_kb": run.peak_kb,
        "cpu": run.cpu,
        "lab_cpu": run.lab_cpu,
        "titles": text.count('id="http-title"'),
        "headers": text.count('id="http-headers"'),
        "stderr": err[-500:],
        "cmd": cmd,
    }


def run_stream(work: Path) -> dict[str, Any]:
    db = work / "stream.db"
    cmd = [
        *EXWATCH,
        "-q",
        "scan",
        STREAM_RANGE,
        "--yes-large",
        "--ports",
        "443",
        "--db",
        f"sqlite:///{db}",
        "--format",
        "table",
        "--concurrency",
        "512",
        "--retries",
        "0",
        "--timeout",
        "3",
    ]
    run = Run(cmd)
    code, seconds, err = run.wait(7200)
    return {
        "code": code,
        "seconds": seconds,
        "peak_kb": run.peak_kb,
        "peak_anon_kb": run.peak_anon_kb,
        "cpu": run.cpu,
        "stderr": err[-500:],
        "cmd": cmd,
    }


STARTUP_COMMANDS = (("exwatch --version", ["--version"]), ("exwatch scan --help", ["scan", "--help"]))


def measure_startup(runs: int) -> Comparison:
    """Start-up: ``exwatch --version`` and ``exwatch scan --help`` (goal: at most 0.3 s each)."""
    return compare(
        [Contestant(name, command=[*EXWATCH, *args]) for name, args in STARTUP_COMMANDS],
        runs=runs,
        log=lambda _: None,
    )


def _cpu_child(manifest_file: str, store: str, out: Any) -> None:
    """In a fresh process: one scan, the CPU of its event loop's thread and of the whole process per host."""
    from exwatch.scan.engine import ScanOptions, run_scan
    from exwatch.scan.run import _warm_knowledge

    _warm_knowledge()  # once per process (the knowledge base's tables), not per host
    from exwatch.fleet import open_store

    # The store's modules imported and its schema made before timing: "imports left out" holds for the
    # store too (SQLAlchemy and the store's modules cost about 0.4 s of CPU per process, the schema of a
    # new store 0.3 s more: start-up, not CPU per host).
    open_store(store).close()
    opts = ScanOptions(targets_files=(manifest_file,), concurrency=256)
    p0, t0 = time.process_time(), time.thread_time()
    summary = run_scan([], opts, store)
    p1, t1 = time.process_time(), time.thread_time()
    out.put(
        {
            "hosts": summary.scanned,
            "loop": (t1 - t0) / summary.scanned,
            "process": (p1 - p0) / summary.scanned,
        }
    )


def measure_cpu_per_host(manifest_file: Path, work: Path, runs: int) -> dict[str, Any]:
    """CPU per host of the scan itself (imports, interpreter start-up and making the store left out),
    asyncio's own loop, SQLite store (its writer thread in the process's figure): medians of ``runs``."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    loops, procs = [], []
    for i in range(runs + 1):  # the first one warms up
        db = work / f"cpu{i}.db"
        q = ctx.Queue()
        proc = ctx.Process(target=_cpu_child, args=(str(manifest_file), f"sqlite:///{db}", q))
        proc.start()
        got = q.get(timeout=600)
        proc.join()
        if i:
            loops.append(got["loop"] * 1000)
            procs.append(got["process"] * 1000)
    return {"loop_ms": statistics.median(loops), "process_ms": statistics.median(procs), "loops": loops}


def measure_tls_floor(addresses: list[str], runs: int) -> float:
    """CPU per host of connecting and the TLS handshake alone (asyncio's own loop, the scanner's TLS
    context, 256 at once): the floor under any asyncio scanner on this machine. Median ms of ``runs``."""
    import asyncio

    from exwatch.scan._http import client_tls_context

    async def one(address: str, ctx: Any, gate: asyncio.Semaphore) -> None:
        async with gate:
            _, writer = await asyncio.open_connection(address, 443, ssl=ctx, server_hostname="")
            writer.transport.abort()

    async def every() -> float:
        ctx, gate = client_tls_context(), asyncio.Semaphore(256)
        t0 = time.thread_time()
        await asyncio.gather(*(one(a, ctx, gate) for a in addresses))
        return (time.thread_time() - t0) / len(addresses) * 1000

    return statistics.median([asyncio.run(every()) for _ in range(runs)])


PROFILE_PARTS = (
    # (part, substrings of "file:function" in the profile; the first match wins). Built-in functions
    # are "~:<method 'x' of 'y' objects>"; what is left ("other") is builtins such as dict.get whose
    # caller the profile does not say.
    ("TLS handshake (OpenSSL)", ("do_handshake",)),
    ("waiting in epoll (idle, not CPU)", ("method 'poll' of 'select.epoll'",)),
    (
        "waiting for the store's writer (idle, not CPU)",
        ("posix.read", "connection.py", "of '_thread.lock' objects"),
    ),
    ("TLS records (OpenSSL read, write, new session)", ("_ssl._SSLSocket' objects", "_ssl._SSLContext'")),
    ("socket syscalls (connect, send, recv, close)", ("_socket.socket", "socket.py", "socket.close")),
    ("certificate names (cryptography)", ("cert_names", "x509")),
    ("verdicts (kb)", ("exwatch/kb/",)),
    ("fingerprint and probes", ("scan/fingerprint.py", "scan/probes.py", "scan/fusion.py")),
    ("HTTP reading and parsing", ("scan/_http.py", "scan/wire.py", "asyncio/streams.py")),
    ("observation records", ("scan/observation.py",)),
    ("fold, summary, output", ("scan/fold.py", "scan/summary.py", "scan/run.py", "json/", "cli/scan.py")),
    (
        "scan engine and scope (per-host flow, retries, budgets, address checks)",
        ("scan/engine.py", "scan/targets.py", "scan/limits.py", "scan/transport.py", "ipaddress.py"),
    ),
    (
        "asyncio machinery (loop, selector, TLS protocol, tasks)",
        ("asyncio/", "selectors.py", "select.epoll' objects", "_contextvars"),
    ),
    (
        "imports and start-up",
        ("importlib", "marshal", "builtins.compile", "builtins.exec", "<string>", "dataclasses", "<module>"),
    ),
    (
        "the store (SQLAlchemy, exwatch.fleet: opening it, finishing the scan)",
        ("sqlalchemy/", "exwatch/fleet/"),
    ),
)


def profile_scan(manifest_file: Path, work: Path) -> dict[str, Any]:
    """One passive scan under cProfile (the event loop's thread: the store writer's thread is not in it)."""
    import pstats

    prof = work / "scan.prof"
    db = work / "passive.db"  # the store the timed passive runs used (made by their warm-up run)
    cmd = [
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        str(prof),
        "-m",
        "exwatch",
        "-q",
        "scan",
        "--targets-file",
        str(manifest_file),
        "--db",
        f"sqlite:///{db}",
        "--format",
        "jsonl",
    ]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    stats = pstats.Stats(str(prof))
    total = stats.total_tt  # type: ignore[attr-defined]
    parts: dict[str, float] = {name: 0.0 for name, _ in PROFILE_PARTS}
    parts["other"] = 0.0
    top: list[tuple[float, int, str]] = []
    for (file, line, func), (_cc, ncalls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{file}:{func}"
        for name, needles in PROFILE_PARTS:
            if any(n in where for n in needles):
                parts[name] += tottime
                break
        else:
            parts["other"] += tottime
        short = (
            f"{file.split('/site-packages/')[-1].split('/src/')[-1].split('/lib/python3')[-1]}:{line}({func})"
        )
        top.append((tottime, ncalls, short))
    top.sort(reverse=True)
    return {"total": total, "parts": parts, "top": top[:15], "cmd": cmd}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, default=1000, help="HTTPS lab servers (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each contestant (median; >= 3)")
    parser.add_argument("--quick", action="store_true", help="200 servers, no stream, no profile")
    parser.add_argument("--skip-stream", action="store_true", help="skip the 1,000,000-target run")
    parser.add_argument("--skip-probe", action="store_true", help="leave out exwatch scan --probe")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.fleet, args.skip_stream = min(args.fleet, 200), True
    if os.geteuid() != 0:
        raise SystemExit("run as root: the lab listens on port 443 of 1,000 loopback addresses")
    if shutil.which("nmap") is None:
        raise SystemExit("nmap is missing: apt-get install -y nmap")
    nmap_version = subprocess.run(["nmap", "--version"], capture_output=True, text=True).stdout.splitlines()[
        0
    ]
    work = Path(tempfile.mkdtemp(prefix="exwatch-bench-scan-"))
    manifest_file = work / "manifest.json"
    lab = start_lab(args.fleet, manifest_file)
    global LAB_PID
    LAB_PID = lab.pid
    v: dict[str, Any] = {"nmap_version": nmap_version, "quick": args.quick}
    try:
        v["manifest"] = manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        v["addresses"] = addresses = [s["address"] for s in manifest["servers"]]
        print(f"lab: {len(addresses)} HTTPS servers on {addresses[0]}..{addresses[-1]}:443 (pid {lab.pid})")
        print(f"lab warmed up (one TLS handshake per server, not timed): {warm_lab(addresses):.1f} s")
        contestants = [
            Contestant("exwatch scan", function=lambda: run_exwatch(manifest_file, work, probe=False)),
            Contestant("nmap", function=lambda: run_nmap(addresses, work)),
        ]
        if not args.skip_probe:
            contestants.append(
                Contestant(
                    "exwatch scan --probe", function=lambda: run_exwatch(manifest_file, work, probe=True)
                )
            )
        v["startup"] = measure_startup(args.runs)
        print("\n".join(v["startup"].table()))
        v["tls_floor"] = measure_tls_floor(addresses, args.runs)
        print(f"TLS floor: {v['tls_floor']:.2f} ms CPU per host (connect and handshake alone)")
        v["cpu"] = measure_cpu_per_host(manifest_file, work, args.runs)
        print(
            f"CPU per host: event loop {v['cpu']['loop_ms']:.2f} ms, scan process {v['cpu']['process_ms']:.2f} ms"
        )
        v["cmp"] = cmp = compare(contestants, runs=args.runs)
        v["scanned"], v["wrong"] = check_verdicts(manifest, cmp.timings["exwatch scan"].last["out"])
        print(f"exwatch: {v['scanned']} hosts, {len(v['wrong'])} wrong verdicts (last run)")
        for key in v["wrong"][:5]:
            print(f"  wrong: {key}")
        if not args.skip_probe:
            v["probe_wrong"] = check_probe(manifest, cmp.timings["exwatch scan --probe"].last["out"])
            print(f"exwatch --probe: {len(v['probe_wrong'])} wrong verdicts (last run)")
        v["ratio"] = cmp.ratio("nmap", "exwatch scan")
        print("\n".join(cmp.table()))
        print(f"ratio nmap / exwatch (medians): {v['ratio']:.1f}x; {cmp.load_text()}")
        if not args.quick:
            v["profile"] = profile_scan(manifest_file, work)
            print(f"profile: {v['profile']['total']:.2f} s in the scan process's main thread")
        if not args.skip_stream:
            v["stream"] = stream = run_stream(work)
            print(
                f"stream {STREAM_RANGE}: exit {stream['code']}, {stream['seconds']:.0f} s, peak RSS {stream['peak_kb'] / 1024:.0f} MB"
            )
    finally:
        lab.send_signal(signal.SIGINT)
        try:
            lab.wait(30)
        except subprocess.TimeoutExpired:
            lab.kill()
    write_results(args.results, v)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not v["wrong"] and not v.get("probe_wrong") else 1


def check_probe(manifest: dict[str, Any], jsonl: Path) -> list[str]:
    """Addresses whose verdicts with --probe differ from the lab's full truth."""
    got = {}
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        got[rec["address"]] = {w: x["state"] for w, x in rec["waves"].items()}
    return [s["address"] for s in manifest["servers"] if got.get(s["address"]) != expected(s, "truth")]


def _loop_name() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio's own (uvloop not installed)"
    return f"uvloop {uvloop.__version__} (`pip install 'exwatch[fast]'`)"


def write_results(path: Path, v: dict[str, Any]) -> None:
    cmp: Comparison = v["cmp"]
    n = len(v["addresses"])
    ex, nm = cmp.timings["exwatch scan"], cmp.timings["nmap"]
    rows = [
        "| contestant | median s | min-max s | hosts/s (median) | CPU s tool (last run) | CPU s lab (last run) | peak RSS MB (last run) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in cmp.timings.values():
        last = t.last
        rows.append(
            f"| {t.name} | {t.median:.2f} | {t.spread()} | {n / t.median:.0f} | {last['cpu']:.2f} | "
            f"{last['lab_cpu']:.2f} | {last['peak_kb'] / 1024:.0f} |"
        )
    lines = [
        "# Scan benchmark results",
        "",
        f"{machine_line()}; {v['nmap_version']}; exwatch's event loop: {_loop_name()}.",
        "Written by `sudo .venv/bin/python -m benchmarks.scan.run"
        + (" --quick" if v["quick"] else "")
        + "` (method: `benchmarks/method.py`: every contestant run once untimed, then alternately, "
        f"medians of {cmp.runs}).",
        "",
        f"Lab: {n} HTTPS Exchange servers of every Exchange variant (`exwatch lab serve --fleet {n} "
        "--only-exchange`, its own process) on 127.50.0.0/16, port 443, every server's TLS context made "
        "before timing. exwatch stores into a SQLite store per contestant that its untimed warm-up run "
        "made: each timed run stores one more scan into it, as a user's scans do (a first scan into a new "
        "store also creates the schema: 0.3 to 0.4 s more CPU, once).",
        "",
        *rows,
        "",
        f"**nmap / exwatch scan, medians: {v['ratio']:.1f}x** (goal: at least 10x, every verdict right). "
        f"{cmp.load_text()}.",
        "",
        f"Verdicts of the last runs against the lab's truth: exwatch scan {len(v['wrong'])} wrong of {n}"
        + (f", --probe {len(v['probe_wrong'])} wrong of {n}" if "probe_wrong" in v else "")
        + f" ({sum(map(unlearnable, v['manifest']['servers']))} servers are Exchange 2010 behind ADFS, which "
        "no response fingerprints: counted right when exwatch answers `unknown`).",
        "",
        f"CPU per host (last run, start-up and the store writer included): exwatch {ex.last['cpu'] / n * 1000:.2f} ms, "
        f"nmap {nm.last['cpu'] / n * 1000:.2f} ms.",
        "",
    ]
    if ex.last.get("loop_seconds"):
        lines += [
            f"exwatch's last run: {ex.last['seconds']:.2f} s, of which the scan loop {ex.last['loop_seconds']:.2f} s "
            f"(its own summary line); start-up, opening the store and shutdown {ex.last['seconds'] - ex.last['loop_seconds']:.2f} s.",
            "",
        ]
    st = v["startup"]
    lines += [
        "## Start-up and CPU per host",
        "",
        *st.table(),
        "",
        f"Start-up goal: at most 0.3 s each ({st.load_text()}).",
        "",
        f"CPU per host of the scan (asyncio's own loop, SQLite store; interpreter start-up, imports and making the store left out; "
        f"medians of {len(v['cpu']['loops'])} scans in fresh processes): **event loop thread "
        f"{v['cpu']['loop_ms']:.2f} ms**, the whole scanning process {v['cpu']['process_ms']:.2f} ms "
        f"(with the store's writer thread). Goal: at most 1 ms. The floor: connecting and the TLS "
        f"handshake alone, with the same TLS context and asyncio's own loop, cost **{v['tls_floor']:.2f} ms** "
        "of CPU per host on this machine.",
        "",
    ]
    lines += _profile_lines(v.get("profile"), n)
    stream = v.get("stream")
    if stream is not None:
        lines += [
            f"Streaming: `exwatch scan {STREAM_RANGE} --yes-large --ports 443` = 1,048,576 loopback targets "
            f"(1,000 listen, the rest refuse), SQLite store: {stream['seconds']:.0f} s "
            f"({1048576 / stream['seconds']:.0f} targets/s, {stream['cpu']:.0f} CPU s), **peak RSS "
            f"{stream['peak_kb'] / 1024:.0f} MB** (anonymous memory {stream['peak_anon_kb'] / 1024:.0f} MB; "
            f"goal: under 300 MB), exit code {stream['code']}.",
            "",
        ]
    else:
        lines += [
            "The 1,000,000-target streaming run was left out of this run (`--skip-stream` or `--quick`).",
            "",
        ]
    cmds = [ex.last["cmd"], nm.last["cmd"]]
    if "exwatch scan --probe" in cmp.timings:
        cmds.append(cmp.timings["exwatch scan --probe"].last["cmd"])
    if v.get("profile"):
        cmds.append(v["profile"]["cmd"])
    if stream is not None:
        cmds.append(stream["cmd"])
    lines += ["Commands (last run of each):", ""] + [f"    {' '.join(map(str, c))}" for c in cmds]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"results written to {path}")


def _profile_lines(prof: dict[str, Any] | None, n: int) -> list[str]:
    if not prof:
        return []
    total = prof["total"]
    busy = total - sum(secs for name, secs in prof["parts"].items() if "not CPU" in name)
    lines = [
        "## Profile of the scan process (cProfile, main thread, one passive run)",
        "",
        f"{total:.2f} s in the main thread under the profiler (which slows Python code about 1.5-2x), "
        f"{busy:.2f} s of it busy: {busy / n * 1000:.2f} ms per host. By part (own time):",
        "",
        "| part | seconds | ms per host | share of busy |",
        "|---|---|---|---|",
    ]
    for name, secs in sorted(prof["parts"].items(), key=lambda kv: -kv[1]):
        share = f"{secs / busy * 100:.0f}%" if "not CPU" not in name else "-"
        lines.append(f"| {name} | {secs:.3f} | {secs / n * 1000:.3f} | {share} |")
    lines += ["", "Top functions by own time:", "", "| own s | calls | function |", "|---|---|---|"]
    lines += [f"| {t:.3f} | {c} | `{f}` |" for t, c, f in prof["top"]]
    return [*lines, ""]


if __name__ == "__main__":
    raise SystemExit(main())
