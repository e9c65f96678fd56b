// exwatch built-in web-shell rules for YARA-X. Written from the descriptions in
// shared/reference/detections.md (WS-2, WS-3), which summarise signature-base, MSTIC, BSI and Volexity rules.
// meta.exwatch_id ties each rule to an exwatch rule id (RULE_IDS.md).

rule exwatch_chopper_jscript_eval {
    meta:
        exwatch_id = "webshell.chopper"
        exwatch_evidence = "$inj"
        description = "China Chopper: JScript page evaluating a request parameter with the unsafe option (WS-2a)"
    strings:
        $inj1 = "<script language=\"JScript\" runat=\"server\">function Page_Load(){eval(Request" nocase
        $inj2 = "<script language=\"JScript\" runat=\"server\"> function Page_Load(){eval (Request[\"" nocase
        $eval = /eval\s{0,3}\(\s{0,3}Request(\.Item)?\s{0,3}\[[^\]]{1,60}\]\s{0,3},\s{0,3}"unsafe"/ nocase
        $fp1 = "GET /"
        $fp2 = "POST /"
    condition:
        filesize < 300KB and any of ($inj*, $eval) and not any of ($fp*)
}

rule exwatch_oab_config_dump {
    meta:
        exwatch_id = "proxylogon.oab_config_dump"
        exwatch_evidence = "$s"
        description = "OAB virtual-directory configuration written to disk with a script in ExternalUrl (WS-2b, CVE-2021-27065)"
    strings:
        $s1 = "script language" nocase
        $s2 = "page language" nocase
        $s3 = "runat=\"server\"" nocase
        $s4 = "/script" nocase
        $u1 = "externalurl" nocase
        $u2 = "internalurl" nocase
        $a = "internalauthenticationmethods" nocase
        $b = "extendedprotectiontokenchecking" nocase
    condition:
        filesize < 50KB and any of ($s*) and any of ($u*) and $a and $b
}

rule exwatch_pst_der_shell {
    meta:
        exwatch_id = "proxyshell.pst_shell"
        exwatch_evidence = "$hdr"
        description = "ProxyShell shell written by a mailbox export (PST header) or certificate request (DER header) (WS-2c)"
    strings:
        $hdr_pst = { 21 42 44 4E }
        $hdr_der = { 30 82 }
        $page = "Page Language=" nocase
        $b64 = ".FromBase64String(Request[" nocase
    condition:
        ($hdr_pst at 0 and filesize < 2MB and ($page or $b64))
        or ($hdr_der at 0 and filesize < 10KB and $page)
}

rule exwatch_upload_eval_shells {
    meta:
        exwatch_id = "webshell.upload_shell"
        description = "Small uploader and eval pages: SaveAs(Server.MapPath, FromBase64String eval, StreamWriter(Request.Form, SIMPLESEESHARP (WS-2a, WS-2d)"
    strings:
        $up1 = "runat=\"server\">void Page_Load(object" nocase
        $up2 = "Request.Files[0].SaveAs(Server.MapPath(" nocase
        $b1 = "<%@Page Language=\"Jscript\"%>" nocase
        $b2 = ".FromBase64String(" nocase
        $b3 = "eval(System.Text.Encoding." nocase
        $d1 = "<%@ Page Language=\"Jscript\" Debug=true%>" nocase
        $d2 = "=Request.Form(\"" nocase
        $d3 = "eval(" nocase
        $w1 = "<script runat=\"server\">" nocase
        $w2 = "new System.IO.StreamWriter(Request.Form[" nocase
        $w3 = ".Write(Request.Form[" nocase
        $ss1 = "<%@ Page Language=\"C#\" %>"
        $ss2 = "HttpPostedFile"
        $f1 = "Request.Form[\"f\"]"
        $f2 = "Request.Form[\"p\"]"
        $f3 = "Page_Load"
    condition:
        (filesize < 50KB and $up1 and $up2)
        or (filesize < 850 and $b1 and $b2 and $b3)
        or (filesize < 300 and $d1 and $d2 and $d3)
        or (filesize < 100KB and $w1 and $w2 and $w3)
        or (filesize < 1KB and $ss1 at 0 and $ss2)
        or (filesize < 10KB and $f1 and $f2 and $f3)
}

rule exwatch_compiled_webshell_dll {
    meta:
        exwatch_id = "webshell.compiled_dll"
        description = "ASP.NET-compiled web shell App_Web_*.dll (BSI rule as described in WS-3)"
    strings:
        $name = /App_Web_[a-z0-9]{7,8}/ nocase ascii wide
        $p1 = "~/aspnet_client/" ascii wide
        $p2 = "~/auth/" ascii wide
        $j = "JScriptEvaluate" ascii wide
        $g1 = "get_Request" ascii wide
        $g2 = "get_Files" ascii wide
        $g3 = "get_Count" ascii wide
        $g4 = "get_Item" ascii wide
        $g5 = "get_Server" ascii wide
    condition:
        uint16(0) == 0x5A4D and filesize > 5KB and filesize < 40KB and $name and any of ($p*)
        and ($j or all of ($g*))
}

rule exwatch_wer_ecp_apppool {
    meta:
        exwatch_id = "proxylogon.wer_ecp_apppool"
        description = "Windows Error Reporting report of w3wp.exe in MSExchangeECPAppPool (PL-4, signature-base APT_HAFNIUM_ForensicArtefacts_WER_Mar21_1 as described)"
        exwatch_evidence = "$pool"
    strings:
        $hdr = "Version=" ascii wide
        $w3wp = "w3wp.exe" ascii wide nocase
        $pool = "w3wp#MSExchangeECPAppPool" ascii wide nocase
    condition:
        filesize < 1MB and ($hdr at 0 or (uint16(0) == 0xFEFF and $hdr at 2)) and $w3wp and $pool
}

rule exwatch_recon_cab {
    meta:
        exwatch_id = "postexploit.recon_cab"
        description = "CAB archive packing recon output (ip.txt, arp.txt, system, security) (PE-6, signature-base as described)"
    strings:
        $ip = "ip.txt"
        $arp = "arp.txt"
        $sys = "system"
        $sec = "security"
    condition:
        uint32(0) == 0x4643534D and $ip in (0..200) and $arp in (0..200) and $sys in (0..200) and $sec in (0..200)
}
