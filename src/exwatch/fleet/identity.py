"""Knowing a host again across scans: pure matching on address, DNS name, X-FEServer and certificate.

The rules, in order (the first that matches wins):

1. the same DNS **name** (a name the user scans is the host, whatever address it has today);
2. the same **address**, unless both the X-FEServer and the certificate are known on both sides and
   both differ (then another server took the address);
3. the same **X-FEServer and certificate** together (the server moved to another address);
4. the same certificate **fingerprint** (a SHA-256 hex digest is unique to one server).

X-FEServer alone is never enough: internal names such as ``EXCH01`` repeat across organisations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Identity:
    """The identifiers one observation gives of a host (lower-cased; None when unknown)."""

    address: str | None = None
    name: str | None = None
    fe_server: str | None = None
    cert: str | None = None

    def merged(self, newer: Identity) -> Identity:
        """This identity updated with every identifier the newer observation knows."""
        return Identity(
            address=newer.address or self.address,
            name=newer.name or self.name,
            fe_server=newer.fe_server or self.fe_server,
            cert=newer.cert or self.cert,
        )


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


def identity_of(record: dict[str, Any]) -> Identity:
    """The identity an observation record gives (``cert_sha256`` or the sorted ``cert_names``)."""
    cert = _clean(record.get("cert_sha256"))
    if cert is None:
        names = record.get("cert_names") or []
        if isinstance(names, str):
            names = [names]
        cert = _clean(",".join(sorted({str(n).lower() for n in names if n})))
    name = _clean(record.get("name"))
    address = _clean(record.get("address"))
    if name is not None and name == address:
        name = None
    return Identity(address=address, name=name, fe_server=_clean(record.get("fe_server")), cert=cert)


class HostIndex:
    """Every known host's identity, with lookups by each identifier."""

    def __init__(self) -> None:
        self.hosts: dict[int, Identity] = {}
        self._by_address: dict[str, int] = {}
        self._by_name: dict[str, int] = {}
        self._by_fe_cert: dict[tuple[str, str], int] = {}
        self._by_fingerprint: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.hosts)

    def put(self, host_id: int, ident: Identity) -> None:
        """Record (or update) a host's identity."""
        self.hosts[host_id] = ident
        if ident.address:
            self._by_address[ident.address] = host_id
        if ident.name:
            self._by_name[ident.name] = host_id
        if ident.fe_server and ident.cert:
            self._by_fe_cert[(ident.fe_server, ident.cert)] = host_id
        if ident.cert and _FINGERPRINT.match(ident.cert):
            self._by_fingerprint[ident.cert] = host_id

    def match(self, ident: Identity) -> int | None:
        """The known host this identity belongs to, or None for a new host."""
        if ident.name and ident.name in self._by_name:
            return self._by_name[ident.name]
        if ident.address and ident.address in self._by_address:
            host_id = self._by_address[ident.address]
            known = self.hosts[host_id]
            if known.address == ident.address and not _conflict(known, ident):
                return host_id
        if ident.fe_server and ident.cert and (ident.fe_server, ident.cert) in self._by_fe_cert:
            return self._by_fe_cert[(ident.fe_server, ident.cert)]
        if ident.cert and ident.cert in self._by_fingerprint:
            return self._by_fingerprint[ident.cert]
        return None

    def find(self, text: str) -> list[int]:
        """Hosts a user's word names: an id (``#12`` or ``12``), an address, a DNS name or an X-FEServer."""
        word = text.strip().lower()
        if word.lstrip("#").isdigit() and int(word.lstrip("#")) in self.hosts:
            return [int(word.lstrip("#"))]
        found = [
            host_id
            for host_id, ident in self.hosts.items()
            if word in (ident.address, ident.name, ident.fe_server)
        ]
        return sorted(found)


def _conflict(known: Identity, seen: Identity) -> bool:
    fe_differs = bool(known.fe_server and seen.fe_server and known.fe_server != seen.fe_server)
    cert_differs = bool(known.cert and seen.cert and known.cert != seen.cert)
    return fe_differs and cert_differs
