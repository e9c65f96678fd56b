"""The scan's policy without a socket: FakeTransport answers, FakeClock keeps time.

Retries of transient failures only, the caps against a hostile server's oversize headers and body, the
per-request timeout and the host budget on virtual time (no real second waited), rate limits, the exit
code, and every verdict of a drawn lab fleet answered by the lab's own request handler (no sockets).
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from typing import Any

import pytest

from exwatch.lab import draw_fleet, truth, truth_passive
from exwatch.lab.exchange import ServerState, respond
from exwatch.lab.http import Request
from exwatch.lab.spec import ServerSpec
from exwatch.lab.truth import rules_of
from exwatch.scan._http import FetchError, classify
from exwatch.scan.engine import ScanHooks, ScanOptions, ScanRun, scan_async
from exwatch.scan.limits import FakeClock, Gates, RateLimiter
from exwatch.scan.probes import ProbeResponse
from exwatch.scan.run import StoreWriter
from exwatch.scan.sink import MemorySink
from exwatch.scan.summary import ScanSummary
from exwatch.scan.targets import parse_ports
from exwatch.scan.transport import FakeRequest, FakeTransport

OWA_302 = b"HTTP/1.1 302 Found\r\nLocation: /owa/auth/logon.aspx\r\nContent-Length: 0\r\n\r\n"


def scan(
    handler: Any,
    targets: list[str],
    clock: FakeClock | None = None,
    **options: Any,
) -> tuple[ScanSummary, dict[str, dict[str, Any]], FakeTransport]:
    """A whole scan (memory store) over a FakeTransport, on the fake clock's virtual time."""
    options.setdefault("ports", parse_ports("443/https"))
    opts = ScanOptions(**options)
    records: dict[str, dict[str, Any]] = {}
    hooks = ScanHooks(on_record=lambda r: records.__setitem__(r["address"], r))
    run = ScanRun(targets, opts, "memory:", hooks=hooks)
    transport = FakeTransport(handler, timeout=opts.timeout)
    summary = (clock or FakeClock()).run(scan_async(run, transport))
    return summary, records, transport


# -- retries ---------------------------------------------------------------------------------------


def test_a_reset_is_retried_on_a_new_connection_and_a_refusal_is_not() -> None:
    resets = {"10.0.0.1": 1}

    def handler(req: FakeRequest) -> ProbeResponse | bytes:
        if req.address == "10.0.0.2":
            raise FetchError("refused", "connection refused")
        if resets.get(req.address, 0) > 0:
            resets[req.address] -= 1
            raise ConnectionResetError("reset by peer")
        return ProbeResponse(404, {"Server": "nginx"}, b"")

    clock = FakeClock()
    summary, records, transport = scan(handler, ["10.0.0.1", "10.0.0.2"], clock, retries=1)
    first = [r for r in transport.requests if r.address == "10.0.0.1"]
    assert [r.reuse for r in first[:2]] == [True, False]  # the retry opened a new connection
    assert records["10.0.0.1"]["status"] == "not_exchange"
    refused = [r for r in transport.requests if r.address == "10.0.0.2"]
    assert len(refused) == 1  # refused is not transient: no retry
    assert records["10.0.0.2"]["status"] == "unreachable" and records["10.0.0.2"]["error"] == "refused"
    assert summary.requests == len(transport.requests)
    assert summary.exit_code == 3  # nothing vulnerable, one host unreachable


def test_no_retry_when_retries_is_zero() -> None:
    def handler(req: FakeRequest) -> ProbeResponse:
        raise ConnectionResetError("reset by peer")

    _, records, transport = scan(handler, ["10.0.0.1"], retries=0)
    assert len(transport.requests) == 1
    assert records["10.0.0.1"]["error"] == "reset"


# -- a hostile server -------------------------------------------------------------------------------


def test_oversize_headers_are_read_but_not_kept() -> None:
    many = b"".join(b"X-Junk-%d: %d\r\n" % (i, i) for i in range(500))

    def handler(req: FakeRequest) -> bytes:
        return b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 2\r\n\r\nok"

    _, records, _ = scan(handler, ["10.0.0.1"], max_headers=100)
    notes = " ".join(records["10.0.0.1"]["notes"])
    assert "header line(s) over the cap ignored" in notes
    assert records["10.0.0.1"]["status"] == "not_exchange"


def test_a_head_over_one_megabyte_is_a_protocol_error() -> None:
    line = b"X-Junk: " + b"a" * 8000 + b"\r\n"

    def handler(req: FakeRequest) -> bytes:
        return b"HTTP/1.1 200 OK\r\n" + line * 200 + b"\r\n"

    _, records, _ = scan(handler, ["10.0.0.1"])
    assert records["10.0.0.1"]["status"] == "unreachable"
    assert records["10.0.0.1"]["error"] == "protocol"


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_an_oversize_body_is_cut_at_max_body(framing: str) -> None:
    body = b"<html>" + b"x" * 200_000 + b"</html>"
    seen: list[int] = []

    def handler(req: FakeRequest) -> bytes:
        if framing == "length":
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        if framing == "chunked":
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body)
                + body
                + b"\r\n0\r\n\r\n"
            )
        return b"HTTP/1.1 200 OK\r\n\r\n" + body

    transport = FakeTransport(handler)
    transport.limits.max_body = 4096

    async def one() -> None:
        from exwatch.scan.probes import ProbeRequest
        from exwatch.scan.transport import Endpoint

        channel = transport.open(Endpoint("10.0.0.1", 443, "https", "10.0.0.1"))
        resp = await channel.fetch(ProbeRequest("GET", "/"))
        seen.append(len(resp.body))
        seen.append(channel.truncated)

    FakeClock().run(one())
    assert seen == [4096, 1]


# -- time: the request timeout and the host budget on the fake clock ------------------------------------


def test_a_server_that_never_answers_costs_the_budget_in_virtual_time_only() -> None:
    async def handler(req: FakeRequest) -> ProbeResponse:
        await asyncio.sleep(3600)  # never answers (virtual time)
        raise AssertionError("unreachable")

    clock = FakeClock()
    start, real = clock.now, time.monotonic()
    _, records, transport = scan(handler, ["10.0.0.1"], clock, timeout=5.0, host_budget=30.0, retries=1)
    rec = records["10.0.0.1"]
    assert rec["error"] == "timeout" and rec["status"] == "unreachable"
    assert len(transport.requests) == 1  # a timeout after the request was sent is an answer, not retried
    assert rec["elapsed"] == pytest.approx(5.0, abs=0.01)  # the per-request timeout, on the fake clock
    assert clock.now - start >= 5.0
    assert time.monotonic() - real < 5.0  # no real wait


def test_the_host_budget_stops_a_slow_server_that_keeps_answering() -> None:
    async def handler(req: FakeRequest) -> bytes:
        await asyncio.sleep(4.0)  # each answer just inside the 5 s timeout
        return OWA_302

    clock = FakeClock()
    real = time.monotonic()
    _, records, transport = scan(handler, ["10.0.0.1"], clock, timeout=5.0, host_budget=10.0)
    rec = records["10.0.0.1"]
    assert rec["elapsed"] == pytest.approx(10.0, abs=0.01)
    assert len(transport.requests) == 3  # answers at 4 s and 8 s, the third cut by the budget at 10 s
    assert any("budget" in n for n in rec["notes"]) or rec["error"] == "budget"
    assert time.monotonic() - real < 5.0


# -- rate limits on the fake clock ------------------------------------------------------------------


def test_the_rate_limiter_spaces_requests_on_its_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    stamps: list[float] = []

    async def take(n: int) -> None:
        for _ in range(n):
            await limiter.wait()
            stamps.append(clock.time())

    real = time.monotonic()
    clock.run(take(5))
    gaps = [round(b - a, 6) for a, b in zip(stamps, stamps[1:], strict=False)]
    assert gaps == [0.1] * 4
    assert clock.sleeps == pytest.approx([0.1] * 4)
    assert time.monotonic() - real < 1.0


def test_per_host_buckets_are_shared_by_targets_on_one_address_and_dropped_after() -> None:
    gates = Gates(rate=0, per_host=5.0)
    a, b = gates.acquire("10.0.0.1"), gates.acquire("10.0.0.1")
    assert a.limiters[0] is b.limiters[0] and len(gates) == 1
    gates.release("10.0.0.1")
    assert len(gates) == 1
    gates.release("10.0.0.1")
    assert len(gates) == 0
    assert Gates(rate=0, per_host=0).acquire("10.0.0.1").limiters == []


def test_per_host_rate_in_a_whole_scan() -> None:
    def handler(req: FakeRequest) -> ProbeResponse:
        return ProbeResponse(404, {}, b"")

    clock = FakeClock()
    stamps: list[float] = []

    def timed(req: FakeRequest) -> ProbeResponse:
        stamps.append(clock.now)
        return handler(req)

    scan(timed, ["10.0.0.1"], clock, per_host=2.0)
    assert len(stamps) >= 3
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-6  # 2 requests per second to one address (burst 1)


# -- verdicts and exit codes: the lab's own handler, no sockets --------------------------------------


def lab_handler(specs: list[ServerSpec]) -> Any:
    """A FakeTransport handler that answers as the lab's servers do (``exwatch.lab.exchange.respond``)."""
    states = {}
    for spec in specs:
        state = ServerState(spec.name, spec.address, spec.variant, None, scheme=spec.scheme)
        state.set_build(spec.build)
        state.rules = rules_of(spec)
        states[spec.address] = state

    def handler(req: FakeRequest) -> bytes:
        headers = {k.lower(): v for k, v in req.headers.items()}
        headers["host"] = req.endpoint.host_header
        resp, _ = respond(states[req.address], Request(req.method, req.path, "HTTP/1.1", headers, req.body))
        if resp.abort:
            raise ConnectionResetError("aborted (no status line)")
        return resp.encode(head_only=req.method == "HEAD")

    return handler


def _unlearnable(spec: ServerSpec) -> bool:
    return spec.variant == "adfs" and str(spec.build).startswith("14.")


@pytest.mark.parametrize("probe", [False, True], ids=["passive", "probe"])
def test_every_verdict_of_a_drawn_fleet_equals_the_truth(probe: bool) -> None:
    specs = draw_fleet(80, seed=7, base_address="127.211.0.1", only_exchange=True)
    summary, records, _ = scan(lab_handler(specs), [s.address for s in specs], probe=probe)
    wrong = []
    for spec in specs:
        want = truth(spec) if probe else truth_passive(spec)
        if _unlearnable(spec):
            want = {w: ("mitigated" if s == "mitigated" else "unknown") for w, s in want.items()}
        got = {w: v["state"] for w, v in records[spec.address]["waves"].items()}
        if got != want:
            wrong.append(f"{spec.address} {spec.variant} {spec.build}: want {want} got {got}")
    assert wrong == []
    assert summary.hosts == 80
    vulnerable = sum(any(v["state"] == "vulnerable" for v in r["waves"].values()) for r in records.values())
    assert summary.vulnerable == vulnerable > 0
    assert summary.exit_code == 1


def test_exit_code_policy_over_a_whole_scan() -> None:
    patched = ServerSpec("p", "10.9.1.1", 443, "https", build="15.2.1544.4", variant="standard")
    specs = [patched]
    summary, records, _ = scan(lab_handler(specs), ["10.9.1.1"])
    assert records["10.9.1.1"]["status"] == "exchange"
    assert summary.exit_code == 0, records["10.9.1.1"]["waves"]

    def with_refused(req: FakeRequest) -> bytes:
        if req.address == "10.9.1.2":
            raise FetchError("refused", "connection refused")
        return lab_handler(specs)(req)  # type: ignore[no-any-return]

    summary, _, _ = scan(with_refused, ["10.9.1.1", "10.9.1.2"])
    assert (summary.vulnerable, summary.incomplete, summary.exit_code) == (0, 1, 3)

    old = ServerSpec("v", "10.9.1.3", 443, "https", build="15.1.2106.2", variant="standard")
    summary, records, _ = scan(lab_handler([patched, old]), ["10.9.1.1", "10.9.1.3"])
    assert records["10.9.1.3"]["waves"]["proxylogon"]["state"] == "vulnerable"
    assert summary.exit_code == 1
    # --wave: only the chosen waves decide; a wave the old server is patched against gives 0.
    chosen = [w for w, v in records["10.9.1.3"]["waves"].items() if v["state"] == "patched"]
    if chosen:
        summary, _, _ = scan(lab_handler([patched, old]), ["10.9.1.1", "10.9.1.3"], waves=(chosen[0],))
        assert summary.exit_code == 0


# -- error classes and the store writer ------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        (errno.ECONNREFUSED, "refused"),
        (errno.EHOSTUNREACH, "refused"),
        (errno.ENETUNREACH, "refused"),
        (errno.ETIMEDOUT, "timeout"),
        (errno.ECONNRESET, "reset"),
        (errno.EPIPE, "reset"),
        (errno.EIO, "reset"),
    ],
)
def test_os_errors_are_classified_by_errno_name(number: int, kind: str) -> None:
    assert classify(OSError(number, os.strerror(number))) == kind


class _Sink(MemorySink):
    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail_after = fail_after

    def add(self, scan_id: int, records: list[dict[str, Any]]) -> None:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise OSError(errno.ENOSPC, "disk full")
        self.batches.append(len(records))
        super().add(scan_id, records)


def test_the_store_writer_batches_and_flushes_a_partial_batch_on_its_own() -> None:
    sink = _Sink()
    scan_id = sink.start({}, None)
    writer = StoreWriter(sink, scan_id, batch_size=3, flush_interval=0.05)
    for i in range(7):
        writer.put({"key": f"k{i}"})
    deadline = time.monotonic() + 5
    while sum(sink.batches) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)  # the thread stores the last, partial batch without being told
    assert sink.batches[:2] == [3, 3] and sum(sink.batches) == 7
    writer.close()
    assert sink.done_keys(scan_id) == {f"k{i}" for i in range(7)}


def test_a_store_failure_reaches_the_scanning_side() -> None:
    sink = _Sink(fail_after=1)
    writer = StoreWriter(sink, sink.start({}, None), batch_size=2, flush_interval=10)
    for i in range(4):
        writer.put({"key": f"k{i}"})
    with pytest.raises(OSError, match="disk full"):
        writer.close()
