"""HTTP/1.1 wire helpers (pure)."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exwatch.scan.probes import ProbeRequest
from exwatch.scan.wire import (
    WireError,
    body_framing,
    decode_body,
    encode_request,
    parse_chunk_size,
    parse_header_line,
    parse_status_line,
)


def test_encode_request() -> None:
    data = encode_request(ProbeRequest("GET", "/owa/", {"User-Agent": "ua"}), "192.0.2.1", True, 443)
    assert (
        data
        == b"GET /owa/ HTTP/1.1\r\nHost: 192.0.2.1\r\nUser-Agent: ua\r\nAccept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n"
    )
    assert b"Host: mail.example:8443\r\n" in encode_request(
        ProbeRequest("GET", "/"), "mail.example", False, 8443
    )
    assert b"Host: [2001:db8::1]\r\n" in encode_request(ProbeRequest("GET", "/"), "2001:db8::1", True, 443)
    with pytest.raises(ValueError):
        encode_request(ProbeRequest("GET", "/", {"X": "a\r\nInjected: 1"}), "h", True, 443)


def test_status_and_headers() -> None:
    assert parse_status_line(b"HTTP/1.1 302 Moved Temporarily\r\n") == 302
    assert parse_status_line(b"HTTP/1.0 200\r\n") == 200
    for bad in (b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 2000 x\r\n", b"\x16\x03\x01", b"HTTP/2 200\r\n"):
        with pytest.raises(WireError):
            parse_status_line(bad)
    assert parse_header_line(b"X-OWA-Version: 15.1.2507.16\r\n") == ("X-OWA-Version", "15.1.2507.16")
    with pytest.raises(WireError):
        parse_header_line(b"no colon here\r\n")


def test_framing_and_chunks() -> None:
    assert body_framing(200, "GET", {"Content-Length": "12"}) == ("length", 12)
    assert body_framing(200, "GET", {"transfer-encoding": "chunked"}) == ("chunked", None)
    assert body_framing(304, "GET", {"Content-Length": "12"}) == ("none", 0)
    assert body_framing(200, "GET", {}) == ("close", None)
    with pytest.raises(WireError):
        body_framing(200, "GET", {"Content-Length": "-1"})
    assert parse_chunk_size(b"1a;ext=1\r\n") == 26
    with pytest.raises(WireError):
        parse_chunk_size(b"zz\r\n")


def test_decode_body_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * 10_000_000)
    out, truncated = decode_body(bomb, {"Content-Encoding": "gzip"}, 65536)
    assert len(out) == 65536 and truncated
    assert decode_body(b"plain", {}, 10) == (b"plain", False)
    assert decode_body(b"not gzip", {"Content-Encoding": "gzip"}, 10) == (b"not gzip", False)


@given(st.binary(max_size=200))
def test_status_line_never_crashes(data: bytes) -> None:
    try:
        assert 100 <= parse_status_line(data) <= 999
    except WireError:
        pass
