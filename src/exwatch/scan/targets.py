"""Scan targets: parsing, streaming expansion, shuffling and the scope check (pure, no network).

A target line is ``TARGET [key=value ...] [# comment]`` where TARGET is an address, a CIDR, a range
(``a.b.c.d-e.f.g.h`` or ``a.b.c.d-h``), a host name or a URL (its scheme and port are used). A file of
such lines is read lazily; the JSON manifest of ``exwatch lab serve`` is recognised by its content.
Everything is expanded as an iterator so that a million targets never sit in memory at once.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import os
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from exwatch.errors import InputError, ScopeError

LARGE = 1 << 16  # ranges larger than a /16 need --yes-large
HTTP_PORTS = frozenset({80, 8000, 8008, 8080})
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?:\.(?!-)[A-Za-z0-9-]{1,63})*\.?$")
_TAG = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]{0,63})=(.{0,256})$")
_SHORT_RANGE = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})$")
# host:port (an IPv4 address or a name) and [IPv6]:port, [IPv6] alone
_HOST_PORT = re.compile(r"^([^:\[\]/]+):(\d{1,5})$")
_V6_PORT = re.compile(r"^\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\](?::(\d{1,5}))?$")


class TargetError(InputError):
    """A target line that cannot be parsed; ``line`` is its 1-based line number (0 for an argument)."""

    def __init__(self, message: str, source: str = "argument", line: int = 0) -> None:
        where = f"{source}:{line}: " if line else f"{source}: " if source != "argument" else ""
        super().__init__(f"{where}{message}")
        self.source = source
        self.line = line


@dataclass(frozen=True, slots=True)
class Target:
    """One (host, port, scheme) to scan, with the text it came from and its tags."""

    host: str
    port: int
    scheme: str
    text: str
    tags: tuple[tuple[str, str], ...] = ()
    name: str | None = None  # a host name (SNI and Host header); None for addresses

    @property
    def host_id(self) -> str:
        """The host this service belongs to within one scan: the name given, else the address."""
        return self.name or self.host

    @property
    def key(self) -> str:
        """Unique per scan: what resume uses."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Spec:
    """One parsed target specification, before expansion over ports."""

    kind: str  # address | range | name | url
    first: int = 0  # ranges and addresses: integer bounds (inclusive)
    last: int = 0
    version: int = 4
    host: str = ""
    port: int | None = None
    scheme: str | None = None
    text: str = ""
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def size(self) -> int:
        """How many addresses (1 for a name or URL)."""
        return self.last - self.first + 1 if self.kind in ("address", "range") else 1


@dataclass(frozen=True)
class Port:
    """A port and the scheme spoken on it."""

    number: int
    scheme: str


def parse_ports(text: str) -> tuple[Port, ...]:
    """``443,80`` or ``8443/https,8080/http``; 80/8000/8008/8080 default to http, the rest to https."""
    out: list[Port] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        num, _, scheme = item.partition("/")
        if not num.isdigit() or not 0 < int(num) < 65536:
            raise InputError(f"bad port {item!r} in --ports (expected e.g. 443,80 or 8443/https)")
        scheme = scheme.lower() or ("http" if int(num) in HTTP_PORTS else "https")
        if scheme not in ("http", "https"):
            raise InputError(f"bad scheme {scheme!r} in --ports (http or https)")
        port = Port(int(num), scheme)
        if port not in out:
            out.append(port)
    if not out:
        raise InputError("--ports names no port")
    return tuple(out)


def _ip_int(text: str) -> tuple[int, int] | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    return int(addr), addr.version


def int_to_ip(value: int, version: int) -> str:
    """An integer address back to text."""
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def parse_spec(text: str, *, source: str = "argument", line: int = 0) -> Spec:
    """Parse one target (address, CIDR, range, name or URL) with optional ``key=value`` tags after it."""
    body = text.split(" #", 1)[0].split("\t#", 1)[0].strip()
    if not body or body.startswith("#"):
        raise TargetError("empty target", source, line)
    words = body.split()
    head, rest = words[0], words[1:]
    tags: list[tuple[str, str]] = []
    for word in rest:
        m = _TAG.match(word)
        if not m:
            raise TargetError(
                f"unexpected {word[:40]!r} after target {head[:60]!r} (tags are key=value)", source, line
            )
        tags.append((m.group(1), m.group(2)))
    s = _parse_head(head, source, line)
    return Spec(s.kind, s.first, s.last, s.version, s.host, s.port, s.scheme, head, tuple(tags))


def _parse_head(head: str, source: str, line: int) -> Spec:
    if len(head) > 2048:
        raise TargetError("target longer than 2048 characters", source, line)
    if "://" in head:
        try:
            parts = urlsplit(head)
            port = parts.port
        except ValueError as exc:
            raise TargetError(f"bad URL {head[:60]!r}: {exc}", source, line) from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise TargetError(f"unsupported URL scheme {scheme!r} (http or https)", source, line)
        host = parts.hostname or ""
        if not host:
            raise TargetError(f"URL without a host: {head[:60]!r}", source, line)
        port = port or (443 if scheme == "https" else 80)
        ip = _ip_int(host)
        if ip is not None:
            return Spec("url", ip[0], ip[0], ip[1], int_to_ip(*ip), port, scheme)
        if not _HOSTNAME.match(host):
            raise TargetError(f"bad host name in URL {head[:60]!r}", source, line)
        return Spec("url", host=host.rstrip(".").lower(), port=port, scheme=scheme)
    ip = _ip_int(head)
    if ip is not None:
        return Spec("address", ip[0], ip[0], ip[1], int_to_ip(*ip))
    host_port = _host_port(head, source, line)
    if host_port is not None:
        return host_port
    if "/" in head:
        try:
            net = ipaddress.ip_network(head, strict=False)
        except ValueError as exc:
            raise TargetError(f"bad CIDR {head[:60]!r}: {exc}", source, line) from exc
        return Spec("range", int(net.network_address), int(net.broadcast_address), net.version)
    if "-" in head and head[0].isdigit():
        m = _SHORT_RANGE.match(head)
        if m:
            start_text, end_text = m.group(1) + m.group(2), m.group(1) + m.group(3)
        else:
            start_text, _, end_text = head.partition("-")
        a, b = _ip_int(start_text.strip()), _ip_int(end_text.strip())
        if a is None or b is None or a[1] != b[1]:
            raise TargetError(f"bad range {head[:60]!r} (a.b.c.d-e.f.g.h or a.b.c.d-h)", source, line)
        if b[0] < a[0]:
            raise TargetError(f"range {head[:60]!r} ends before it starts", source, line)
        return Spec("range", a[0], b[0], a[1])
    if _HOSTNAME.match(head) and not head.replace(".", "").isdigit():
        return Spec("name", host=head.rstrip(".").lower())
    raise TargetError(f"not an address, CIDR, range, host name or URL: {head[:60]!r}", source, line)


def _host_port(head: str, source: str, line: int) -> Spec | None:
    """``host:port``, ``[v6]:port`` or ``[v6]``: one service (the scheme follows the port: 80, 8000,
    8008 and 8080 speak http, the rest https); None if ``head`` has neither form."""
    m = _V6_PORT.match(head)
    if m:
        host, port_text = m.group(1), m.group(2)
        ip = _ip_int(host.split("%", 1)[0])
        if ip is None or ip[1] != 6:
            raise TargetError(f"bad IPv6 address in {head[:60]!r}", source, line)
        if port_text is None:
            return Spec("address", ip[0], ip[0], 6, int_to_ip(*ip))
    else:
        m = _HOST_PORT.match(head)
        if not m:
            return None
        host, port_text = m.group(1), m.group(2)
        ip = _ip_int(host)
        if ip is None and (not _HOSTNAME.match(host) or host.replace(".", "").isdigit()):
            raise TargetError(f"bad host in {head[:60]!r} (host:port or [IPv6]:port)", source, line)
    port = int(port_text)
    if not 0 < port < 65536:
        raise TargetError(f"bad port {port} in {head[:60]!r}", source, line)
    scheme = "http" if port in HTTP_PORTS else "https"
    if ip is not None:
        return Spec("url", ip[0], ip[0], ip[1], int_to_ip(*ip), port, scheme)
    return Spec("url", host=host.rstrip(".").lower(), port=port, scheme=scheme)


# -- reading files ----------------------------------------------------------------------------


def _check_text(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        raise InputError(f"cannot read targets file {path}: {exc.strerror or exc}") from exc
    if b"\x00" in head:
        raise InputError(f"targets file {path} is not a text file (it contains NUL bytes)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a cut multi-byte character at the end is fine
            raise InputError(f"targets file {path} is not UTF-8 text (byte {exc.start})") from exc
    return head


def is_manifest(head: bytes) -> bool:
    """Does a file's start look like the JSON manifest of ``exwatch lab serve``?"""
    stripped = head.lstrip()
    return stripped.startswith(b"{") and b'"servers"' in head


_MANIFEST_CACHE: dict[tuple[str, int, int], list[Spec]] = {}


def manifest_specs(path: Path) -> list[Spec]:
    """The servers of a lab manifest as URL specs (address, port and scheme exactly as served).

    A scan reads its targets twice (counted, then streamed): the specs of an unchanged manifest (same
    path, size and modification time) are parsed once (16 ms for 1,000 servers here).
    """
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from exc
    cached = _MANIFEST_CACHE.get(key)
    if cached is None:
        cached = _parse_manifest(path)
        _MANIFEST_CACHE.clear()  # one manifest kept: bounded memory
        _MANIFEST_CACHE[key] = cached
    return list(cached)


def _parse_manifest(path: Path) -> list[Spec]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from exc
    servers = data.get("servers") if isinstance(data, dict) else None
    if not isinstance(servers, list):
        raise InputError(f"{path}: a JSON object without a 'servers' list is not a lab manifest")
    out: list[Spec] = []
    for i, srv in enumerate(servers):
        try:
            address, port, scheme = str(srv["address"]), int(srv["port"]), str(srv.get("scheme", "https"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: server #{i} lacks address/port: {exc}") from exc
        ip = _ip_int(address)
        if ip is None or scheme not in ("http", "https"):
            raise InputError(f"{path}: server #{i} has a bad address or scheme")
        tags = (("lab", str(srv.get("name", i))),)
        out.append(
            Spec(
                "url", ip[0], ip[0], ip[1], int_to_ip(*ip), port, scheme, f"{scheme}://{address}:{port}", tags
            )
        )
    return out


@dataclass
class Problem:
    """A target line that was skipped, with where it was."""

    source: str
    line: int
    message: str


def read_specs(path: Path, problems: list[Problem] | None = None) -> Iterator[Spec]:
    """Stream the specs of a targets file; bad lines go to ``problems`` (with line numbers) and are skipped."""
    head = _check_text(path)
    if is_manifest(head):
        yield from manifest_specs(path)
        return
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, 1):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            try:
                yield parse_spec(text, source=str(path), line=number)
            except TargetError as exc:
                if problems is None:
                    raise
                problems.append(Problem(str(path), number, str(exc)))


@dataclass
class TargetSet:
    """The user's targets: command-line items and files, parsed lazily (re-iterable)."""

    items: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    ports: tuple[Port, ...] = (Port(443, "https"), Port(80, "http"))
    problems: list[Problem] = field(default_factory=list)

    def specs(self) -> Iterator[Spec]:
        """Every spec, command-line items first, then files in order."""
        self.problems.clear()
        for item in self.items:
            if "://" not in item and not _looks_like_cidr(item) and Path(item).is_file():
                yield from read_specs(Path(item), self.problems)
                continue
            try:
                yield parse_spec(item)
            except TargetError as exc:
                self.problems.append(Problem("argument", 0, str(exc)))
        for path in self.files:
            yield from read_specs(path, self.problems)

    def check(self, yes_large: bool) -> tuple[int, list[Problem]]:
        """One streaming pass before anything is sent: the size guard and the bad lines.

        Returns (number of targets, problems). Raises ScopeError for a range over a /16 without yes_large.
        """
        total = 0
        for spec in self.specs():
            if spec.size > LARGE and not yes_large:
                raise ScopeError(
                    f"{spec.text} has {spec.size:,} addresses, more than a /16 (65,536): "
                    "pass --yes-large if this scan is authorised"
                )
            total += spec.size * (1 if spec.port else len(self.ports))
        return total, list(self.problems)

    def __iter__(self) -> Iterator[Target]:
        return expand(self.specs(), self.ports)


def _looks_like_cidr(item: str) -> bool:
    head = (item.split() or [""])[0]
    try:
        ipaddress.ip_network(head, strict=False)
    except ValueError:
        return False
    return True


def _permuted(first: int, last: int, rng: random.Random) -> Iterator[int]:
    """Every integer of [first, last] once, in a pseudo-random order, in O(1) memory.

    A full-period linear congruential generator modulo the next power of two m >= n visits each residue
    once when c is odd and a = 1 (mod 4) (Hull-Dobell); values >= n are skipped (fewer than half).
    """
    n = last - first + 1
    if n <= 2:
        yield from range(first, last + 1)
        return
    m = 1 << (n - 1).bit_length()
    a = (rng.randrange(m // 4 or 1) * 4 + 1) % m or 1
    c = rng.randrange(m) | 1
    x = rng.randrange(m)
    for _ in range(m):
        x = (a * x + c) % m
        if x < n:
            yield first + x


def expand(
    specs: Iterable[Spec], ports: tuple[Port, ...], rng: random.Random | None = None
) -> Iterator[Target]:
    """Targets of every spec over the ports (a URL keeps its own); ranges permuted when ``rng`` is given."""
    for spec in specs:
        if spec.kind == "url":
            assert spec.port is not None and spec.scheme is not None
            yield Target(
                spec.host,
                spec.port,
                spec.scheme,
                spec.text,
                spec.tags,
                None if spec.first or spec.last else spec.host,
            )
            continue
        if spec.kind == "name":
            for p in ports:
                yield Target(spec.host, p.number, p.scheme, spec.text, spec.tags, spec.host)
            continue
        values: Iterable[int]
        if rng is not None and spec.size > 2:
            values = _permuted(spec.first, spec.last, rng)
        else:
            values = range(spec.first, spec.last + 1)
        for value in values:
            host = int_to_ip(value, spec.version)
            for p in ports:
                yield Target(host, p.number, p.scheme, spec.text, spec.tags, None)


def host_groups(targets: Iterable[Target]) -> Iterator[list[Target]]:
    """Consecutive targets of one host (its ports) as one list."""
    group: list[Target] = []
    for target in targets:
        if group and target.host_id != group[-1].host_id:
            yield group
            group = []
        group.append(target)
    if group:
        yield group


def window_shuffle(items: Iterable[Target], rng: random.Random, window: int = 4096) -> Iterator[Target]:
    """Shuffle a stream with bounded memory: keep ``window`` hosts, emit a random one as each arrives.

    A host's ports stay together (in their order), so that the scan can fold a host's services as soon
    as they are done.
    """
    buf: list[list[Target]] = []
    for group in host_groups(items):
        if len(buf) < window:
            buf.append(group)
            continue
        i = rng.randrange(window)
        buf[i], group = group, buf[i]
        yield from group
    rng.shuffle(buf)
    for group in buf:
        yield from group


# -- scope ------------------------------------------------------------------------------------


_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(address: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if any: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible
    (``::a.b.c.d``, deprecated), 6to4 (``2002:AABB:CCDD::/48``), NAT64 (``64:ff9b::/96`` of RFC 6052 and
    the local-use ``64:ff9b:1::/48`` of RFC 8215, last 32 bits) and Teredo (the client's address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64) or (ip in _V4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_views(address: str) -> list[tuple[int, int]]:
    """Every (integer, version) form under which an address must pass the scope check ([] if it is not
    an address): itself, the IPv4 address it embeds, and an IPv4 address's IPv4-mapped IPv6 form."""
    ip = _ip_int(address.split("%", 1)[0])
    if ip is None:
        return []
    views = [ip]
    if ip[1] == 4:
        views.append((int(ipaddress.IPv6Address(0xFFFF00000000 | ip[0])), 6))
    else:
        inner = embedded_ipv4(address)
        if inner is not None:
            views.append((int(inner), 4))
    return views


class Exclusions:
    """Addresses, networks and names not to contact; files are re-read when they change (opt-outs mid-scan)."""

    def __init__(
        self, items: Iterable[str] = (), files: Iterable[Path] = (), *, recheck: float = 2.0
    ) -> None:
        self.items = tuple(items)
        self.files = tuple(Path(f) for f in files)
        self.recheck = recheck
        self._mtimes: dict[Path, float] = {}
        self._checked = 0.0
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        self._names: set[str] = set()
        self.load()

    def load(self) -> None:
        """(Re)build the interval tables from the items and files."""
        specs: list[Spec] = [parse_spec(i, source="--exclude") for i in self.items]
        for path in self.files:
            try:
                self._mtimes[path] = os.stat(path).st_mtime
            except OSError as exc:
                raise InputError(f"cannot read exclusions file {path}: {exc.strerror}") from exc
            specs.extend(read_specs(path))
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        names: set[str] = set()
        for spec in specs:
            if spec.kind in ("address", "range") or (spec.kind == "url" and (spec.first or spec.last)):
                ranges[spec.version].append((spec.first, spec.last))
            else:
                names.add(spec.host)
        for version, items in ranges.items():
            merged: list[tuple[int, int]] = []
            for a, b in sorted(items):
                if merged and a <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], b))
                else:
                    merged.append((a, b))
            self._starts[version] = [a for a, _ in merged]
            self._ends[version] = [b for _, b in merged]
        self._names = names

    def refresh(self) -> None:
        """Re-read the files if one changed (at most every ``recheck`` seconds)."""
        if not self.files:
            return
        now = time.monotonic()
        if now - self._checked < self.recheck:
            return
        self._checked = now
        for path in self.files:
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue  # a vanished file keeps its last exclusions: never widen the scope by accident
            if self._mtimes.get(path) != mtime:
                self.load()
                return

    def address_excluded(self, address: str) -> bool:
        """Is this address inside an exclusion? An IPv6 address that embeds an IPv4 one (IPv4-mapped,
        IPv4-compatible, 6to4, NAT64, Teredo) is checked as that IPv4 address too, and an IPv4 address
        as its IPv4-mapped IPv6 form too: one host, whatever the spelling."""
        views = address_views(address)
        if not views:
            return True  # not an address: never connect to it
        return any(self._inside(value, version) for value, version in views)

    def _inside(self, value: int, version: int) -> bool:
        starts = self._starts[version]
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[version][i]

    def name_excluded(self, name: str) -> bool:
        """Is this host name excluded?"""
        return name.rstrip(".").lower() in self._names

    def __bool__(self) -> bool:
        return bool(self._names or self._starts[4] or self._starts[6])


def connect_allowed(target: Target, address: str, exclusions: Exclusions) -> bool:
    """The scope check at the point of connection (after DNS): the target's own address, not excluded.

    An address target may only connect to itself; a name target to the addresses it resolved to. Either
    way the address must not be excluded.
    """
    if exclusions.address_excluded(address):
        return False
    if target.name is None:
        return _ip_int(address) == _ip_int(target.host)
    return not exclusions.name_excluded(target.name)
