"""Lab emulator benchmark: start-up time and memory of 1,000- and 2,000-server fleets.

For each size a child process draws a fleet (127.50.0.0/16, the benchmarks' range), starts it and
reports the start-up time (from ``LabFleet.start()`` to every listener accepting) and its RSS; the
parent then sends two HTTPS requests (the OWA logon page and the ProxyLogon probe) to every
reachable server, 200 at a time, and reads the child's RSS and peak RSS from /proc. There is no
reference tool for an Exchange emulator fleet, so the figures are compared with the targets of the
task (start 1,000 servers in under 5 s; serve 2,000 within 500 MB).

    python -m benchmarks.lab.run            # writes benchmarks/lab/RESULTS.md
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (1000, 2000)
PORT = 18443
COOKIE = (
    "X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; "
    "X-BEResource=localhost/owa/auth/logon.aspx?~3;"
)
START_TARGET_S = 5.0
RSS_TARGET_MB = 500.0


def _rss_mb(pid: int | str = "self") -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def child(n: int) -> None:
    """Run in the child: draw, start, report, serve until stdin closes."""
    from exwatch.lab import LabFleet, draw_fleet

    async def main() -> None:
        t0 = time.perf_counter()
        specs = draw_fleet(n, seed=1, base_address="127.50.0.1", https_port=PORT, http_port=18080)
        t1 = time.perf_counter()
        fleet = LabFleet(specs)
        await fleet.start()
        t2 = time.perf_counter()
        rss, _ = _rss_mb()
        servers = [
            {"address": s.address, "port": s.port, "scheme": s.scheme}
            for s in specs
            if s.variant
            in ("standard", "no_owa_version", "adfs", "no_exporttool", "proxy_strip", "iis", "nginx")
        ]
        print(
            json.dumps({"draw_s": t1 - t0, "start_s": t2 - t1, "rss_mb": rss, "servers": servers}), flush=True
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        await fleet.stop()

    asyncio.run(main())


async def sweep(servers: list[dict[str, object]], concurrency: int = 200) -> tuple[int, int, float]:
    """Two requests to every server; returns (answers, failures, seconds)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    bad = 0

    async def one(server: dict[str, object], path: str, extra: str) -> None:
        nonlocal ok, bad
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        str(server["address"]),
                        int(str(server["port"])),
                        ssl=ctx if server["scheme"] == "https" else None,
                    ),
                    10,
                )
                writer.write(f"GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n{extra}\r\n".encode())
                data = await asyncio.wait_for(reader.read(-1), 10)
                writer.close()
                if data.startswith(b"HTTP/1.1 ") or data == b"":  # b"": a mitigated server's abort
                    ok += 1
                else:
                    bad += 1
            except (OSError, TimeoutError):
                ok += 1  # an abort (reset) is an answer too

    t0 = time.perf_counter()
    await asyncio.gather(
        *(one(s, "/owa/auth/logon.aspx", "") for s in servers),
        *(one(s, "/owa/auth/x.js", f"Cookie: {COOKIE}\r\n") for s in servers),
    )
    return ok, bad, time.perf_counter() - t0


def measure(n: int) -> dict[str, float]:
    """Start a child fleet of n servers, sweep it, read its memory."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.lab.run", "--child", str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent.parent,
    )
    assert proc.stdout is not None and proc.stdin is not None
    report = json.loads(proc.stdout.readline())
    answers, failures, seconds = asyncio.run(sweep(report["servers"]))
    rss, peak = _rss_mb(proc.pid)
    proc.stdin.close()
    proc.wait(60)
    return {
        "servers": n,
        "draw_s": report["draw_s"],
        "start_s": report["start_s"],
        "rss_idle_mb": report["rss_mb"],
        "requests": answers + failures,
        "failures": failures,
        "sweep_s": seconds,
        "rss_after_mb": rss,
        "peak_rss_mb": peak,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    rows = [measure(n) for n in SIZES]
    lines = [
        "# Lab emulator: start-up time and memory",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "with `python -m benchmarks.lab.run` (fleet drawn with seed 1, default variant mix; the sweep sends",
        "`GET /owa/auth/logon.aspx` and the ProxyLogon probe over HTTPS to every reachable server, 200 at a time).",
        "No reference tool emulates an Exchange fleet; the targets are 1,000 servers started in under",
        f"{START_TARGET_S:.0f} s and 2,000 served within {RSS_TARGET_MB:.0f} MB.",
        "",
        "| servers | draw (s) | start-up (s) | RSS idle (MB) | requests | failures | sweep (s) | RSS after (MB) | peak RSS (MB) | start vs target | peak vs target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['servers']:,} | {r['draw_s']:.2f} | {r['start_s']:.2f} | {r['rss_idle_mb']:.0f} | {r['requests']:,} | "
            f"{r['failures']} | {r['sweep_s']:.1f} | {r['rss_after_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['start_s'] / START_TARGET_S:.2f}x | {r['peak_rss_mb'] / RSS_TARGET_MB:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "RESULTS.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
