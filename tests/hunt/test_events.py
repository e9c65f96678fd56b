"""Event-log rules over XML exports: Sigma logsources for MSExchange Management, Sysmon, Defender, PowerShell."""

from __future__ import annotations

from pathlib import Path

from exwatch.hunt import HuntOptions, hunt_paths

NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def _event(
    rid: int, channel: str, provider: str, eid: int, data: list[tuple[str | None, str]], t: str
) -> str:
    items = "".join(f"<Data Name='{n}'>{v}</Data>" if n else f"<Data>{v}</Data>" for n, v in data)
    return (
        f"<Event xmlns='{NS}'><System><Provider Name='{provider}'/><EventID>{eid}</EventID><Level>4</Level>"
        f"<TimeCreated SystemTime='{t}'/><EventRecordID>{rid}</EventRecordID><Channel>{channel}</Channel>"
        f"<Computer>EXCH01</Computer></System><EventData>{items}</EventData></Event>\n"
    )


def test_event_rules(tmp_path: Path) -> None:
    root = tmp_path / "EXCH01" / "EventLogs"
    root.mkdir(parents=True)
    mgmt = "MSExchange Management"
    events = [
        _event(
            1,
            mgmt,
            "MSExchange CmdletLogs",
            1,
            [
                (None, "Set-OabVirtualDirectory"),
                (
                    None,
                    '-ExternalUrl \'http://f/&lt;script language="JScript" runat="server"&gt;function Page_Load(){eval(Request["k"],"unsafe");}&lt;/script&gt;\' -Identity \'OAB (Default Web Site)\'',
                ),
            ],
            "2021-03-03T06:59:18Z",
        ),
        _event(
            2,
            mgmt,
            "MSExchange CmdletLogs",
            1,
            [
                (None, "New-MailboxExportRequest"),
                (
                    None,
                    '-Mailbox "admin" -FilePath "\\\\127.0.0.1\\c$\\inetpub\\wwwroot\\aspnet_client\\x.aspx"',
                ),
            ],
            "2021-08-10T09:50:57Z",
        ),
        _event(
            3,
            mgmt,
            "MSExchange CmdletLogs",
            1,
            [
                (None, "New-MailboxExportRequest"),
                (None, '-Mailbox "greta" -FilePath "\\\\backup01\\pst\\greta.pst"'),
            ],
            "2021-08-10T10:00:00Z",
        ),
        _event(
            4,
            mgmt,
            "MSExchange CmdletLogs",
            1,
            [(None, "Install-TransportAgent"), (None, '-Name "x" -TransportAgentFactory "y"')],
            "2021-08-10T11:00:00Z",
        ),
    ]
    (root / "MSExchange Management.xml").write_text("<Events>\n" + "".join(events) + "</Events>\n")
    sysmon = "Microsoft-Windows-Sysmon/Operational"
    (root / "Sysmon.xml").write_text(
        "<Events>\n"
        + _event(
            10,
            sysmon,
            "Microsoft-Windows-Sysmon",
            1,
            [
                ("Image", "C:\\Windows\\System32\\cmd.exe"),
                (
                    "CommandLine",
                    "cmd /c cd /d C:\\inetpub\\wwwroot\\aspnet_client&amp;whoami&amp;echo [S]&amp;cd&amp;echo [E]",
                ),
                ("ParentImage", "C:\\Windows\\System32\\inetsrv\\w3wp.exe"),
                ("ParentCommandLine", 'w3wp.exe -ap "MSExchangeOWAAppPool"'),
            ],
            "2021-03-03T07:00:00Z",
        )
        + _event(
            11,
            sysmon,
            "Microsoft-Windows-Sysmon",
            1,
            [
                ("Image", "C:\\Windows\\System32\\WerFault.exe"),
                ("CommandLine", "WerFault.exe -u -p 1"),
                (
                    "ParentImage",
                    "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\UMWorkerProcess.exe",
                ),
            ],
            "2021-03-03T07:01:00Z",
        )
        + "</Events>\n"
    )
    defender = "Microsoft-Windows-Windows Defender/Operational"
    (root / "Defender.xml").write_text(
        "<Events>\n"
        + _event(
            20,
            defender,
            "Microsoft-Windows-Windows Defender",
            1116,
            [("Threat Name", "Exploit:Win32/CVE-2021-31207.B"), ("Path", "file:_C:\\inetpub\\x.aspx")],
            "2021-08-10T12:00:00Z",
        )
        + "</Events>\n"
    )
    res = hunt_paths([tmp_path / "EXCH01"], HuntOptions(jobs=1))
    got = {(f.rule, f.evidence.file, f.evidence.record) for f in res.findings}
    want = {
        ("proxylogon.oabvdir_cmdlet", "EventLogs/MSExchange Management.xml", 1),
        ("proxyshell.mailbox_export", "EventLogs/MSExchange Management.xml", 2),
        ("postexploit.transport_agent", "EventLogs/MSExchange Management.xml", 4),
        ("postexploit.chopper_commands", "EventLogs/Sysmon.xml", 10),
        ("postexploit.worker_child_process", "EventLogs/Sysmon.xml", 10),
        ("postexploit.cleanup_hiding", "EventLogs/Sysmon.xml", 10),
        ("postexploit.defender_detection", "EventLogs/Defender.xml", 20),
    }
    assert want <= got, want - got
    # A .pst export to a file share and WerFault under the UM worker are what they should be.
    # The export is still listed at review (Microsoft's guidance reads every New-MailboxExportRequest).
    assert not [g for g in got if g[2] == 11]
    low = {(f.rule, f.confidence) for f in res.findings if f.evidence.record == 3}
    assert low == {("proxyshell.mgmt_export_request", "review")}
    assert res.hosts[0].coverage.logs["evtx"].records == 7


def test_public_msexchange_management_rules_match(tmp_path: Path, shared_reference: Path) -> None:
    """The SigmaHQ rules for the MSExchange Management log run unmodified on exported events."""
    root = tmp_path / "EXCH01"
    root.mkdir()
    mgmt = "MSExchange Management"
    events = [
        _event(
            1,
            mgmt,
            "MSExchange CmdletLogs",
            1,
            [
                (None, "Set-OabVirtualDirectory"),
                (
                    None,
                    '-ExternalUrl \'http://f/&lt;script language="JScript" runat="server"&gt;function Page_Load(){eval(Request["k"],"unsafe");}&lt;/script&gt;\' -Identity \'OAB\'',
                ),
            ],
            "2021-03-03T06:59:18Z",
        ),
        _event(
            2,
            mgmt,
            "MSExchange CmdletLogs",
            1,
            [
                (None, "New-MailboxExportRequest"),
                (None, '-Mailbox "admin" -FilePath "\\\\127.0.0.1\\c$\\inetpub\\x.aspx"'),
            ],
            "2021-08-10T09:50:57Z",
        ),
        _event(
            3,
            mgmt,
            "MSExchange CmdletLogs",
            1,
            [(None, "Set-Mailbox"), (None, '-Identity "x" -ForwardingSmtpAddress "smtp:y@example.test"')],
            "2021-08-10T09:51:57Z",
        ),
    ]
    (root / "mgmt.xml").write_text("<Events>\n" + "".join(events) + "</Events>\n")
    rules = shared_reference / "public-rules" / "sigma"
    res = hunt_paths([root], HuntOptions(jobs=1, builtin_rules=False, rule_dirs=(rules,)))
    got = {(f.rule, f.evidence.record) for f in res.findings}
    assert got == {
        ("sigma.550d3350-bb8a-4ff3-9533-2ba533f4a1c0", 1),
        ("sigma.516376b4-05cd-4122-bae0-ad7641c38d48", 2),
    }
