"""Server specifications of the lab fleet: what each emulated server is and how it behaves."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exwatch.errors import InputError
from exwatch.kb import WAVE_IDS
from exwatch.lab._catalogue import canonical, product_of

WAVES: tuple[str, ...] = WAVE_IDS  # what a server can be vulnerable to or mitigated for

# Exchange servers: how the front end answers besides its build and mitigations.
EXCHANGE_VARIANTS: dict[str, str] = {
    "standard": "X-OWA-Version on the 401 endpoints and /owa/service, X-FEServer, logon page, manifest",
    "no_owa_version": "never sends X-OWA-Version (the header is often missing on real servers)",
    "adfs": "claims authentication: /owa/ and /ecp/ redirect to a federation server",
    "no_exporttool": "/ecp/Current/exporttool/ answers 404; the versioned folder still answers",
    "proxy_strip": "behind a reverse proxy that strips identifying headers, blocks /ecp/ and turns aborts into 502",
}
# Other things a scan meets: plain web servers and unreachable ones.
OTHER_VARIANTS: dict[str, str] = {
    "iis": "a plain IIS 10 default site",
    "nginx": "a plain nginx welcome page",
    "refuse": "no listener: connections are refused",
    "reset": "accepts, then resets the connection (TCP RST) without answering",
    "silent": "accepts and never answers",
}
# Hostile servers: what a scanner must survive within its time and size budgets.
HOSTILE_VARIANTS: dict[str, str] = {
    "tarpit": "trickles a valid-looking response one byte a second",
    "endless_body": "200 with a body that never ends",
    "many_headers": "200 with 10,000 headers",
    "redirect_loop": "every path redirects to another path that redirects back",
    "garbage": "answers with bytes that are not HTTP",
    "bad_tls": "breaks the TLS handshake with a malformed record (plain TCP: garbage)",
}
VARIANTS: dict[str, str] = {**EXCHANGE_VARIANTS, **OTHER_VARIANTS, **HOSTILE_VARIANTS}
UNREACHABLE_VARIANTS = frozenset(
    {"refuse", "reset", "silent", "tarpit", "endless_body", "garbage", "bad_tls"}
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass
class ServerSpec:
    """One emulated server: where it listens, what it runs and how it behaves."""

    name: str
    address: str
    port: int
    scheme: str = "https"
    product: str = "Exchange 2016"
    build: str | None = None
    mitigations: list[str] = field(default_factory=list)
    variant: str = "standard"
    web_config: Path | None = None

    @property
    def is_exchange(self) -> bool:
        """True when this server runs an emulated Exchange front end."""
        return self.variant in EXCHANGE_VARIANTS and self.build is not None

    def to_dict(self) -> dict[str, object]:
        """The JSON form (the ``--spec`` file format)."""
        out: dict[str, object] = asdict(self)
        out["web_config"] = str(self.web_config) if self.web_config else None
        return out


def validate_spec(spec: ServerSpec) -> ServerSpec:
    """Check one spec; raise InputError with a one-line message naming the server."""
    where = f"server {spec.name!r}"
    if not _NAME_RE.match(spec.name):
        raise InputError(f"{where}: name must be 1-63 letters, digits, '.', '_' or '-'")
    try:
        addr = ipaddress.ip_address(spec.address)
    except ValueError as exc:
        raise InputError(f"{where}: bad address {spec.address!r}") from exc
    if not addr.is_loopback:
        raise InputError(f"{where}: the lab serves loopback addresses only (127.0.0.0/8), not {spec.address}")
    if not 0 < spec.port < 65536:
        raise InputError(f"{where}: bad port {spec.port}")
    if spec.scheme not in ("https", "http"):
        raise InputError(f"{where}: scheme must be https or http, not {spec.scheme!r}")
    if spec.variant not in VARIANTS:
        raise InputError(f"{where}: unknown variant {spec.variant!r} (known: {', '.join(VARIANTS)})")
    bad = [m for m in spec.mitigations if m not in WAVES]
    if bad:
        raise InputError(f"{where}: unknown mitigation {bad[0]!r} (known: {', '.join(WAVES)})")
    if spec.variant in EXCHANGE_VARIANTS and not spec.build:
        raise InputError(f"{where}: an Exchange variant needs a build")
    if spec.build:
        try:
            spec.build = canonical(spec.build)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
        spec.product = product_of(spec.build)
    return spec


def spec_from_dict(data: Any, index: int = 0) -> ServerSpec:
    """One spec from its JSON form; unknown keys and wrong types are input errors."""
    if not isinstance(data, dict):
        raise InputError(f"spec #{index}: expected an object, got {type(data).__name__}")
    known = {"name", "address", "port", "scheme", "product", "build", "mitigations", "variant", "web_config"}
    unknown = sorted(set(data) - known - {"truth", "truth_passive"})
    if unknown:
        raise InputError(f"spec #{index}: unknown key {unknown[0]!r}")
    for key in ("name", "address", "port"):
        if key not in data:
            raise InputError(f"spec #{index}: missing {key!r}")
    try:
        spec = ServerSpec(
            name=str(data["name"]),
            address=str(data["address"]),
            port=int(data["port"]),
            scheme=str(data.get("scheme", "https")),
            product=str(data.get("product") or ""),
            build=None if data.get("build") is None else str(data["build"]),
            mitigations=[str(m) for m in data.get("mitigations") or []],
            variant=str(data.get("variant", "standard")),
            web_config=Path(data["web_config"]) if data.get("web_config") else None,
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"spec #{index}: {exc}") from exc
    return validate_spec(spec)


def load_specs(path: Path) -> list[ServerSpec]:
    """Read a JSON list of server specs (the ``--spec`` file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read spec file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"spec file {path} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    if isinstance(data, dict) and "servers" in data:
        data = data["servers"]  # a manifest can be replayed as a spec
    if not isinstance(data, list):
        raise InputError(f"spec file {path}: expected a JSON list of server specs")
    specs = [spec_from_dict(item, i) for i, item in enumerate(data)]
    check_unique(specs)
    return specs


def check_unique(specs: list[ServerSpec]) -> None:
    """Names and (address, port) pairs must be unique across a fleet."""
    names: set[str] = set()
    sockets: set[tuple[str, int]] = set()
    for spec in specs:
        if spec.name in names:
            raise InputError(f"duplicate server name {spec.name!r}")
        if (spec.address, spec.port) in sockets:
            raise InputError(f"two servers on {spec.address}:{spec.port}")
        names.add(spec.name)
        sockets.add((spec.address, spec.port))
