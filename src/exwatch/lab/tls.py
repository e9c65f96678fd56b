"""The fleet's certificate authority: one CA, one shared server key, a certificate naming each server.

Certificates and SSL contexts are made lazily, on a server's first TLS connection, and cached: a
2,000-server fleet starts without signing 2,000 certificates up front. ECDSA P-256 keeps signing cheap.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC)


class FleetCA:
    """A per-fleet CA; ``context_for(name, address, fqdn)`` gives a server-side SSLContext for one server."""

    def __init__(self, directory: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="exwatch-lab-tls-") if directory is None else None
        self.directory: Path = Path(self._tmp.name) if self._tmp is not None else Path(str(directory))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "exwatch lab"),
                x509.NameAttribute(NameOID.COMMON_NAME, "exwatch lab fleet CA"),
            ]
        )
        self._ca_name = name
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()), critical=False
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_pem = self.ca_cert.public_bytes(serialization.Encoding.PEM)
        self.ca_path = self.directory / "ca.pem"
        self.ca_path.write_bytes(self.ca_pem)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._key_path = self.directory / "server-key.pem"
        self._key_path.write_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._serial = 1

    def certificate(self, name: str, address: str, fqdn: str) -> x509.Certificate:
        """A server certificate for ``fqdn`` with the short name, the FQDN and the address as SANs."""
        self._serial += 1
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)]))
            .issuer_name(self._ca_name)
            .public_key(self._key.public_key())
            .serial_number(self._serial)
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(fqdn),
                        x509.DNSName(name.lower()),
                        x509.IPAddress(ipaddress.ip_address(address)),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )

    def context_for(self, name: str, address: str, fqdn: str) -> ssl.SSLContext:
        """The cached server-side context of one server (made on first use)."""
        ctx = self._contexts.get(name)
        if ctx is None:
            cert = self.certificate(name, address, fqdn)
            path = self.directory / f"{name}.pem"
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.ca_pem)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(path), str(self._key_path))
            self._contexts[name] = ctx
        return ctx

    def close(self) -> None:
        """Remove the temporary directory (when the CA made one)."""
        if self._tmp is not None:
            self._tmp.cleanup()
