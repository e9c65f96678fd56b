"""``exwatch collect winrm``: run the collector on many servers over WinRM (pypsrp), fetch, verify, clean up.

Per host: skip it when ``DIR/<host>.zip`` exists and verifies (resumable); open a PowerShell runspace; run the
generated script writing to ``%windir%\\Temp``; fetch the zip in chunks (pypsrp's own ``Client.fetch`` holds
the whole file in memory); compare its SHA-256 with the server's; verify every member against the manifest;
only then remove the zip from the server. Each failure is classed: unreachable, auth, not_exchange,
script_failed, fetch_failed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from exwatch.collect.manifest import CollectionError, verify
from exwatch.collect.script import generate

ERROR_CLASSES = ("unreachable", "auth", "not_exchange", "script_failed", "fetch_failed")
AUTHS = ("negotiate", "kerberos", "ntlm", "certificate")
CHUNK = 4 * 1024 * 1024
_RESULT = re.compile(r"EXWATCH-RESULT (\{.*\})")
_SCRIPT_ERROR = re.compile(r"exwatch-collect: (\w+): (.*)")


class Session(Protocol):
    """What the runner needs from a remote PowerShell: run a script, get its output lines and error texts."""

    def run(self, script: str) -> tuple[list[str], list[str]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Credentials:
    """How to authenticate; secrets come from the environment or a prompt, never from the command line."""

    auth: str = "negotiate"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cert_pem: str | None = None
    cert_key_pem: str | None = None
    port: int | None = None
    ssl: bool = True
    cert_validation: bool = True


@dataclass
class HostResult:
    host: str
    status: str  # collected | resumed | failed
    error_class: str | None = None
    error: str | None = None
    zip: str | None = None
    files: int = 0
    bytes: int = 0
    build: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The JSON form (an entry of ``hosts`` in ``collect winrm --format json``)."""
        return asdict(self)


class CollectFailure(Exception):
    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


class PsrpSession:
    """A runspace pool on one server through pypsrp; every script runs in it."""

    def __init__(self, host: str, creds: Credentials) -> None:
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        kwargs: dict[str, Any] = {  # keyword arguments of pypsrp.wsman.WSMan (typed per keyword)
            "auth": creds.auth,
            "ssl": creds.ssl,
            "cert_validation": creds.cert_validation,
            "connection_timeout": 30,
            "read_timeout": 3600,
            "operation_timeout": 3500,
        }
        if creds.port:
            kwargs["port"] = creds.port
        if creds.auth == "certificate":
            kwargs["certificate_pem"] = creds.cert_pem
            kwargs["certificate_key_pem"] = creds.cert_key_pem
        else:
            kwargs["username"] = creds.username
            kwargs["password"] = creds.password
        self.wsman = WSMan(host, **kwargs)
        self.pool = RunspacePool(self.wsman)
        self.pool.open()

    def run(self, script: str) -> tuple[list[str], list[str]]:
        from pypsrp.powershell import PowerShell

        ps = PowerShell(self.pool)
        ps.add_script(script)
        ps.invoke()
        errors = [str(e) for e in ps.streams.error] if ps.had_errors else []
        if ps.had_errors and not errors:
            errors = ["the script stopped with an error and no message"]
        return [str(o) for o in ps.output], errors

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            self.wsman.close()


SessionFactory = Callable[[str], Session]


def classify(exc: BaseException) -> tuple[str, str]:
    """(error class, one line) for an exception raised while talking to a server."""
    if isinstance(exc, CollectFailure):
        return exc.error_class, str(exc)
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    try:
        from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
    except ImportError:  # pragma: no cover - the collect extra is missing
        AuthenticationError = WinRMTransportError = WSManFaultError = ()  # type: ignore[misc,assignment]
    try:
        from spnego.exceptions import SpnegoError
    except ImportError:  # pragma: no cover
        SpnegoError = ()  # type: ignore[misc,assignment]
    import requests

    if isinstance(exc, (AuthenticationError, SpnegoError)):
        return "auth", text
    if isinstance(exc, WinRMTransportError):
        code = getattr(exc, "code", None)
        if code in (401, 403):
            return "auth", f"HTTP {code} from the WinRM listener: the credentials were refused"
        return "unreachable", f"HTTP {code} from the WinRM listener"
    if isinstance(exc, WSManFaultError):
        code = getattr(exc, "code", None)
        if code == 5:  # ERROR_ACCESS_DENIED
            return "auth", f"access denied: {getattr(exc, 'reason', text)}"
        return "script_failed", f"WS-Management fault {code}: {getattr(exc, 'reason', text)}"
    if isinstance(exc, requests.exceptions.SSLError):
        return "unreachable", f"TLS: {text}"
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | OSError):
        return "unreachable", text
    return "script_failed", f"{type(exc).__name__}: {text}"


def _ps(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _run_checked(session: Session, script: str, what: str) -> list[str]:
    output, errors = session.run(script)
    if errors:
        first = errors[0].strip().splitlines()[0] if errors[0].strip() else errors[0]
        m = _SCRIPT_ERROR.search(first)
        if m:
            cls = m.group(1) if m.group(1) in ERROR_CLASSES else "script_failed"
            raise CollectFailure(cls, m.group(2))
        raise CollectFailure("script_failed", f"{what}: {first[:300]}")
    return output


def fetch(session: Session, remote: str, local: Path) -> str:
    """Copy ``remote`` to ``local`` in chunks; return the SHA-256 of what arrived (after checking it against
    the server's own Get-FileHash)."""
    lines = _run_checked(
        session,
        f"$f = Get-Item -LiteralPath {_ps(remote)}; $h = Get-FileHash -LiteralPath {_ps(remote)} -Algorithm SHA256; "
        "Write-Output ([string]$f.Length); Write-Output $h.Hash",
        "size of the package",
    )
    size, remote_hash = int(lines[0].strip()), lines[1].strip().lower()
    digest = hashlib.sha256()
    part = local.with_name(local.name + ".part")
    with part.open("wb") as out:
        offset = 0
        while offset < size:
            n = min(CHUNK, size - offset)
            script = (
                f"$s = [System.IO.File]::Open({_ps(remote)}, 'Open', 'Read', 'Read'); "
                f"try {{ [void]$s.Seek({offset}, 'Begin'); $b = New-Object byte[] {n}; $r = 0; "
                f"while ($r -lt {n}) {{ $k = $s.Read($b, $r, {n} - $r); if ($k -le 0) {{ break }}; $r += $k }}; "
                "Write-Output ([System.Convert]::ToBase64String($b, 0, $r)) } finally { $s.Dispose() }"
            )
            data = base64.b64decode("".join(_run_checked(session, script, "fetch")))
            if not data:
                raise CollectFailure(
                    "fetch_failed", f"{remote}: the server sent nothing at byte {offset} of {size}"
                )
            out.write(data)
            digest.update(data)
            offset += len(data)
    got = digest.hexdigest()
    if got != remote_hash:
        part.unlink(missing_ok=True)
        raise CollectFailure("fetch_failed", f"{remote}: SHA-256 of the copy differs from the server's")
    part.replace(local)
    return got


def _already_done(target: Path) -> HostResult | None:
    if not target.exists():
        return None
    try:
        m = verify(target)
    except CollectionError:
        # Our own earlier output, damaged or cut: kept aside, never overwritten.
        aside = target.with_name(f"{target.name}.invalid-{datetime.now().strftime('%Y%m%d%H%M%S')}")
        target.rename(aside)
        return None
    return HostResult(
        target.stem,
        "resumed",
        zip=str(target),
        files=len(m.files),
        bytes=sum(f.size for f in m.files),
        build=m.build,
    )


def collect_host(
    host: str,
    out_dir: Path,
    factory: SessionFactory,
    *,
    since: datetime | None = None,
    max_bytes: int | None = None,
) -> HostResult:
    """Collect one server into ``out_dir/<host>.zip``; never raises for a server's own failure."""
    target = out_dir / f"{_safe_name(host)}.zip"
    done = _already_done(target)
    if done is not None:
        done.host = host
        return done
    session: Session | None = None
    remote: str | None = None
    result = HostResult(host, "failed")
    try:
        session = factory(host)
        out_file = f"%windir%\\Temp\\exwatch-collect-{uuid.uuid4().hex}.zip"
        output = _run_checked(
            session, generate(out_file=out_file, since=since, max_bytes=max_bytes), "collector"
        )
        summary = next((m.group(1) for line in output for m in [_RESULT.search(line)] if m), None)
        if summary is None:
            raise CollectFailure("script_failed", "the collector ended without its EXWATCH-RESULT line")
        import json

        info = json.loads(summary)
        remote = str(info["zip"])
        fetch(session, remote, target)
        try:
            manifest = verify(target)
        except CollectionError as exc:
            aside = target.with_name(target.name + ".invalid")
            target.replace(aside)
            raise CollectFailure("fetch_failed", f"the package does not verify: {exc}") from None
        result = HostResult(
            host,
            "collected",
            zip=str(target),
            files=len(manifest.files),
            bytes=sum(f.size for f in manifest.files),
            build=manifest.build,
        )
        try:
            _run_checked(session, f"Remove-Item -LiteralPath {_ps(remote)} -Force", "remove")
        except Exception as exc:  # the package is safe here; say so and go on
            result.warnings.append(f"could not remove {remote} from the server: {classify(exc)[1]}")
        return result
    except Exception as exc:
        cls, message = classify(exc)
        result.error_class, result.error = cls, message
        if remote:
            result.warnings.append(f"the package {remote} stays on the server")
        return result
    finally:
        if session is not None:
            try:
                session.close()
            except Exception:
                pass


def collect_hosts(
    hosts: Iterable[str],
    out_dir: Path,
    factory: SessionFactory,
    *,
    jobs: int = 4,
    since: datetime | None = None,
    max_bytes: int | None = None,
    progress: Callable[[HostResult], None] | None = None,
) -> list[HostResult]:
    """Every host, ``jobs`` at once; results in the order of ``hosts``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(hosts))

    def one(h: str) -> HostResult:
        r = collect_host(h, out_dir, factory, since=since, max_bytes=max_bytes)
        if progress:
            progress(r)
        return r

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, names))


def psrp_factory(creds: Credentials) -> SessionFactory:
    def make(host: str) -> Session:
        return PsrpSession(host, creds)

    return make


def _safe_name(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", host) or "host"


def credentials_from_env(auth: str, prompt: Callable[[str, bool], str] | None) -> Credentials:
    """Credentials for ``auth``: EXWATCH_WINRM_USER / EXWATCH_WINRM_PASSWORD, else ``prompt`` (when given);
    Kerberos without a user name uses the ticket cache."""
    user = os.environ.get("EXWATCH_WINRM_USER") or None
    password = os.environ.get("EXWATCH_WINRM_PASSWORD") or None
    if auth == "certificate":
        return Credentials(auth=auth)
    if user is None and auth != "kerberos" and prompt is not None:
        user = prompt("WinRM user (DOMAIN\\user or user@domain)", False)
    if user is not None and password is None and prompt is not None:
        password = prompt(f"password for {user}", True)
    return Credentials(auth=auth, username=user, password=password)
