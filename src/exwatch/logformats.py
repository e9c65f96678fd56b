"""Facts about Exchange's own log formats shared by the reader (hunt) and the writers (lab)."""

from __future__ import annotations

# The 74 HttpProxy fields of Exchange 2016 CU22, in order (shared/reference/log_formats.md 2.3). Readers use
# each file's own ``#Fields:`` line; this list serves writers and files that lost their header.
HTTPPROXY_FIELDS: tuple[str, ...] = (
    "DateTime",
    "RequestId",
    "MajorVersion",
    "MinorVersion",
    "BuildVersion",
    "RevisionVersion",
    "ClientRequestId",
    "Protocol",
    "UrlHost",
    "UrlStem",
    "ProtocolAction",
    "AuthenticationType",
    "IsAuthenticated",
    "AuthenticatedUser",
    "Organization",
    "AnchorMailbox",
    "UserAgent",
    "ClientIpAddress",
    "ServerHostName",
    "HttpStatus",
    "BackEndStatus",
    "ErrorCode",
    "Method",
    "ProxyAction",
    "TargetServer",
    "TargetServerVersion",
    "RoutingType",
    "RoutingHint",
    "BackEndCookie",
    "ServerLocatorHost",
    "ServerLocatorLatency",
    "RequestBytes",
    "ResponseBytes",
    "TargetOutstandingRequests",
    "AuthModulePerfContext",
    "HttpPipelineLatency",
    "CalculateTargetBackEndLatency",
    "GlsLatencyBreakup",
    "TotalGlsLatency",
    "AccountForestLatencyBreakup",
    "TotalAccountForestLatency",
    "ResourceForestLatencyBreakup",
    "TotalResourceForestLatency",
    "ADLatency",
    "SharedCacheLatencyBreakup",
    "TotalSharedCacheLatency",
    "ActivityContextLifeTime",
    "ModuleToHandlerSwitchingLatency",
    "ClientReqStreamLatency",
    "BackendReqInitLatency",
    "BackendReqStreamLatency",
    "BackendProcessingLatency",
    "BackendRespInitLatency",
    "BackendRespStreamLatency",
    "ClientRespStreamLatency",
    "KerberosAuthHeaderLatency",
    "HandlerCompletionLatency",
    "RequestHandlerLatency",
    "HandlerToModuleSwitchingLatency",
    "ProxyTime",
    "CoreLatency",
    "RoutingLatency",
    "HttpProxyOverhead",
    "TotalRequestTime",
    "RouteRefresherLatency",
    "UrlQuery",
    "BackEndGenericInfo",
    "GenericInfo",
    "GenericErrors",
    "EdgeTraceId",
    "DatabaseGuid",
    "UserADObjectGuid",
    "PartitionEndpointLookupLatency",
    "RoutingStatus",
)
assert len(HTTPPROXY_FIELDS) == 74

# The ECP server log and ECP activity log fields (shared/reference/log_formats.md 3 and 4).
ECP_FIELDS: tuple[str, ...] = ("TimeStamp", "ServerName", "EventId", "EventData")

# The default IIS W3C field set (shared/reference/log_formats.md 6): what IIS writes unless configured
# otherwise, and what the hunt assumes for an IIS log that lost its ``#Fields:`` header.
IIS_FIELDS: tuple[str, ...] = (
    "date",
    "time",
    "s-ip",
    "cs-method",
    "cs-uri-stem",
    "cs-uri-query",
    "s-port",
    "cs-username",
    "c-ip",
    "cs(User-Agent)",
    "cs(Referer)",
    "sc-status",
    "sc-substatus",
    "sc-win32-status",
    "time-taken",
)


# ---------------------------------------------------------------------------------------------------
# Tokenizers: one state machine per format, over the field grammar (never a regex over the whole line).
# Facts: shared/reference/log_formats.md (2.4 CSV quoting, 3 ECP EventData, 5 OAB generator, 6 IIS W3C).
# ---------------------------------------------------------------------------------------------------

W3C_EMPTY = "-"


def split_exchange_csv(line: str) -> list[str]:
    """The fields of one Exchange CSV log line (HttpProxy, ECP, EWS...).

    Grammar: fields separated by ``,``; a field that starts with ``"`` runs to the next ``"`` that is not
    doubled (``""`` is one quote) and may hold commas and line-ends; a quote inside an unquoted field is
    kept as is. A line cut inside a quoted field (Exchange truncates long values, files end mid-write)
    keeps what was written: the open field runs to the end of the line.
    """
    if '"' not in line:
        return line.split(",")  # the same fields as the loop below, at C speed (no quoted field)
    out: list[str] = []
    n = len(line)
    i = 0
    if n == 0:
        return [""]
    while True:
        if i < n and line[i] == '"':
            # Quoted field: jump from quote to quote (C-speed find), undoubling "" pairs.
            buf: list[str] = []
            j = i + 1
            while True:
                q = line.find('"', j)
                if q < 0:  # cut inside the quotes: keep the rest
                    buf.append(line[j:])
                    i = n
                    break
                buf.append(line[j:q])
                if q + 1 < n and line[q + 1] == '"':
                    buf.append('"')
                    j = q + 2
                    continue
                i = q + 1
                break
            # Text after the closing quote up to the next comma belongs to the same field (lenient).
            c = line.find(",", i)
            if c < 0:
                buf.append(line[i:])
                out.append("".join(buf))
                return out
            buf.append(line[i:c])
            out.append("".join(buf))
            i = c + 1
        else:
            c = line.find(",", i)
            if c < 0:
                out.append(line[i:])
                return out
            out.append(line[i:c])
            i = c + 1
        if i >= n:
            out.append("")
            return out


def join_exchange_csv(values: list[str]) -> str:
    """Write fields the way Exchange does: quoted (inner quotes doubled) only when needed."""
    out = []
    for v in values:
        if any(ch in v for ch in ',"\r\n') or v.startswith(" "):
            out.append('"' + v.replace('"', '""') + '"')
        else:
            out.append(v)
    return ",".join(out)


def parse_fields_header(line: str) -> list[str]:
    """Field names of a ``#Fields:`` line: comma-separated (Exchange) or space-separated (IIS W3C)."""
    body = line.split(":", 1)[1].strip() if ":" in line else ""
    if "," in body:
        return [f.strip() for f in split_exchange_csv(body)]
    return body.split()


def split_w3c(line: str, fields: list[str] | None = None) -> list[str]:
    """The values of one IIS W3C line; ``-`` (empty) becomes ``""``.

    IIS separates fields with one space and never writes a space inside a value (it writes ``+``). When a
    line still has more tokens than its ``#Fields`` header (another writer left a raw space, usually in
    the User-Agent or Referer), the fields before the first free-text field are taken from the left, the
    ones after it from the right, and the extra tokens stay in that free-text field.
    """
    tokens = line.split(" ")
    if fields is not None and len(tokens) > len(fields) > 0:
        free = next(
            (i for i, f in enumerate(fields) if f.lower() in ("cs(user-agent)", "cs(referer)", "cs(cookie)")),
            None,
        )
        if free is not None:
            tail = len(fields) - free - 1
            extra = len(tokens) - len(fields)
            merged = " ".join(tokens[free : free + extra + 1])
            tokens = tokens[:free] + [merged] + (tokens[len(tokens) - tail :] if tail else [])
    return ["" if t == W3C_EMPTY else t for t in tokens]


def w3c_text(value: str) -> str:
    """A W3C free-text value (User-Agent, Referer, Cookie) as sent: IIS wrote ``+`` for each space."""
    return value.replace("+", " ")


def url_decode(value: str, rounds: int = 2) -> str:
    """Percent-decoding, repeated (attackers double-encode); ``+`` is left alone (a literal in paths)."""
    from urllib.parse import unquote

    for _ in range(rounds):
        if "%" not in value:
            break
        decoded = unquote(value, errors="replace")
        if decoded == value:
            break
        value = decoded
    return value


def _read_single_quoted(text: str, i: int) -> tuple[str, int, bool]:
    """From the opening ``'`` at ``i``: the undoubled content, the index after the closing quote, and
    whether the quote was closed (a cut line leaves it open)."""
    buf: list[str] = []
    j = i + 1
    n = len(text)
    while True:
        q = text.find("'", j)
        if q < 0:
            buf.append(text[j:])
            return "".join(buf), n, False
        buf.append(text[j:q])
        if q + 1 < n and text[q + 1] == "'":
            buf.append("'")
            j = q + 2
            continue
        return "".join(buf), q + 1, True


def split_ecp_items(text: str) -> list[str]:
    """The ``;``-separated items of an ECP log's EventData (log_formats.md 3).

    An item that holds special characters is wrapped whole in single quotes (inner quotes doubled);
    inside an item, single-quoted strings (inner quotes doubled) may hold ``;``. A cut line leaves the
    last item open: it keeps what was written.
    """
    items: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == "'":
            item, i, _closed = _read_single_quoted(text, i)
            nxt = text.find(";", i)
            i = n if nxt < 0 else nxt + 1
            items.append(item)
            continue
        j = i
        while j < n:
            c = text[j]
            if c == "'":
                _, j, _closed = _read_single_quoted(text, j)
                continue
            if c == ";":
                break
            j += 1
        items.append(text[i:j])
        i = j + 1
    return items


def parse_ecp_eventdata(text: str) -> dict[str, str]:
    """``S:KEY`` -> value for every ``KEY=value`` item of an ECP EventData field."""
    out: dict[str, str] = {}
    for item in split_ecp_items(text):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = value
    return out


def parse_ecp_cmd(cmd: str) -> tuple[str, dict[str, str]]:
    """An ``S:CMD`` value as (cmdlet, parameter -> decoded value).

    Grammar: ``Cmdlet.Param=Value.Param2=Value``; a string value is single-quoted with inner quotes
    doubled (and may be cut: then it runs to the end); ``Pipeline.1|Get-X`` names a pipeline step.
    """
    n = len(cmd)
    i = 0
    # The cmdlet: up to the first '.' (a pipeline prefix 'Pipeline.<n>|' is skipped).
    if cmd.startswith("Pipeline."):
        bar = cmd.find("|")
        if bar >= 0:
            i = bar + 1
    dot = cmd.find(".", i)
    cmdlet = cmd[i : dot if dot >= 0 else n]
    params: dict[str, str] = {}
    i = n if dot < 0 else dot + 1
    while i < n:
        eq = cmd.find("=", i)
        if eq < 0:
            name = cmd[i:].strip()
            if name:
                params[name] = ""
            break
        name = cmd[i:eq].strip().lstrip(".")
        j = eq + 1
        if j < n and cmd[j] == "'":
            value, j, _closed = _read_single_quoted(cmd, j)
        else:
            d = cmd.find(".", j)
            # Unquoted values ($null, $true, numbers) end at the next '.'; a '.' inside a number such as
            # 1.5 is rare in ECP parameters and harmless (the rest becomes an odd parameter name).
            value, j = (cmd[j:], n) if d < 0 else (cmd[j:d], d)
        if name:
            params[name] = value
        if j < n and cmd[j] == ".":
            j += 1
        i = j
    return cmdlet, params


OAB_PHRASE = "download failed and temporary file"


def oab_temp_path(message: str) -> str | None:
    """The path of an OAB generator "Download failed and temporary file <path> needs to be removed"
    message (log_formats.md 5): single- or double-quoted (inner quotes doubled, may be cut), or bare up to
    `` needs to be removed``. None when the phrase is absent."""
    low = message.lower()
    k = low.find(OAB_PHRASE)
    if k < 0:
        return None
    i = k + len(OAB_PHRASE)
    n = len(message)
    while i < n and message[i] in " \t":
        i += 1
    if i >= n:
        return ""
    q = message[i]
    if q in "'\"":
        if q == "'":
            value, _, _closed = _read_single_quoted(message, i)
            return value
        end = message.find('"', i + 1)
        return message[i + 1 :] if end < 0 else message[i + 1 : end]
    end = low.find(" needs to be removed", i)
    if end < 0:
        end = n
    return message[i:end].strip()


# Sigma's standard webserver field names, mapped to IIS W3C and to HttpProxy fields (log_formats.md 2.3, 6).
W3C_ALIASES = {"cs(User-Agent)": "c-useragent", "cs(Referer)": "cs-referrer", "cs(Cookie)": "cs-cookie"}
HTTPPROXY_WEB_ALIASES = {
    "UrlStem": "cs-uri-stem",
    "UrlQuery": "cs-uri-query",
    "HttpStatus": "sc-status",
    "Method": "cs-method",
    "UserAgent": "c-useragent",
    "ClientIpAddress": "c-ip",
    "AuthenticatedUser": "cs-username",
    "UrlHost": "cs-host",
}


def _uri_fields(rec: dict[str, str]) -> None:
    stem, query = rec.get("cs-uri-stem", ""), rec.get("cs-uri-query", "")
    if query.startswith("?"):
        query = query[1:]
        rec["cs-uri-query"] = query
    rec["cs-uri"] = f"{stem}?{query}" if query else stem
    # The decoded form is what the server acted on: rules that judge meaning read it.
    rec["cs-uri-decoded"] = url_decode(rec["cs-uri"])


def build_record(family: str, fields: list[str] | tuple[str, ...], line: str) -> dict[str, str]:
    """A record (field name -> value) for one data line of a text log of ``family``, through the
    format's tokenizer; derived fields carry decoded values (``cs-uri-decoded``, ``Cmdlet``,
    ``CmdUrlValue``, ``TempFilePath``)."""
    names = list(fields)
    if family == "iis":
        rec = dict(zip(names, split_w3c(line, names), strict=False))
        for src, dst in W3C_ALIASES.items():
            if src in rec:
                rec[dst] = w3c_text(rec[src]) if dst == "c-useragent" else rec[src]
        _uri_fields(rec)
        return rec
    if family == "oabgenerator":
        rec = {"Message": line}
        path = oab_temp_path(line)
        if path is not None:
            rec["TempFilePath"] = path
        return rec
    rec = dict(zip(names, split_exchange_csv(line), strict=False))
    if family in ("httpproxy", "exchange_log"):
        for src, dst in HTTPPROXY_WEB_ALIASES.items():
            if src in rec:
                rec[dst] = rec[src]
        _uri_fields(rec)
    elif family in ("ecp", "ecp_activity") and "EventData" in rec:
        items = parse_ecp_eventdata(rec["EventData"])
        rec.update(items)
        cmd = items.get("S:CMD")
        if cmd:
            cmdlet, params = parse_ecp_cmd(cmd)
            rec["Cmdlet"] = cmdlet
            urls = [url_decode(v) for k, v in params.items() if k.lower().endswith("url")]
            if urls:
                rec["CmdUrlValue"] = "\n".join(urls)
    return rec
