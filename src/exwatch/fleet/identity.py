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
from typing import NamedTuple

from exwatch.record import Observation

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class Identity(NamedTuple):
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


def identity_of(record: Observation) -> Identity:
    """The identity an observation record gives (``cert_sha256`` or the sorted ``cert_names``)."""
    # Hot path of ingest: plain str methods, no helper calls for the common shapes.
    cert = record.get("cert_sha256")
    if cert:
        cert = str(cert).strip().lower() or None
    else:
        names = record.get("cert_names")
        if not names:
            cert = None
        elif isinstance(names, str):
            cert = names.strip().lower() or None
        elif len(names) == 1:
            cert = str(names[0]).strip().lower() or None
        else:
            cert = ",".join(sorted({str(n).strip().lower() for n in names if n})) or None
    address = record.get("address")
    address = str(address).strip().lower() or None if address else None
    name = record.get("name")
    name = str(name).strip().lower() or None if name else None
    if name is not None and name == address:
        name = None
    fe = record.get("fe_server")
    fe = str(fe).strip().lower() or None if fe else None
    return Identity(address, name, fe, cert)


class HostIndex:
    """Every known host's identity, with lookups by each identifier."""

    def __init__(self) -> None:
        self.hosts: dict[int, Identity] = {}
        self._by_address: dict[str, int] = {}
        self._by_name: dict[str, int] = {}
        self._by_fe_cert: dict[tuple[str, str], int] = {}
        self._by_fingerprint: dict[str, int] = {}
        self._aliases: dict[str, int] = {}

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

    def alias(self, host_id: int, ident: Identity) -> None:
        """Identifiers of a host merged into ``host_id`` (``hosts merge``): they now name that host."""
        for value in (ident.name, ident.address, ident.cert):
            if value:
                self._aliases[value] = host_id

    def match(self, ident: Identity) -> int | None:
        """The known host this identity belongs to, or None for a new host."""
        found = self._match(ident)
        if found is None and self._aliases:
            for value in (ident.name, ident.address, ident.cert):
                if value and value in self._aliases:
                    return self._aliases[value]
        return found

    def _match(self, ident: Identity) -> int | None:
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


def _conflict(known: Identity, seen: Identity) -> bool:
    fe_differs = bool(known.fe_server and seen.fe_server and known.fe_server != seen.fe_server)
    cert_differs = bool(known.cert and seen.cert and known.cert != seen.cert)
    return fe_differs and cert_differs
