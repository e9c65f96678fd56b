"""Hunting one file: plain top-level functions over plain data, so a process pool or Dask can run them.

``hunt_file(task)`` takes a dict (the file, its family, the rule sources) and returns a dict of findings,
coverage and errors. Each worker process loads and compiles the rules once (``load_bundle`` is cached).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from exwatch.errors import InputError
from exwatch.hunt.model import iso_z
from exwatch.hunt.nextsteps import facts_of
from exwatch.hunt.rules.catalog import info_for
from exwatch.hunt.rules.filerules import path_findings, vdir_config_findings
from exwatch.hunt.rules.iocs import IocSet, builtin_iocs, load_ioc_file, ua_key
from exwatch.hunt.rules.sigma_engine import (
    SigmaRuleSpec,
    best_group,
    load_rules,
    pair_pattern,
    required_literals,
)
from exwatch.hunt.sources.evtx import EvtxReport, read_event_xml, read_evtx, source_families
from exwatch.hunt.sources.lines import keyword_text, parse_time, record_time
from exwatch.hunt.sources.textlog import (
    LiteralFinder,
    decode_line,
    default_strategy,
    first_and_last_lines,
    iter_candidates,
    sniff_encoding,
    transcode_to_temp,
)
from exwatch.logformats import HTTPPROXY_FIELDS, build_record, parse_fields_header

TEXT_FAMILIES = ("httpproxy", "ecp", "ecp_activity", "oabgenerator", "iis", "exchange_log")
EVENT_FAMILIES = (
    "windows",
    "msexchange-management",
    "application",
    "process_creation",
    "file_event",
    "powershell",
    "windefend",
)
DEFAULT_FIELDS = {
    "iis": [
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
    ],
    "httpproxy": list(HTTPPROXY_FIELDS),
    "ecp": ["TimeStamp", "ServerName", "EventId", "EventData"],
    "ecp_activity": ["TimeStamp", "ServerName", "EventId", "EventData"],
}
EXCERPT = 600
# Documents and rule files that quote web-shell code (a write-up, a YARA file, an IOC list) are not
# pages IIS would run: content rules skip them (their names and hashes are still checked).
DOCUMENT_EXTENSIONS = (
    ".md",
    ".rst",
    ".yml",
    ".yaml",
    ".yar",
    ".yara",
    ".csv",
    ".json",
    ".pdf",
    ".html",
    ".htm",
)
CONTENT_SCAN_MAX = 10 * 1024 * 1024
# Pages and handlers IIS runs: larger than CONTENT_SCAN_MAX, their head and tail are still scanned.
SCRIPT_WINDOW = 256 * 1024
SCRIPT_EXTENSIONS = (".aspx", ".ashx", ".asmx", ".asp", ".cshtml", ".vbhtml", ".svc", ".config", ".dll")
HASH_MAX = 200 * 1024 * 1024


@dataclass
class Bundle:
    """Compiled rules for one worker: Sigma rules per family, their finders, YARA rules, indicators."""

    sigma: list[SigmaRuleSpec]
    iocs: IocSet
    yara: Any
    by_family: dict[str, list[SigmaRuleSpec]] = field(default_factory=dict)
    finders: dict[str, LiteralFinder] = field(default_factory=dict)
    pickers: dict[str, Callable[[str], tuple[list[SigmaRuleSpec], bool]]] = field(default_factory=dict)
    event_literals: frozenset[str] | None = None
    strategy: str = "re2"
    notes: list[str] = field(default_factory=list)
    # False with --no-builtin: only the user's rules and indicators run (built-in file checks too are off).
    builtin: bool = True
    _event_filter: Callable[[bytes], bool] | None = None

    def rules_for(self, family: str) -> list[SigmaRuleSpec]:
        if family not in self.by_family:
            self.by_family[family] = [r for r in self.sigma if r.applies_to(family)]
        return self.by_family[family]

    def rule_picker(self, family: str) -> Callable[[str], tuple[list[SigmaRuleSpec], bool]]:
        """A function from a lower-cased line to the rules it can match (the literals of one of the
        rule's alternatives are all on the line) and whether it holds an indicator literal (IP,
        User-Agent). One Aho-Corasick pass sets a bit per literal found; each rule is then a few
        integer tests (measured: 16 microseconds a line with substring tests per rule, see
        benchmarks/hunt/PROFILE.md)."""
        if family in self.pickers:
            return self.pickers[family]
        import ahocorasick

        rules = self.rules_for(family)
        naive = self.strategy == "none"
        bit: dict[str, int] = {}

        def mask_of(group: frozenset[str]) -> int:
            m = 0
            for lit in group:
                m |= bit.setdefault(lit, 1 << len(bit))
            return m

        always: list[int] = []
        needs: list[tuple[int, int, tuple[tuple[int, ...], ...]]] = []
        for i, r in enumerate(rules):
            if () in r.alternatives:
                always.append(i)
                continue
            alts = tuple(tuple(mask_of(g) for g in alt) for alt in r.alternatives)
            # A rule is looked at only when one literal of its first groups is on the line.
            firsts = 0
            for alt in alts:
                firsts |= alt[0]
            needs.append((i, firsts, alts))
        ioc_lits = self.iocs.literals() if family in ("httpproxy", "iis") else set()
        ioc_mask = mask_of(frozenset(ioc_lits)) if ioc_lits else 0
        ac = ahocorasick.Automaton()
        for lit, b in bit.items():
            ac.add_word(lit, b)
        if bit:
            ac.make_automaton()
        search = ac.iter if bit else None

        def pick(low: str) -> tuple[list[SigmaRuleSpec], bool]:
            if naive:
                return rules, True
            found = 0
            if search is not None:
                for _, b in search(low):
                    found |= b
            chosen = list(always)
            if found:
                for i, firsts, alts in needs:
                    if found & firsts:
                        for alt in alts:
                            for g in alt:
                                if not found & g:
                                    break
                            else:
                                chosen.append(i)
                                break
                chosen.sort()
            return [rules[i] for i in chosen], bool(found & ioc_mask)

        self.pickers[family] = pick
        return pick

    def event_filter(self) -> Callable[[bytes], bool]:
        """Whether an event's raw text (JSON or XML bytes) holds a literal some event rule needs."""
        if self._event_filter is None:
            lits = self.event_literals
            if lits is None:
                self._event_filter = lambda data: True
            else:
                self._event_filter = LiteralFinder(lits, "re2").hit
        return self._event_filter

    def finder_for(self, family: str) -> LiteralFinder:
        """The pre-filter of a text-log family: Hyperscan finds the lines holding one of the rules'
        loose literals (each rule's best group); each such line is then checked in RE2 against every
        alternative of every rule: "two or three of its literal groups on one line" (a pair pattern),
        or its one group's literals."""
        if family not in self.finders:
            rules = self.rules_for(family)
            lits = required_literals(rules)
            ioc = self.iocs.literals() if family in ("httpproxy", "iis") else set()
            if lits is None or self.strategy == "none":
                self.finders[family] = LiteralFinder(None, self.strategy)
                return self.finders[family]
            singles: set[str] = set(ioc)
            patterns: list[bytes] = []
            pairs = self.strategy in ("re2", "hyperscan")
            for r in rules:
                if () in r.alternatives:
                    singles |= r.literals or set()
                    continue
                # Each alternative of the rule: its literal groups on one line (a pair pattern), or
                # its one group's literals alone.
                for alt in r.alternatives:
                    pattern = pair_pattern(alt) if pairs and len(alt) > 1 else None
                    if pattern is not None:
                        patterns.append(pattern)
                    else:
                        singles |= best_group(alt) or set()
            self.finders[family] = LiteralFinder(
                lits | ioc, self.strategy, patterns=patterns, singles=singles
            )
        return self.finders[family]


def builtin_sigma_dir() -> Path:
    return Path(str(resources.files("exwatch.hunt.rules").joinpath("sigma")))


def builtin_yara_files() -> list[Path]:
    base = Path(str(resources.files("exwatch.hunt.rules").joinpath("yara")))
    return sorted(base.glob("*.yar"))


def compile_yara(files: list[Path], notes: list[str] | None = None) -> Any:
    """Compile YARA files with YARA-X.

    YARA-X is stricter than libyara about regular expressions (e.g. escapes like ``\\R`` that libyara
    ignores); a file refused for that is compiled again with YARA-X's ``relaxed_re_syntax`` (libyara's
    behaviour) and a note says so. Anything else YARA-X cannot compile is an InputError naming the file.
    """
    import yara_x

    def build(relaxed: bool) -> Any:
        compiler = yara_x.Compiler(relaxed_re_syntax=relaxed)
        for i, f in enumerate(files):
            try:
                text = f.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise InputError(f"{f}: cannot read YARA file: {exc.strerror}") from exc
            compiler.new_namespace(f"ns{i}")
            try:
                compiler.add_source(text, origin=str(f))
            except yara_x.CompileError as exc:
                raise _YaraFileError(f, str(exc).splitlines()[0]) from exc
        return compiler.build()

    try:
        return build(False)
    except _YaraFileError as strict:
        try:
            rules = build(True)
        except _YaraFileError as exc:
            raise InputError(f"{exc.path}: YARA-X cannot compile this rule file: {exc.reason}") from exc
        if notes is not None:
            notes.append(
                f"{strict.path}: compiled with YARA-X relaxed regular-expression syntax ({strict.reason})"
            )
        return rules


class _YaraFileError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


@cache
def _bundle_cached(
    builtin: bool,
    rule_dirs: tuple[str, ...],
    yara_files: tuple[str, ...],
    ioc_files: tuple[str, ...],
    strategy: str,
) -> Bundle:
    dirs = ([builtin_sigma_dir()] if builtin else []) + [Path(d) for d in rule_dirs]
    sigma = load_rules(dirs)
    iocs = builtin_iocs() if builtin else IocSet()
    for f in ioc_files:
        load_ioc_file(Path(f), iocs)
    yfiles = (builtin_yara_files() if builtin else []) + [Path(f) for f in yara_files]
    notes: list[str] = []
    yara = compile_yara(yfiles, notes) if yfiles else None
    bundle = Bundle(sigma=sigma, iocs=iocs, yara=yara, strategy=strategy, notes=notes, builtin=builtin)
    ev_rules = [r for r in sigma if any(r.applies_to(f) for f in EVENT_FAMILIES)]
    bundle.event_literals = required_literals(ev_rules)
    return bundle


def load_bundle(spec: dict[str, Any]) -> Bundle:
    """The compiled rules described by ``spec`` (cached per process)."""
    return _bundle_cached(
        bool(spec.get("builtin", True)),
        tuple(spec.get("rule_dirs", ())),
        tuple(spec.get("yara_files", ())),
        tuple(spec.get("ioc_files", ())),
        str(spec.get("strategy") or default_strategy()),
    )


def _iso(t: datetime | None) -> str | None:
    return iso_z(t, precise=True)  # the one time form of hunt output, sub-seconds kept for the engine


def _finding(
    rule_id: str,
    *,
    title: str,
    text: str,
    confidence: str | None,
    time: datetime | None,
    rel: str,
    line: int | None = None,
    record: int | None = None,
    offset: int | None,
    excerpt: str,
    why: str = "",
    facts: dict[str, str] | None = None,
) -> dict[str, Any]:
    info = info_for(rule_id, title=title, text=text, level_confidence=confidence or "review")
    return {
        "rule": rule_id,
        "wave": info.wave,
        "cve": info.cve,
        "confidence": info.confidence,
        "time": _iso(time),
        "title": title or info.meaning,
        "description": (why + " " if why else "") + info.description,
        "evidence": {
            "file": rel,
            **({"line": line} if line is not None else {}),
            **({"record": record} if record is not None else {}),
            "offset": offset,
            "excerpt": excerpt[:EXCERPT],
            "sha256": None,
            **({"facts": facts} if facts else {}),
        },
    }


def _in_window(t: datetime | None, since: str | None, until: str | None) -> bool:
    if t is None:
        return True
    if since and t < datetime.fromisoformat(since):
        return False
    return not (until and t > datetime.fromisoformat(until))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(4 * 1024 * 1024)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def hunt_file(task: dict[str, Any]) -> dict[str, Any]:
    """Hunt one evidence file; never raises for a bad file (the problem comes back in ``errors``)."""
    family = task["family"]
    out: dict[str, Any] = {
        "file": task["rel"],
        "family": family,
        "findings": [],
        "errors": [],
        "coverage": None,
        "stats": {},
    }
    try:
        bundle = load_bundle(task["rules"])
        if family in TEXT_FAMILIES:
            _hunt_text(task, bundle, out)
        elif family in ("evtx", "evtx_xml"):
            _hunt_events(task, bundle, out)
        else:
            _hunt_plain(task, bundle, out)
    except OSError as exc:
        out["errors"].append(
            {
                "file": task["rel"],
                "kind": "unreadable",
                "error": f"cannot read {task['rel']}: {exc.strerror or exc}",
            }
        )
    except (ValueError, RuntimeError, UnicodeError, MemoryError) as exc:
        out["errors"].append(
            {
                "file": task["rel"],
                "kind": "parse",
                "error": f"{task['rel']}: {type(exc).__name__}: {str(exc)[:200]}",
            }
        )
    except Exception as exc:  # one hostile file must never stop the hunt of the others
        out["errors"].append(
            {
                "file": task["rel"],
                "kind": "internal",
                "error": f"{task['rel']}: not fully hunted: {type(exc).__name__}: {str(exc)[:200]}",
            }
        )
    cov = out["coverage"] or {}
    first = datetime.fromisoformat(cov["first"].replace("Z", "+00:00")) if cov.get("first") else None
    last = datetime.fromisoformat(cov["last"].replace("Z", "+00:00")) if cov.get("last") else None
    since, until = task.get("since"), task.get("until")
    # Whether this log holds evidence inside --since/--until (a host with none is incomplete, not clean).
    out["in_window"] = not (
        task.get("coverage_only")
        or cov.get("records") == 0
        or (since and last and last < datetime.fromisoformat(since))
        or (until and first and first > datetime.fromisoformat(until))
    )
    try:
        if out["findings"]:
            try:
                digest = _sha256(task["path"])
                for f in out["findings"]:
                    f["evidence"]["sha256"] = digest
            except OSError:
                pass
    finally:
        if task.get("temp"):
            # An archive member in the hunt's temp dir: its space is given back as soon as it is hunted.
            with contextlib.suppress(OSError):
                os.unlink(task["path"])
    return out


class _Limited:
    """A binary file read up to ``limit`` bytes (the per-file limit of the readers)."""

    def __init__(self, fh: Any, limit: int) -> None:
        self.fh = fh
        self.left = limit

    def seekable(self) -> bool:
        return False  # readers then keep their own tail instead of seeking back

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.fh.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        return bytes(data)


def _line_times(lines: list[bytes], most: int = 8) -> list[datetime]:
    """Times of the first ``most`` dated lines (the caller passes the tail reversed)."""
    out: list[datetime] = []
    for raw in lines:
        if len(out) >= most:
            break
        text = decode_line(raw)
        if not text or text.startswith("#"):
            continue
        t = parse_time(text[:120])
        if t:
            out.append(t)
    return out


def _hunt_text(task: dict[str, Any], bundle: Bundle, out: dict[str, Any]) -> None:
    family = task["family"]
    rel = task["rel"]
    path = task["path"]
    rule_family = "httpproxy" if family == "exchange_log" else family
    rules = bundle.rules_for(rule_family)
    finder = bundle.finder_for(rule_family)
    pick = bundle.rule_picker(rule_family)
    since, until = task.get("since"), task.get("until")
    windowed = bool(since or until)
    tmpdir = None
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            fh.seek(0)
            encoding = sniff_encoding(head)
            if encoding != "utf-8":
                tmpdir = tempfile.mkdtemp(prefix="exwatch-enc-")
                path = str(transcode_to_temp(fh, encoding, tmpdir))
                out["stats"]["encoding"] = encoding
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head_lines, tail_lines = first_and_last_lines(fh, size)
            # Logs are written in time order; min and max over both ends also hold when a few lines are not.
            times = _line_times(head_lines) + _line_times(tail_lines[::-1])
            first = min(times, default=None)
            last = max(times, default=None)
            out["coverage"] = {"family": family, "first": _iso(first), "last": _iso(last), "bytes": size}
            if (not rules and not bundle.iocs.ips and not bundle.iocs.user_agents) or task.get(
                "coverage_only"
            ):
                return
            fields: list[str] | None = DEFAULT_FIELDS.get(family)
            header_changes = 0
            candidates = 0
            parsed = 0
            truncated_lines = 0
            limit = int(task.get("max_file_bytes") or 0)
            stream: Any = fh
            if limit and size > limit:
                stream = _Limited(fh, limit)
                out["errors"].append(
                    {
                        "file": rel,
                        "kind": "file_limit",
                        "error": f"{rel}: {size:,} bytes, larger than the limit of {limit:,} (--max-file-bytes): only the first {limit:,} bytes were hunted",
                    }
                )
            for cand in iter_candidates(
                stream,
                finder,
                chunk_size=task.get("chunk_size", 16 << 20),
                max_line=task.get("max_line", 1 << 20),
            ):
                text = decode_line(cand.data)
                if text.startswith("#"):
                    if text[:8].lower() == "#fields:":
                        fields = parse_fields_header(text)
                        header_changes += 1
                    continue
                if not text.strip():
                    continue
                candidates += 1
                if cand.truncated:
                    truncated_lines += 1
                    out["errors"].append(
                        {
                            "file": rel,
                            "kind": "long_line",
                            "error": f"{rel}: line {cand.line_no} longer than {task.get('max_line', 1 << 20)} bytes; only its start was parsed",
                        }
                    )
                if fields is None and family != "oabgenerator":
                    fields = []
                # Only the rules whose required literals are all on this line can match it; a line
                # no rule and no indicator can match is not parsed at all.
                picked, ioc = pick(text.lower())
                if not picked and not ioc:
                    continue
                parsed += 1
                rec = build_record(family, fields or [], text)
                # Keywords search the line as written and its decoded values (a published line pattern such as
                # MSRC's reads the raw line; a value unquoted by the tokenizer reads as the server saw it).
                # Built only when a picked rule has keywords; the time only for a window or a finding.
                kw = text + "\n" + keyword_text(rec) if any(r.keywords for r in picked) else text
                timed = False
                t = None
                if windowed:
                    t, timed = record_time(family, rec, text), True
                    if not _in_window(t, since, until):
                        continue
                line_rules: set[str] = set()
                for rule in picked:
                    if rule.rule_id in line_rules:
                        continue  # two rule files may share an id (variants of one detection)
                    try:
                        matched = rule.predicate(rec, kw)
                    except (KeyError, TypeError, ValueError):
                        matched = False
                    if matched:
                        line_rules.add(rule.rule_id)
                        if not timed:
                            t, timed = record_time(family, rec, text), True
                        out["findings"].append(
                            _finding(
                                rule.rule_id,
                                title=rule.title,
                                text=f"{rule.title} {' '.join(rule.tags)}",
                                confidence=rule.meta.get("confidence"),
                                time=t,
                                rel=rel,
                                line=cand.line_no,
                                offset=cand.offset,
                                excerpt=text,
                                facts=facts_of(family, rec),
                            )
                        )
                if ioc:
                    if not timed:
                        t, timed = record_time(family, rec, text), True
                    _context(bundle, rec, family, t, rel, cand.line_no, cand.offset, text, out)
            out["stats"].update(
                {
                    "candidates": candidates,
                    "parsed": parsed,
                    "headers": header_changes,
                    "truncated": truncated_lines,
                }
            )
    finally:
        if tmpdir:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)


def _context(
    bundle: Bundle,
    rec: dict[str, str],
    family: str,
    t: datetime | None,
    rel: str,
    line: int,
    offset: int,
    text: str,
    out: dict[str, Any],
) -> None:
    if family not in ("httpproxy", "iis"):
        return
    ip = rec.get("c-ip") or rec.get("ClientIpAddress") or ""
    ua = rec.get("c-useragent") or rec.get("UserAgent") or ""
    for kind, value in (("ip", ip.strip()), ("ua", ua_key(ua) if ua else "")):
        hit = bundle.iocs.user_hit(kind, value) if value else None
        if hit:
            out["findings"].append(_user_ioc(hit, kind, value, t, rel, line, offset, text))
    if ip and ip.strip() in bundle.iocs.ips and not bundle.iocs.user_hit("ip", ip.strip()):
        out["findings"].append(
            _finding(
                "context.attacker_ip",
                title="Published attacker IP address",
                text="",
                confidence=None,
                time=t,
                rel=rel,
                line=line,
                offset=offset,
                excerpt=text,
                why=f"Client {ip}: {bundle.iocs.ips[ip.strip()]}.",
                facts=facts_of(family, rec),
            )
        )
    if ua and ua_key(ua) in bundle.iocs.user_agents and not bundle.iocs.user_hit("ua", ua_key(ua)):
        out["findings"].append(
            _finding(
                "context.user_agent",
                title="User-Agent reported in March 2021 exploitation",
                text="",
                confidence=None,
                time=t,
                rel=rel,
                line=line,
                offset=offset,
                excerpt=text,
                why=f"User-Agent {ua!r}.",
            )
        )


def _user_ioc(
    hit: tuple[str, str, str],
    kind: str,
    value: str,
    t: datetime | None,
    rel: str,
    line: int | None,
    offset: int | None,
    excerpt: str,
) -> dict[str, Any]:
    """A finding for the user's own indicator: titled from their file, at the confidence it states."""
    title, description, confidence = hit
    what = {"ip": "address", "ua": "User-Agent", "sha256": "SHA256", "path": "path"}[kind]
    return _finding(
        "ioc.user",
        title=title,
        text="",
        confidence=confidence,
        time=t,
        rel=rel,
        line=line,
        offset=offset,
        excerpt=excerpt,
        why=(description + " " if description else "")
        + f"Matched {what} {value!r} from your indicator file.",
    )


def _hunt_events(task: dict[str, Any], bundle: Bundle, out: dict[str, Any]) -> None:
    rel = task["rel"]
    report = EvtxReport()
    want = bundle.event_filter()

    limit = int(task.get("max_file_bytes") or 0) or None
    records = (
        read_evtx(Path(task["path"]), report, want, limit)
        if task["family"] == "evtx"
        else read_event_xml(Path(task["path"]), want, report, limit)
    )
    since, until = task.get("since"), task.get("until")
    n = 0
    first: datetime | None = None
    last: datetime | None = None
    channels: set[str] = set()
    for rec in records:
        n += 1
        if rec.time:
            first = rec.time if first is None or rec.time < first else first
            last = rec.time if last is None or rec.time > last else last
        if rec.source:
            channels.add(rec.source)
        if not rec.parsed:
            continue
        if not _in_window(rec.time, since, until):
            continue
        low = (rec.text + " " + " ".join(rec.fields.values())).lower()
        for fam in source_families(rec.fields):
            for rule in bundle.rule_picker(fam)(low)[0]:
                try:
                    matched = rule.predicate(rec.fields, rec.text)
                except (KeyError, TypeError, ValueError):
                    matched = False
                if matched:
                    out["findings"].append(
                        _finding(
                            rule.rule_id,
                            title=rule.title,
                            text=f"{rule.title} {' '.join(rule.tags)}",
                            confidence=rule.meta.get("confidence"),
                            time=rec.time,
                            rel=rel,
                            record=rec.record_id,
                            offset=rec.offset,
                            excerpt=f"{rec.fields.get('Provider_Name', '')} {rec.fields.get('EventID', '')}: {rec.text}",
                            facts=facts_of("event", rec.fields),
                        )
                    )
    # A rule may match in two families (e.g. product windows and process_creation): keep one per record.
    seen: set[tuple[str, Any]] = set()
    unique = []
    for f in out["findings"]:
        key = (f["rule"], f["evidence"].get("record"))
        if key not in seen:
            seen.add(key)
            unique.append(f)
    out["findings"] = unique
    for kind, problem in report.problems():
        out["errors"].append({"file": rel, "kind": kind, "error": f"{rel}: {problem}"})
    out["coverage"] = {
        "family": "evtx",
        "first": _iso(first),
        "last": _iso(last),
        "records": n,
        "channels": sorted(channels),
    }
    out["stats"]["records"] = n


def _hunt_plain(task: dict[str, Any], bundle: Bundle, out: dict[str, Any]) -> None:
    rel = task["rel"]
    path = task["path"]
    size = int(task.get("size", 0))
    mtime = datetime.fromtimestamp(float(task.get("mtime", 0)), UTC)
    from exwatch.hunt.rules.iocs import path_key

    user_path = bundle.iocs.user_hit("path", path_key(rel))
    if user_path is None:
        # A user's path indicator may be given with its drive and install folders: compare the tails.
        key = path_key(rel)
        user_path = next(
            (
                m
                for (k, v), m in bundle.iocs.user.items()
                if k == "path" and (key.endswith("/" + v) or v.endswith("/" + key))
            ),
            None,
        )
    if user_path:
        out["findings"].append(_user_ioc(user_path, "path", rel, mtime, rel, None, None, rel))
    for rule_id, why in path_findings(rel, bundle.iocs) if bundle.builtin else ():
        out["findings"].append(
            _finding(
                rule_id,
                title="",
                text="",
                confidence=None,
                time=mtime,
                rel=rel,
                offset=None,
                excerpt=rel,
                why=why.capitalize() + ".",
            )
        )
    name = rel.lower().rsplit("/", 1)[-1]
    low_name = name
    script = low_name.endswith(SCRIPT_EXTENSIONS)
    if size <= HASH_MAX and (size <= CONTENT_SCAN_MAX or script):
        digest = hashlib.sha256()
        data = b""
        # (offset in the file, bytes) of what the content rules see: all of a small file; the head and
        # the tail of a large script (a web shell padded past the scan size is still found).
        parts: list[tuple[int, bytes]] = []
        with open(path, "rb") as fh:
            if size <= CONTENT_SCAN_MAX:
                data = fh.read(CONTENT_SCAN_MAX + 1)
                digest.update(data)
                parts = [(0, data)]
            else:
                while True:
                    b = fh.read(4 << 20)
                    if not b:
                        break
                    digest.update(b)
                # Each end is scanned as if it were the file: web-shell rules judge small files
                # (filesize conditions), which padding would otherwise defeat.
                fh.seek(0)
                data = fh.read(SCRIPT_WINDOW)
                tail_at = size - SCRIPT_WINDOW
                fh.seek(tail_at)
                parts = [(0, data), (tail_at, fh.read(SCRIPT_WINDOW))]
                out["errors"].append(
                    {
                        "file": rel,
                        "kind": "partial_scan",
                        "error": f"{rel}: {size:,} bytes, above {CONTENT_SCAN_MAX:,}: the content rules scanned its first and last {SCRIPT_WINDOW:,} bytes, {tail_at - SCRIPT_WINDOW:,} bytes in the middle were not scanned (its name and hash were checked)",
                    }
                )
        hexd = digest.hexdigest()
        user_hash = bundle.iocs.user_hit("sha256", hexd)
        if user_hash:
            out["findings"].append(
                _user_ioc(user_hash, "sha256", hexd, mtime, rel, None, 0, f"sha256 {hexd}")
            )
        elif hexd in bundle.iocs.sha256:
            out["findings"].append(
                _finding(
                    "webshell.known_hash",
                    title="",
                    text="",
                    confidence=None,
                    time=mtime,
                    rel=rel,
                    offset=0,
                    excerpt=f"sha256 {hexd}",
                    why=f"SHA256 listed as {bundle.iocs.sha256[hexd]}.",
                )
            )
        if data and bundle.yara is not None and not low_name.endswith(DOCUMENT_EXTENSIONS):
            import yara_x

            scanner = yara_x.Scanner(bundle.yara)
            matched: set[str] = set()
            for base, part in parts:
                try:
                    results = scanner.scan(part)
                except yara_x.ScanError as exc:
                    out["errors"].append(
                        {"file": rel, "kind": "yara", "error": f"{rel}: YARA scan failed: {exc}"}
                    )
                    continue
                for m in results.matching_rules:
                    meta = dict(m.metadata)
                    rid = str(meta.get("exwatch_id") or f"yara.{m.identifier}")
                    if rid in matched:
                        continue
                    matched.add(rid)
                    # meta.exwatch_evidence names the patterns whose first match is the evidence line.
                    anchor = str(meta.get("exwatch_evidence", "$"))
                    offs = [
                        match.offset
                        for p in m.patterns
                        if p.identifier.startswith(anchor)
                        for match in p.matches
                    ]
                    offs = offs or [match.offset for p in m.patterns for match in p.matches]
                    off = min(offs) if offs else 0
                    excerpt = part[off : off + 300].decode("utf-8", "backslashreplace")
                    out["findings"].append(
                        _finding(
                            rid,
                            title=str(meta.get("description") or m.identifier),
                            text=f"{m.identifier} {meta.get('description', '')} webshell",
                            confidence=str(meta.get("exwatch_confidence", "likely")),
                            time=mtime,
                            rel=rel,
                            # Lines are counted in the head only (the middle of a large file is not read).
                            line=part.count(b"\n", 0, off) + 1 if base == 0 else None,
                            offset=base + off,
                            excerpt=excerpt,
                            why=f"YARA rule {m.identifier} matched.",
                        )
                    )
        if low_name == "applicationhost.config" and data and bundle.builtin:
            text = data.decode("utf-8", "replace")
            for line, off, excerpt in vdir_config_findings(text):
                out["findings"].append(
                    _finding(
                        "proxyshell.iis_vdir_config",
                        title="",
                        text="",
                        confidence=None,
                        time=mtime,
                        rel=rel,
                        line=line,
                        offset=off,
                        excerpt=excerpt,
                    )
                )
    if not _in_window(mtime, task.get("since"), task.get("until")):
        # --since/--until select file evidence by modification time, like log evidence by event time.
        out["findings"] = []
    out["coverage"] = {"family": "files", "first": _iso(mtime), "last": _iso(mtime), "bytes": size}
