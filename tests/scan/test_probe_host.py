"""``engine.probe_host`` over real sockets against a tiny IIS-like server with the three probe behaviours."""

from __future__ import annotations

import asyncio

import pytest

from exwatch.scan.engine import probe_host


async def _serve(mode: str) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                text = head.decode("latin-1")
                cookie = "X-AnonResource-Backend" in text
                if mode == "mitigated" and cookie:
                    writer.transport.abort()  # what an IIS AbortRequest rule looks like to the client
                    return
                extra = "X-CalculatedBETarget: localhost\r\n" if (mode == "vulnerable" and cookie) else ""
                status = "500 Internal Server Error" if extra else "404 Not Found"
                writer.write(f"HTTP/1.1 {status}\r\n{extra}Content-Length: 3\r\n\r\nabc".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.20.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


@pytest.mark.integration
@pytest.mark.parametrize(
    ("mode", "outcome"), [("vulnerable", "vulnerable"), ("mitigated", "mitigated"), ("patched", "patched")]
)
def test_probe_host_proxylogon(mode: str, outcome: str) -> None:
    async def main() -> str:
        server, port = await _serve(mode)
        async with server:
            result = await probe_host("127.20.0.1", port, "http", "proxylogon", timeout=3.0)
            return result.outcome

    assert asyncio.run(main()) == outcome


@pytest.mark.integration
def test_probe_host_unreachable() -> None:
    async def main() -> tuple[str, str]:
        server, port = await _serve("patched")
        server.close()
        await server.wait_closed()
        result = await probe_host("127.20.0.1", port, "http", "proxylogon", timeout=2.0)
        return result.outcome, result.reason

    outcome, reason = asyncio.run(main())
    assert outcome == "inconclusive"
    assert "refused" in reason
