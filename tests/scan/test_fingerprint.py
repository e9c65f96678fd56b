"""Fingerprint parsers and the request plan, from reference samples (pure, no sockets)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exwatch.kb import parse_build
from exwatch.scan.fingerprint import (
    EXPORTTOOL_PATH,
    Fingerprinter,
    FingerprintResult,
    ManifestResult,
    cert_names,
    normalise_build,
    owa_signs,
    page_title,
    parse_exporttool,
    parse_owa_path,
    parse_owa_version,
    parse_owaver_location,
    parse_server_application,
    run_plan,
)
from exwatch.scan.probes import ProbeRequest, ProbeResponse

DATA = Path(__file__).parent / "data"
MANIFEST = (DATA / "exporttool_15.2.986.5.application").read_bytes()
LOGON_2019 = (DATA / "logon_2019cu9.html").read_bytes()
LOGON_2010 = (DATA / "logon_2010.html").read_bytes()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("15.1.2507.16", "15.1.2507.16"),
        ("15.01.2375.007", "15.1.2375.7"),
        ("15.2.858", "15.2.858"),
        ("14.03.0513.000", "14.3.513.0"),
        ("7.0.1.1", None),
        ("15.1", None),
        ("abc", None),
    ],
)
def test_normalise_build(text: str, want: str | None) -> None:
    assert normalise_build(text) == want


def test_header_sources() -> None:
    assert parse_owa_version(ProbeResponse(401, {"x-owa-version": "15.2.986.14"})) == "15.2.986.14"
    assert (
        parse_owa_version(ProbeResponse(401, {"X-OWA-Version": "15.2.858"})) is None
    )  # 3 parts: not a build
    assert parse_owa_version(ProbeResponse(401, {})) is None
    assert (
        parse_server_application(ProbeResponse(200, {"X-ServerApplication": "Exchange/15.02.0858.002"}))
        == "15.2.858.2"
    )
    loc = "/owa/auth/errorfe.aspx?httpCode=500&owaError=X&owaVer=15.2.858.2&be=EX01&fe=EX01"
    assert parse_owaver_location(ProbeResponse(302, {"Location": loc})) == "15.2.858.2"


def test_owa_path() -> None:
    assert parse_owa_path(LOGON_2019) == ("15.2.858", False)
    assert parse_owa_path(LOGON_2010) == ("14.3.513.0", True)
    assert parse_owa_path(b"<html>nothing</html>") is None
    assert page_title(LOGON_2019) == "Outlook"
    assert "logon-page" in owa_signs(ProbeResponse(200, {}, LOGON_2019))


def test_exporttool_manifest() -> None:
    result = parse_exporttool(MANIFEST)
    assert result.build == "15.2.986.5" and result.conflict is None
    other = MANIFEST.replace(b'exporttool" version="15.2.986.5"', b'exporttool" version="15.2.986.9"')
    result = parse_exporttool(other)
    assert result.build == "15.2.986.9"  # the dependent application's identity
    assert result.conflict is not None and "15.2.986.5" in result.conflict
    # Not well-formed XML: the identities are still read (a tag scanner, no entity expansion).
    assert parse_exporttool(MANIFEST[: MANIFEST.index(b"<deployment")]).build == "15.2.986.5"
    assert parse_exporttool(b"<html>404</html>").build is None


def test_cert_names_from_a_real_certificate() -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.contoso.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("autodiscover.contoso.example"), x509.DNSName("mail.contoso.example")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert cert_names(der) == ["autodiscover.contoso.example", "mail.contoso.example"]
    assert cert_names(b"\x30\x03garbage") == [] and cert_names(None) == []


# -- the plan, driven by a table of answers ------------------------------------------------------

Answer = Callable[[ProbeRequest], ProbeResponse]
CU9 = ["15.2.858.15", "15.2.858.12", "15.2.858.10", "15.2.858.5"]


EXCHANGE_404 = ProbeResponse(404, {"X-FEServer": "EX01"}, b"not found")
ECP_302 = ProbeResponse(
    302,
    {
        "X-FEServer": "EX01",
        "Location": "https://mail/owa/auth/logon.aspx?url=https%3a%2f%2fmail%2fecp%2f&reason=0",
    },
)


def _server(
    pages: dict[str, ProbeResponse], default: ProbeResponse = EXCHANGE_404
) -> tuple[Answer, list[str]]:
    seen: list[str] = []

    def answer(req: ProbeRequest) -> ProbeResponse:
        seen.append(req.path)
        return pages.get(req.path, default)

    return answer, seen


def _plan(
    pages: dict[str, ProbeResponse], default: ProbeResponse = EXCHANGE_404
) -> tuple[FingerprintResult, list[str]]:
    answer, seen = _server(pages, default)
    fp = Fingerprinter(lambda cu: CU9 if cu == "15.2.858" else [], lambda b: b in CU9)
    return run_plan(fp, answer), seen


def test_plan_header_is_enough() -> None:
    result, seen = _plan(
        {"/owa/service": ProbeResponse(401, {"X-OWA-Version": "15.2.858.10", "X-FEServer": "EX01"})}
    )
    assert seen == ["/owa/service"]
    assert (result.build, result.build_source, result.cu_only, result.fe_server) == (
        "15.2.858.10",
        "x-owa-version",
        False,
        "EX01",
    )


def test_plan_manifest_after_cu() -> None:
    result, seen = _plan(
        {
            "/owa/service": ProbeResponse(401, {"X-FEServer": "EX01"}),
            "/owa/auth/logon.aspx": ProbeResponse(200, {}, LOGON_2019),
            EXPORTTOOL_PATH: ProbeResponse(200, {}, MANIFEST.replace(b"15.2.986.5", b"15.2.858.12")),
        }
    )
    assert seen == [
        "/owa/service",
        "/owa/auth/logon.aspx",
        EXPORTTOOL_PATH,
    ]  # a 401 without the header: no EWS
    assert (result.build, result.build_source, result.sources["owa-path"]) == (
        "15.2.858.12",
        "exporttool",
        "15.2.858",
    )


def test_plan_ecp_folder_probing() -> None:
    result, seen = _plan(
        {
            "/owa/auth/logon.aspx": ProbeResponse(200, {}, LOGON_2019),
            "/ecp/": ECP_302,
            "/ecp/15.2.858.10/exporttool/": ProbeResponse(200, {}, b""),
        }
    )
    assert seen[-5:] == [
        "/ecp/",  # the ECP virtual directory is published (302 to the logon page)
        "/ecp/15.2.858.65535/exporttool/",  # the decoy first
        "/ecp/15.2.858.15/exporttool/",
        "/ecp/15.2.858.12/exporttool/",
        "/ecp/15.2.858.10/exporttool/",  # newest first, stop at the first 200
    ]
    assert (result.build, result.build_source, result.folder_hits) == (
        "15.2.858.10",
        "ecp-folder",
        ["15.2.858.10"],
    )


def test_plan_catch_all_folders_stay_cu_only() -> None:
    answer, seen = _server(
        {
            "/owa/auth/logon.aspx": ProbeResponse(200, {}, LOGON_2019),
            "/ecp/": ECP_302,
        }
    )

    def catch_all(req: ProbeRequest) -> ProbeResponse:
        if req.path.startswith("/ecp/15.2.858."):
            seen.append(req.path)
            return ProbeResponse(200, {}, b"")
        return answer(req)

    result = run_plan(Fingerprinter(lambda cu: CU9, lambda b: b in CU9), catch_all)
    assert (result.build, result.cu_only) == ("15.2.858", True)
    assert seen[-1] == "/ecp/15.2.858.65535/exporttool/"  # no candidate was tried after the decoy said 200
    assert any("meaningless" in n for n in result.notes)


@pytest.mark.parametrize("status", [404, 410])
def test_plan_unpublished_ecp_is_not_folder_probed(status: int) -> None:
    nginx = ProbeResponse(status, {"Server": "nginx"}, b"<html>not found</html>")
    result, seen = _plan(
        {"/owa/auth/logon.aspx": ProbeResponse(200, {}, LOGON_2019), "/ecp/": nginx},
        nginx,
    )
    # One request to /ecp/ instead of the decoy and every candidate folder: none could answer.
    assert seen[-1] == "/ecp/" and not any(p.startswith("/ecp/15.2.858.") for p in seen)
    assert (result.build, result.build_source, result.cu_only) == ("15.2.858", "owa-path", True)
    assert any("/ecp/" in n and "not probed" in n for n in result.notes)


def test_plan_ecp_answering_401_is_folder_probed() -> None:
    result, seen = _plan(
        {
            "/owa/auth/logon.aspx": ProbeResponse(200, {}, LOGON_2019),
            "/ecp/": ProbeResponse(401, {"WWW-Authenticate": "Negotiate"}),
            "/ecp/15.2.858.15/exporttool/": ProbeResponse(200, {}, b""),
        }
    )
    assert seen[-3:] == ["/ecp/", "/ecp/15.2.858.65535/exporttool/", "/ecp/15.2.858.15/exporttool/"]
    assert (result.build, result.build_source) == ("15.2.858.15", "ecp-folder")


def test_plan_adfs_redirect_is_noted() -> None:
    adfs = "https://adfs.contoso.example/adfs/ls/?wa=wsignin1.0&wtrealm=https%3a%2f%2fmail%2fowa%2f"
    result, _ = _plan(
        {"/owa/auth/logon.aspx": ProbeResponse(302, {"Location": adfs})}, ProbeResponse(404, {}, b"")
    )
    assert result.is_exchange and "owa-federated" in result.signs and result.federated == adfs


def test_plan_not_exchange_and_dead() -> None:
    nginx_404 = ProbeResponse(404, {"Server": "nginx"}, b"not found")
    result, seen = _plan(
        {"/": ProbeResponse(200, {"Server": "nginx"}, b"<title>Welcome to nginx!</title>")}, nginx_404
    )
    assert not result.is_exchange and seen == ["/owa/service", "/owa/auth/logon.aspx", "/"]
    dead = run_plan(Fingerprinter(), lambda req: ProbeResponse(None, {}, b"", "reset"))
    assert not dead.is_exchange and dead.answered == 0 and dead.errors == ["reset"] * 3


def test_plan_owa_version_lag_prefers_a_published_manifest_build() -> None:
    result, _ = _plan(
        {
            "/owa/service": ProbeResponse(401, {"X-OWA-Version": "15.2.858.2", "X-FEServer": "EX01"}),
            "/owa/auth/logon.aspx": ProbeResponse(200, {}, LOGON_2019),
            EXPORTTOOL_PATH: ProbeResponse(200, {}, MANIFEST.replace(b"15.2.986.5", b"15.2.858.5")),
        }
    )
    assert (result.build, result.build_source) == ("15.2.858.5", "exporttool")
    assert any("not a published build" in n for n in result.notes)


# -- properties ---------------------------------------------------------------------------------


@given(st.binary(max_size=4000))
@settings(max_examples=300, deadline=None)
def test_parsers_never_crash_on_bytes(data: bytes) -> None:
    assert isinstance(parse_exporttool(data), ManifestResult)
    owa = parse_owa_path(data)
    if owa is not None:
        build, full = owa
        assert full == (build.count(".") == 3)
        assert parse_build(build).cu_only is not full
    title = page_title(data)
    assert title is None or (isinstance(title, str) and "\n" not in title and title == title.strip())
    signs = owa_signs(ProbeResponse(200, {"Location": data.decode("latin-1")}, data))
    assert all(isinstance(x, str) for x in signs)
    assert cert_names(data) == []  # random bytes are never a DER certificate


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_header_parsers_never_crash(value: str) -> None:
    resp = ProbeResponse(401, {"X-OWA-Version": value, "X-ServerApplication": value, "Location": value})
    for build in (parse_owa_version(resp), parse_server_application(resp), parse_owaver_location(resp)):
        assert build is None or normalise_build(build) == build


@given(st.integers(14, 15), st.integers(0, 3), st.integers(0, 99999), st.integers(0, 99999))
def test_manifest_version_round_trip(a: int, b: int, c: int, d: int) -> None:
    version = f"{a}.{b}.{c}.{d}"
    assert parse_exporttool(MANIFEST.replace(b"15.2.986.5", version.encode())).build == version
