"""The emulator's HTTP/1.1 request parser and response writer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exwatch.lab.http import HttpParseError, Response, parse_request


def test_parse_request_with_body_and_pipelining() -> None:
    data = b"POST /ews/exchange.asmx?a=1 HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\n\r\n"
    req, used = parse_request(data)
    assert req is not None
    assert (req.method, req.path, req.query, req.body) == ("POST", "/ews/exchange.asmx", "a=1", b"abc")
    assert req.headers["cookie"] == "a=1, b=2"
    second, used2 = parse_request(data[used:])
    assert second is not None and second.version == "HTTP/1.0" and not second.keep_alive
    assert used + used2 == len(data)


def test_incomplete_request_waits() -> None:
    assert parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n") == (None, 0)
    assert parse_request(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc") == (None, 0)


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000,
    ],
)
def test_bad_requests(data: bytes) -> None:
    with pytest.raises(HttpParseError):
        parse_request(data)


def test_absolute_form_target() -> None:
    req, _ = parse_request(b"GET https://h/owa/auth/logon.aspx?x HTTP/1.1\r\n\r\n")
    assert req is not None and req.path == "/owa/auth/logon.aspx"


@given(st.binary(max_size=2048))
def test_parser_never_fails_otherwise(data: bytes) -> None:
    try:
        req, used = parse_request(data)
    except HttpParseError:
        return
    assert (req is None and used == 0) or (req is not None and 0 < used <= len(data))


def test_response_encoding() -> None:
    resp = Response(401, [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")], b"")
    assert resp.encode() == (
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n"
    )
    moved = Response(302, [("Location", "/owa/")], b"body", reason="Moved Temporarily")
    assert moved.encode(head_only=True).endswith(b"Content-Length: 4\r\n\r\n")
    assert moved.encode().startswith(b"HTTP/1.1 302 Moved Temporarily\r\n")
