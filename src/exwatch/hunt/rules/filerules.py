"""Pure rules over a file's path and name: published web-shell paths, unexpected scripts in web folders,
LSASS dumps, archives in ProgramData and ProxyShell virtual directories in applicationHost.config."""

from __future__ import annotations

import re

from exwatch.hunt.rules.iocs import IocSet, path_key

SCRIPT_EXTENSIONS = (".aspx", ".ashx", ".asmx", ".asp")

# Files a standard install puts in owa\auth (detections.md WS-1: "any file not part of a standard install").
STANDARD_OWA_AUTH = {
    "logon.aspx",
    "logoff.aspx",
    "errorfe.aspx",
    "expiredpassword.aspx",
    "frowny.aspx",
    "signout.aspx",
    "redirsuiteserviceproxy.aspx",
    "timeoutlogoff.aspx",
    "getidtoken.htm",
    "owaauth.dll",
}
STANDARD_ECP_AUTH = {"timeoutlogoff.aspx"}
DEVICE_FOLDERS = ("com", "com1", "con", "aux", "who", "xyz", "zoo", "zing")
# Test-ProxyLogon's wildcard is lsass.*dmp ("lsass." then anything ending in "dmp"): lsass*dmp covers it.
_LSASS = re.compile(r"(^|/)lsass[^/]*dmp$")
_PROGRAMDATA_ARCHIVE = re.compile(r"(^|/)programdata/.+\.(zip|7z|rar)$")
_VDIR = re.compile(
    r"physicalPath\s*=\s*\"(?P<path>[a-z]:\\(?:ProgramData|Users\\All Users)\\(?:COM1?|CON|AUX|WHO|XYZ|ZOO|ZING)(?:\\[^\"]*)?)\"",
    re.IGNORECASE,
)


def _tail(key: str, n: int) -> str:
    return "/".join(key.split("/")[-n:])


def path_findings(rel: str, iocs: IocSet) -> list[tuple[str, str]]:
    """(rule id, why) for a file at ``rel`` (a path inside the triage package or an install)."""
    key = path_key(rel)
    name = key.rsplit("/", 1)[-1]
    out: list[tuple[str, str]] = []
    tail3 = _tail(key, 3)
    known = next(
        (note for k, note in iocs.exact_paths.items() if _tail(k, 3) == tail3 and len(k.split("/")) >= 3),
        None,
    )
    if known is None:
        winpath = "\\" + key.replace("/", "\\")
        for rx, note in iocs.path_regexes:
            if rx.search(winpath):
                known = note or rx.pattern
                break
    if known is not None and name.endswith(SCRIPT_EXTENSIONS + (".exe", ".log", ".dll")):
        out.append(("webshell.known_path", f"published web-shell path ({known})"))
    if name.endswith(SCRIPT_EXTENSIONS):
        why = unexpected_script(key)
        if why:
            out.append(("webshell.unexpected_script", why))
    if _LSASS.search(key):
        out.append(("postexploit.lsass_dump", "LSASS memory dump file"))
    if _PROGRAMDATA_ARCHIVE.search(key):
        out.append(("postexploit.programdata_archive", "archive under ProgramData"))
    return out


def unexpected_script(key: str) -> str | None:
    """Why a script file in a web-shell location is unexpected, or None."""
    parts = key.split("/")
    name = parts[-1]
    joined = "/" + key
    if "/aspnet_client/" in joined:
        return "script file in inetpub\\wwwroot\\aspnet_client (no legitimate .aspx lives there)"
    if "/frontend/httpproxy/ecp/auth/" in joined and name not in STANDARD_ECP_AUTH:
        return "file in FrontEnd\\HttpProxy\\ecp\\auth other than TimeoutLogoff.aspx"
    if "/frontend/httpproxy/owa/auth/" in joined:
        after = joined.split("/frontend/httpproxy/owa/auth/", 1)[1]
        if "/" in after:
            return "script file under owa\\auth\\Current or a versioned folder (only static resources live there)"
        if name not in STANDARD_OWA_AUTH:
            return "script file in owa\\auth that is not part of a standard install"
    if "/frontend/httpproxy/oab/" in joined:
        return "script file in FrontEnd\\HttpProxy\\OAB"
    for i, part in enumerate(parts[:-1]):
        if part in DEVICE_FOLDERS and i > 0 and parts[i - 1] in ("programdata", "all users"):
            return "script file in a ProxyShell device-name folder under ProgramData"
    return None


def vdir_config_findings(text: str) -> list[tuple[int, int, str]]:
    """(line number, char offset, excerpt) of virtual directories pointing at ProxyShell folders."""
    out = []
    for m in _VDIR.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        ls = text.rfind("\n", 0, m.start()) + 1
        le = text.find("\n", m.end())
        out.append((line, m.start(), text[ls : le if le >= 0 else len(text)].strip()[:400]))
    return out
