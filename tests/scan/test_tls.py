"""TLS: the peer certificate is read with verification off, and a TLS 1.3-only server is still reached."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exwatch.scan.engine import Connection
from exwatch.scan.fingerprint import cert_names
from exwatch.scan.probes import ProbeRequest


def _server_context(tmp: Path, minimum: ssl.TLSVersion) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EX13ONLY")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.tls13.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = minimum
    ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    return ctx


@pytest.mark.integration
@pytest.mark.parametrize(
    "minimum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13-only"]
)
def test_tls_versions_and_peer_names(tmp_path: Path, minimum: ssl.TLSVersion) -> None:
    server_ctx = _server_context(tmp_path, minimum)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 401 Unauthorized\r\nX-OWA-Version: 15.2.1544.11\r\nContent-Length: 0\r\n\r\n"
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> tuple[int | None, list[str], str]:
        server = await asyncio.start_server(handle, "127.20.7.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            from exwatch.scan.engine import client_tls_context

            conn = Connection(
                "127.20.7.1",
                port,
                "https",
                tls=client_tls_context(),
                tls_fallback=client_tls_context(tls13=True),
            )
            resp = await conn.fetch(ProbeRequest("GET", "/owa/service"))
            version = conn._writer.get_extra_info("ssl_object").version() if conn._writer else ""  # noqa: SLF001
            conn.close()
            return resp.status, cert_names(conn.peer_cert), str(version)

    status, names, version = asyncio.run(main())
    assert status == 401
    assert names == ["EX13ONLY", "mail.tls13.example"]
    assert version == ("TLSv1.3" if minimum == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
