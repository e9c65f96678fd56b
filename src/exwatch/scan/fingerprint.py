"""Learn an Exchange server's build from its HTTP answers (pure, sans-IO: requests out, responses in).

Sources in the order of fingerprinting.md 1 and 4.5: the ``X-OWA-Version`` header (full build), the OWA
logon page's asset path (``owa-path``: the CU only on 2013 and later, the full build on 2010), the
eDiscovery export tool manifest (``exporttool``: full build), then bounded probing of the versioned ECP
folder over the catalogue's builds for that CU (``ecp-folder``). ``X-ServerApplication`` is read when a
response happens to carry it. ``X-FEServer`` and the TLS certificate's names identify the host.

:class:`Fingerprinter` is a planner: :meth:`Fingerprinter.steps` is a generator that yields the next
request and receives its response, so the engine does the IO and this module stays testable from tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from exwatch.scan.probes import USER_AGENT, ProbeRequest, ProbeResponse

SOURCES = ("x-owa-version", "owa-path", "exporttool", "ecp-folder", "x-serverapplication")
EXPORTTOOL_PATH = "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application"
EXPORTTOOL_APP = "microsoft.exchange.ediscovery.exporttool.application"
EXPORTTOOL_DEP = "microsoft.exchange.ediscovery.exporttool"
MAX_FOLDER_PROBES = 40
ECP_ABSENT = frozenset({404, 410})  # /ecp/ not published here: no versioned folder can answer either

_BUILD4 = re.compile(r"^\s*(\d{1,2})\.(\d{1,2})\.(\d{1,5})\.(\d{1,5})\s*$")
_BUILD_ANY = re.compile(r"^\s*(\d{1,2})\.(\d{1,2})\.(\d{1,5})(?:\.(\d{1,5}))?\s*$")
# nuclei: /owa/auth/([0-9.]+)/ ; righel: /owa/auth/(%d+.%d+.%d+) then /owa/(%d+.%d+.%d+) (fingerprinting.md 2.2)
_OWA_AUTH_PATH = re.compile(rb"/owa/auth/(\d{1,2}\.\d{1,2}\.\d{1,5}(?:\.\d{1,5})?)/")
_OWA_2010_PATH = re.compile(rb"/owa/(\d{1,2}\.\d{1,2}\.\d{1,5}\.\d{1,5})/")
_IDENTITY_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?assemblyIdentity\b([^>]{0,2000})>", re.S)
_ATTR = re.compile(rb"""([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_SERVER_APP = re.compile(r"Exchange/(\d{1,2}\.\d{1,2}\.\d{1,5}\.\d{1,5})")
_OWAVER = re.compile(r"[?&]owaVer=(\d{1,2}\.\d{1,2}\.\d{1,5}\.\d{1,5})", re.I)
_TITLE = re.compile(rb"<title[^>]*>([^<]{0,200})</title>", re.I)
LOGON_MARKERS = (
    b"OwaPage = ASP.auth_logon_aspx",
    b"{57A118C6-2DA9-419d-BE9A-F92B0F9A418B}",
    b"function IsOwaPremiumBrowser",
    b"To use Outlook, browser settings must allow scripts to run.",
)
OWA_TITLES = ("Outlook", "Outlook Web App", "Exchange Log In", "Microsoft Exchange - Outlook Web Access")


def normalise_build(text: str) -> str | None:
    """``15.02.0858.002`` -> ``15.2.858.2``; a 3-part value stays 3-part; None if not a build."""
    m = _BUILD_ANY.match(text)
    if not m:
        return None
    parts = [str(int(p)) for p in m.groups() if p is not None]
    if parts[0] not in ("8", "14", "15"):
        return None
    return ".".join(parts)


def _build_key(build: str) -> tuple[int, ...]:
    return tuple(int(p) for p in build.split("."))


def header(resp: ProbeResponse, name: str) -> str | None:
    """A header value, case-insensitive."""
    return resp.header(name)


def parse_owa_version(resp: ProbeResponse) -> str | None:
    """The full build from ``X-OWA-Version`` (any case), normalised; None if absent or not a 4-part build."""
    value = resp.header("X-OWA-Version")
    if not value or not _BUILD4.match(value):
        return None
    return normalise_build(value)


def parse_server_application(resp: ProbeResponse) -> str | None:
    """The full build from ``X-ServerApplication: Exchange/15.02.0858.002``."""
    value = resp.header("X-ServerApplication")
    if not value:
        return None
    m = _SERVER_APP.search(value)
    return normalise_build(m.group(1)) if m else None


def parse_owaver_location(resp: ProbeResponse) -> str | None:
    """``owaVer=`` in an OWA error redirect: OWA's own version, which can lag the build (a hint only)."""
    loc = resp.header("Location")
    if not loc:
        return None
    m = _OWAVER.search(loc)
    return normalise_build(m.group(1)) if m else None


def parse_owa_path(body: bytes) -> tuple[str, bool] | None:
    """The build in the logon page's asset paths: (build, full).

    ``/owa/auth/15.2.858/`` gives the CU only (full=False); 2010's ``/owa/14.3.513.0/`` gives the full build.
    A 4-part value under ``/owa/auth/`` is accepted as full too, and recorded as such.
    """
    m = _OWA_AUTH_PATH.search(body)
    if m:
        build = normalise_build(m.group(1).decode("ascii"))
        if build:
            return build, build.count(".") == 3
    m = _OWA_2010_PATH.search(body)
    if m:
        build = normalise_build(m.group(1).decode("ascii"))
        if build and build.count(".") == 3:
            return build, True
    return None


@dataclass(frozen=True)
class ManifestResult:
    """The versions read from an export tool manifest, and a conflict note if its identities disagree."""

    build: str | None
    conflict: str | None = None


def parse_exporttool(body: bytes) -> ManifestResult:
    """Both ``assemblyIdentity`` versions of the ClickOnce manifest, namespace prefixes ignored.

    A tolerant tag scanner rather than a full XML parser: it reads the same elements whether or not the
    document is well formed, and cannot be made to expand entities. Identities with another ``name`` (the
    signature's publisher block repeats the deployment one) count; a disagreement is reported.
    """
    versions: dict[str, str] = {}
    seen: list[str] = []
    for m in _IDENTITY_TAG.finditer(body[: 512 * 1024]):
        attrs: dict[str, str] = {}
        for a in _ATTR.finditer(m.group(1)):
            name = a.group(1).decode("ascii", "replace").rsplit(":", 1)[-1].lower()
            attrs[name] = (a.group(2) if a.group(2) is not None else a.group(3) or b"").decode(
                "utf-8", "replace"
            )
        version = attrs.get("version", "")
        if not _BUILD4.match(version):
            continue
        build = normalise_build(version)
        if build is None:
            continue
        ident = attrs.get("name", "").lower()
        if ident in (EXPORTTOOL_APP, EXPORTTOOL_DEP):
            versions.setdefault(ident, build)
            seen.append(build)
    if not seen:
        return ManifestResult(None)
    distinct = sorted(set(seen), key=_build_key)
    build = versions.get(EXPORTTOOL_DEP) or versions.get(EXPORTTOOL_APP) or seen[0]
    conflict = None
    if len(distinct) > 1:
        conflict = f"export tool manifest identities disagree: {', '.join(distinct)}"
    return ManifestResult(build, conflict)


def cert_names(der: bytes | None) -> list[str]:
    """The subject common names and DNS subject alternative names of a DER certificate (sorted, unique)."""
    if not der:
        return []
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_der_x509_certificate(der)
        names = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names.update(str(n) for n in san.value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            pass
    except Exception:  # a malformed certificate identifies nothing; it must not sink the host
        return []
    return sorted(n for n in names if n and len(n) < 256)


def owa_signs(resp: ProbeResponse) -> list[str]:
    """Signs that a response comes from an Exchange front end (presence, not version)."""
    signs = []
    for name in ("X-FEServer", "X-OWA-Version", "X-CalculatedBETarget", "X-OWA-Error", "X-BEServer"):
        if resp.header(name):
            signs.append(name.lower())
    loc = (resp.header("Location") or "").lower()
    if "/owa/auth/logon.aspx" in loc or "/owa/auth/errorfe.aspx" in loc:
        signs.append("owa-redirect")
    elif resp.status in (301, 302, 303, 307) and ("wtrealm=" in loc or "/adfs/" in loc) and "%2fowa" in loc:
        signs.append("owa-federated")  # OWA behind claims authentication (fingerprinting.md 3)
    body = resp.body
    if any(m in body for m in LOGON_MARKERS):
        signs.append("logon-page")
    if _OWA_AUTH_PATH.search(body) or _OWA_2010_PATH.search(body):
        signs.append("owa-path")
    return signs


def page_title(body: bytes) -> str | None:
    """The HTML title, whitespace collapsed."""
    m = _TITLE.search(body[:65536])
    if not m:
        return None
    return " ".join(m.group(1).decode("utf-8", "replace").split()) or None


@dataclass
class FingerprintResult:
    """What fingerprinting learnt of one host."""

    is_exchange: bool = False
    build: str | None = None
    build_source: str | None = None
    cu_only: bool = False
    approximate: bool = False
    fe_server: str | None = None
    be_server: str | None = None
    title: str | None = None
    federated: str | None = None
    server: str | None = None
    signs: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    folder_hits: list[str] = field(default_factory=list)
    requests: int = 0
    answered: int = 0
    errors: list[str] = field(default_factory=list)

    def record(self, source: str, build: str) -> None:
        """Remember what a source said (the first value per source)."""
        self.sources.setdefault(source, build)


BuildsForCu = Callable[[str], Iterable[str]]


def _get(path: str) -> ProbeRequest:
    return ProbeRequest("GET", path, {"User-Agent": USER_AGENT, "Accept": "*/*"})


class Fingerprinter:
    """The request plan of fingerprinting.md 4.5, as a generator fed with responses.

    Order: ``/owa/service`` (a 401 that carries ``X-OWA-Version``), the logon page (CU, ADFS redirect),
    ``/`` only when nothing looks like Exchange, ``/EWS/Exchange.asmx`` (another 401 carrier), the export
    tool manifest, then (when ``/ecp/`` itself is published) the versioned ECP folders.

    ``builds_for_cu(cu)`` returns the catalogue's full builds of a CU such as ``15.2.858`` (newest first);
    ``known_build(build)`` tells whether a full build is in the catalogue (unknown revisions are flagged
    approximate).
    """

    def __init__(
        self,
        builds_for_cu: BuildsForCu | None = None,
        known_build: Callable[[str], bool] | None = None,
        *,
        max_folder_probes: int = MAX_FOLDER_PROBES,
    ) -> None:
        self.builds_for_cu = builds_for_cu
        self.known_build = known_build
        self.max_folder_probes = max_folder_probes
        self.result = FingerprintResult()
        self.notes: list[str] = []  # what the responses said; finish() adds its own conclusions
        self.conflicts: list[str] = []

    # -- reading one response -------------------------------------------------------------------
    def absorb(self, resp: ProbeResponse) -> None:
        """Take what one response says (headers, signs, builds) into the result."""
        r = self.result
        r.requests += 1
        if resp.status is None:
            r.errors.append(resp.error or "eof")
            return
        r.answered += 1
        for sign in owa_signs(resp):
            if sign not in r.signs:
                r.signs.append(sign)
        r.fe_server = r.fe_server or resp.header("X-FEServer")
        r.be_server = r.be_server or resp.header("X-BEServer")
        r.server = r.server or resp.header("Server")
        owa = parse_owa_version(resp)
        if owa:
            r.record("x-owa-version", owa)
        app = parse_server_application(resp)
        if app:
            r.record("x-serverapplication", app)
        lag = parse_owaver_location(resp)
        if lag:
            self.notes.append(
                f"OWA error redirect reports owaVer={lag} (OWA's own version, can lag the build)"
            )

    def _full(self) -> str | None:
        for source in ("x-owa-version", "exporttool", "ecp-folder", "x-serverapplication"):
            if source in self.result.sources:
                return self.result.sources[source]
        owa = self.result.sources.get("owa-path")
        if owa and owa.count(".") == 3:
            return owa
        return None

    def _is_known(self, build: str) -> bool:
        return self.known_build is None or self.known_build(build)

    # -- the plan -------------------------------------------------------------------------------
    def steps(self) -> Generator[ProbeRequest, ProbeResponse, FingerprintResult]:
        """Yield requests, receive responses; the return value (StopIteration.value) is the result."""
        r = self.result
        # /owa/service first: it answers 401 with X-OWA-Version on most servers (the Metasploit mixin:
        # "if we get this we know the version number for sure"), so one request usually settles the build.
        service = yield _get("/owa/service")
        self.absorb(service)
        if self._full() is None or not self._is_known(self._full() or ""):
            logon = yield _get("/owa/auth/logon.aspx")
            self.absorb(logon)
            loc = logon.header("Location") or ""
            if logon.status in (301, 302, 303, 307) and loc:
                parts = urlsplit(loc)
                if parts.netloc and not parts.path.lower().startswith("/owa"):
                    r.federated = loc[:200]
                    self.notes.append(
                        "the OWA logon page redirects to another server (claims/ADFS authentication?)"
                    )
            if logon.status == 200:
                r.title = page_title(logon.body)
                found = parse_owa_path(logon.body)
                if found:
                    r.record("owa-path", found[0])
        if not r.signs:
            # Nothing Exchange-like yet: characterise the site's root before giving up (step 1).
            root = yield _get("/")
            self.absorb(root)
            if root.status == 200 and r.title is None:
                r.title = page_title(root.body)
        if not r.signs and r.answered == 0:
            return self.finish()
        if self._full() is None and r.signs and service.status != 401:
            # Another 401 carrier, for when /owa/service did not answer 401 (a 401 without the
            # header there means this server does not send it).
            ews = yield _get("/EWS/Exchange.asmx")
            self.absorb(ews)
        if r.signs and (self._full() is None or not self._is_known(self._full() or "")):
            manifest = yield _get(EXPORTTOOL_PATH)
            self.absorb(manifest)
            if manifest.status == 200:
                parsed = parse_exporttool(manifest.body)
                if parsed.build:
                    r.record("exporttool", parsed.build)
                    if "exporttool" not in r.signs:
                        r.signs.append("exporttool")
                if parsed.conflict:
                    self.conflicts.append(parsed.conflict)
        cu = r.sources.get("owa-path")
        if self._full() is None and cu and cu.count(".") == 2 and self.builds_for_cu is not None:
            yield from self._folders(cu)
        return self.finish()

    def _folders(self, cu: str) -> Generator[ProbeRequest, ProbeResponse, None]:
        """Bounded ``ecp-folder`` probing (fingerprinting.md 2.4): a decoy first, then newest to oldest."""
        r = self.result
        assert self.builds_for_cu is not None
        candidates = [b for b in self.builds_for_cu(cu) if b.count(".") == 3][: self.max_folder_probes]
        if not candidates:
            return
        # The ECP virtual directory itself first: Exchange answers it (302 to the OWA logon page, or 401),
        # and a reverse proxy that does not publish ECP (advice since ProxyLogon) answers 404. Its versioned
        # folders live inside it, so a 404 there saves up to max_folder_probes requests that cannot succeed.
        ecp = yield _get("/ecp/")
        self.absorb(ecp)
        if ecp.status is None:
            return
        if ecp.status in ECP_ABSENT:
            self.notes.append(
                f"the ECP virtual directory (/ecp/) answers {ecp.status}: its versioned folders were not probed"
            )
            return
        # A folder no build has: a server (or proxy) that answers 200 to any folder would make the
        # first candidate look installed.
        decoy = yield _get(f"/ecp/{cu}.65535/exporttool/")
        self.absorb(decoy)
        if decoy.status == 200:
            self.notes.append(
                "every /ecp/<build>/exporttool/ folder answers 200: folder probing is meaningless here"
            )
            return
        if decoy.status is None:
            return
        for build in candidates:
            resp = yield _get(f"/ecp/{build}/exporttool/")
            self.absorb(resp)
            if resp.status is None:
                return
            if resp.status == 200:
                r.folder_hits.append(build)
                r.record("ecp-folder", build)
                return

    def finish(self) -> FingerprintResult:
        """Decide the build from the sources seen (may be called again after more responses)."""
        r = self.result
        r.notes = list(self.notes)
        r.conflicts = list(self.conflicts)
        r.is_exchange = bool(r.signs) or bool(r.sources)
        values = dict(r.sources)
        full_sources = [
            s for s in ("x-owa-version", "exporttool", "ecp-folder", "x-serverapplication") if s in values
        ]
        if full_sources:
            first = full_sources[0]
            r.build, r.build_source, r.cu_only = values[first], first, False
            if (
                first == "x-owa-version"
                and "exporttool" in values
                and self._is_known(values["exporttool"])
                and not self._is_known(values[first])
            ):
                # OwaVersion lag (fingerprinting.md 3): the header's revision is not a published build.
                r.notes.append(
                    f"X-OWA-Version {values[first]} is not a published build; using the manifest's "
                    f"{values['exporttool']}"
                )
                r.build, r.build_source = values["exporttool"], "exporttool"
            for other in full_sources:
                if values[other] != r.build and not (
                    other == "x-owa-version" and r.build_source == "exporttool"
                ):
                    r.conflicts.append(f"{other} says {values[other]}, {r.build_source} says {r.build}")
            cu = values.get("owa-path")
            if cu and not r.build.startswith(cu + ".") and cu != r.build:
                r.conflicts.append(f"owa-path says CU {cu}, {r.build_source} says {r.build}")
        elif "owa-path" in values:
            build = values["owa-path"]
            r.build, r.build_source, r.cu_only = build, "owa-path", build.count(".") == 2
        if r.build and not r.cu_only and not self._is_known(r.build):
            r.approximate = True
            r.notes.append(f"{r.build} is not in the catalogue: judged by the nearest known build of its CU")
        return r


def run_plan(fp: Fingerprinter, answer: Callable[[ProbeRequest], ProbeResponse]) -> FingerprintResult:
    """Drive a plan synchronously with ``answer`` (for tests and offline replays of captured responses)."""
    gen = fp.steps()
    try:
        req = next(gen)
        while True:
            req = gen.send(answer(req))
    except StopIteration as stop:
        result: FingerprintResult = stop.value
        return result
