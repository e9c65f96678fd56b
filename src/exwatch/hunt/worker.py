"""Hunting one file: plain top-level functions over plain data, so a process pool or Dask can run them.

``hunt_file(task)`` takes a ``HuntTask`` (the file, its family, the rule sources) and returns a
``FileHunt`` (findings without host, errors, coverage, counters). Each worker process loads and
compiles the rules once (``load_bundle`` is cached).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from exwatch.errors import InputError
from exwatch.hunt.model import (
    Evidence,
    FileCoverage,
    FileError,
    FileHunt,
    FileStats,
    Finding,
    HuntTask,
    RuleSpec,
    as_utc,
)
from exwatch.hunt.nextsteps import centre_excerpt, facts_of
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
from exwatch.hunt.sources.evtx import EventRecord, EvtxReport, read_event_xml, read_evtx, source_families
from exwatch.hunt.sources.files import TEXT_LOG_FAMILIES
from exwatch.hunt.sources.lines import keyword_text, parse_time, record_time
from exwatch.hunt.sources.textlog import (
    CandidateLine,
    LiteralFinder,
    decode_line,
    default_strategy,
    first_and_last_lines,
    iter_candidates,
    sniff_encoding,
    transcode_to_temp,
)
from exwatch.logformats import ECP_FIELDS, HTTPPROXY_FIELDS, IIS_FIELDS, build_record, parse_fields_header

EVENT_FAMILIES = (
    "windows",
    "msexchange-management",
    "application",
    "process_creation",
    "file_event",
    "powershell",
    "windefend",
)
# The fields of a log that lost its ``#Fields:`` header (each file's own header wins).
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "iis": IIS_FIELDS,
    "httpproxy": HTTPPROXY_FIELDS,
    "ecp": ECP_FIELDS,
    "ecp_activity": ECP_FIELDS,
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


def load_bundle(spec: RuleSpec) -> Bundle:
    """The compiled rules described by ``spec`` (cached per process)."""
    return _bundle_cached(
        spec.builtin,
        tuple(spec.rule_dirs),
        tuple(spec.yara_files),
        tuple(spec.ioc_files),
        spec.strategy or default_strategy(),
    )


def match_at(low: str, rule: SigmaRuleSpec) -> int | None:
    """Where the matched part of a lower-cased line or event text starts, from the rule's literals: of
    the first alternative whose literal groups are all in ``low``, the group found furthest in (the part
    that made the match, beyond what every line of the kind shares). None for a rule without literals."""
    for alt in rule.alternatives:
        spots: list[int] = []
        for group in alt:
            found = [i for lit in group if (i := low.find(lit)) >= 0]
            if not found:
                break
            spots.append(min(found))
        else:
            if spots:
                return max(spots)
    return None


class _FileOut:
    """What the hunt of one file gathers: findings (without host), errors, coverage and counters."""

    def __init__(self, task: HuntTask) -> None:
        self.task = task
        self.findings: list[Finding] = []
        self.errors: list[FileError] = []
        self.coverage: FileCoverage | None = None
        self.stats = FileStats()

    def error(self, kind: str, message: str) -> None:
        self.errors.append(FileError(self.task.rel, message, kind))

    def count(self, **counters: Any) -> None:
        self.stats = replace(self.stats, **counters)

    def add(
        self,
        rule_id: str,
        *,
        title: str = "",
        text: str = "",
        confidence: str | None = None,
        time: datetime | None,
        line: int | None = None,
        record: int | None = None,
        offset: int | None,
        excerpt: str,
        why: str = "",
        facts: dict[str, str] | None = None,
        focus: int | None = None,
    ) -> None:
        """A finding of ``rule_id`` in this file; ``focus`` is where the matched part starts in
        ``excerpt`` (the excerpt is centred on it when it lies past the cut). Without a title, text and
        confidence, the rule catalogue's for ``rule_id``."""
        info = info_for(rule_id, title=title, text=text, level_confidence=confidence or "review")
        cut, at = centre_excerpt(excerpt, EXCERPT, focus)
        self.findings.append(
            Finding(
                rule=rule_id,
                wave=info.wave,
                cve=info.cve,
                confidence=info.confidence,
                time=as_utc(time),
                title=title or info.meaning,
                description=(why + " " if why else "") + info.description,
                host="",
                evidence=Evidence(
                    file=self.task.rel,
                    line=line,
                    record=record,
                    offset=offset,
                    excerpt=cut,
                    family=self.task.family,
                    facts=dict(facts) if facts else {},
                    focus=at,
                ),
            )
        )

    def add_rule(self, rule: SigmaRuleSpec, *, time: datetime | None, excerpt: str, **where: Any) -> None:
        """A finding of a Sigma rule, its excerpt centred on the rule's literals."""
        self.add(
            rule.rule_id,
            title=rule.title,
            text=f"{rule.title} {' '.join(rule.tags)}",
            confidence=rule.meta.get("confidence"),
            time=time,
            excerpt=excerpt,
            focus=match_at(excerpt.lower(), rule),
            **where,
        )

    def add_user_ioc(
        self,
        hit: tuple[str, str, str],
        kind: str,
        value: str,
        t: datetime | None,
        *,
        line: int | None,
        offset: int | None,
        excerpt: str,
    ) -> None:
        """A finding for the user's own indicator: titled from their file, at the confidence it states."""
        title, description, confidence = hit
        what = {"ip": "address", "ua": "User-Agent", "sha256": "SHA256", "path": "path"}[kind]
        self.add(
            "ioc.user",
            title=title,
            text="",
            confidence=confidence,
            time=t,
            line=line,
            offset=offset,
            excerpt=excerpt,
            why=(description + " " if description else "")
            + f"Matched {what} {value!r} from your indicator file.",
            focus=_found(excerpt, value),
        )

    def result(self, in_window: bool) -> FileHunt:
        return FileHunt(
            file=self.task.rel,
            family=self.task.family,
            findings=tuple(self.findings),
            errors=tuple(self.errors),
            coverage=self.coverage,
            stats=self.stats,
            in_window=in_window,
        )


def _found(text: str, value: str) -> int | None:
    at = text.find(value) if value else -1
    return at if at >= 0 else None


def _in_window(t: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    if t is None:
        return True
    if since and t < since:
        return False
    return not (until and t > until)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(4 * 1024 * 1024)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def hunt_file(task: HuntTask) -> FileHunt:
    """Hunt one evidence file; never raises for a bad file (the problem comes back in ``errors``)."""
    out = _FileOut(task)
    try:
        bundle = load_bundle(task.rules)
        if task.family in TEXT_LOG_FAMILIES:
            _hunt_text(task, bundle, out)
        elif task.family in ("evtx", "evtx_xml"):
            _hunt_events(task, bundle, out)
        else:
            _hunt_plain(task, bundle, out)
    except OSError as exc:
        out.error("unreadable", f"cannot read {task.rel}: {exc.strerror or exc}")
    except (ValueError, RuntimeError, UnicodeError, MemoryError) as exc:
        out.error("parse", f"{task.rel}: {type(exc).__name__}: {str(exc)[:200]}")
    except Exception as exc:  # one hostile file must never stop the hunt of the others
        out.error("internal", f"{task.rel}: not fully hunted: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        if out.findings:
            try:
                digest = _sha256(task.path)
                out.findings = [replace(f, evidence=replace(f.evidence, sha256=digest)) for f in out.findings]
            except OSError:
                pass
    finally:
        if task.temp:
            # An archive member in the hunt's temp dir: its space is given back as soon as it is hunted.
            with contextlib.suppress(OSError):
                os.unlink(task.path)
    return out.result(_holds_window(task, out.coverage))


def _holds_window(task: HuntTask, cov: FileCoverage | None) -> bool:
    """Whether a log holds evidence inside --since/--until (a host with none is incomplete, not clean)."""
    first = cov.first if cov else None
    last = cov.last if cov else None
    return not (
        task.coverage_only
        or (cov is not None and cov.records == 0)
        or (task.since and last and last < task.since)
        or (task.until and first and first > task.until)
    )


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


def _as_utf8(path: str, out: _FileOut, tmpdirs: list[str]) -> str:
    """``path``, or a UTF-8 copy of it in a temp dir (added to ``tmpdirs``) for a UTF-16 log."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
        fh.seek(0)
        encoding = sniff_encoding(head)
        if encoding == "utf-8":
            return path
        tmpdirs.append(tempfile.mkdtemp(prefix="exwatch-enc-"))
        copy = str(transcode_to_temp(fh, encoding, tmpdirs[-1]))
        out.count(encoding=encoding)
        return copy


def _hunt_text(task: HuntTask, bundle: Bundle, out: _FileOut) -> None:
    rule_family = "httpproxy" if task.family == "exchange_log" else task.family
    tmpdirs: list[str] = []
    try:
        path = _as_utf8(task.path, out, tmpdirs)
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head_lines, tail_lines = first_and_last_lines(fh, size)
            # Logs are written in time order; min and max over both ends also hold when a few lines are not.
            times = _line_times(head_lines) + _line_times(tail_lines[::-1])
            out.coverage = FileCoverage(
                task.family, as_utc(min(times, default=None)), as_utc(max(times, default=None)), size
            )
            rules = bundle.rules_for(rule_family)
            if (not rules and not bundle.iocs.ips and not bundle.iocs.user_agents) or task.coverage_only:
                return
            stream: Any = fh
            limit = task.max_file_bytes
            if limit and size > limit:
                stream = _Limited(fh, limit)
                out.error(
                    "file_limit",
                    f"{task.rel}: {size:,} bytes, larger than the limit of {limit:,} (--max-file-bytes): only the first {limit:,} bytes were hunted",
                )
            _TextScan(task, bundle, rule_family, out).run(stream)
    finally:
        for tmpdir in tmpdirs:
            shutil.rmtree(tmpdir, ignore_errors=True)


class _TextScan:
    """The candidate lines of one text log (the pre-filter's), each parsed and matched only when a rule
    or an indicator can match it."""

    def __init__(self, task: HuntTask, bundle: Bundle, rule_family: str, out: _FileOut) -> None:
        self.task = task
        self.bundle = bundle
        self.family = task.family
        self.finder = bundle.finder_for(rule_family)
        self.pick = bundle.rule_picker(rule_family)
        self.out = out
        self.fields: list[str] | None = (
            list(DEFAULT_FIELDS[task.family]) if task.family in DEFAULT_FIELDS else None
        )
        self.windowed = bool(task.since or task.until)
        self.headers = self.candidates = self.parsed = self.truncated = 0

    def run(self, stream: Any) -> None:
        task = self.task
        for cand in iter_candidates(stream, self.finder, chunk_size=task.chunk_size, max_line=task.max_line):
            text = decode_line(cand.data)
            if text.startswith("#"):
                if text[:8].lower() == "#fields:":
                    self.fields = parse_fields_header(text)
                    self.headers += 1
                continue
            if not text.strip():
                continue
            self.candidates += 1
            if cand.truncated:
                self.truncated += 1
                self.out.error(
                    "long_line",
                    f"{task.rel}: line {cand.line_no} longer than {task.max_line} bytes; only its start was parsed",
                )
            if self.fields is None and self.family != "oabgenerator":
                self.fields = []
            self.line(cand, text)
        self.out.count(
            candidates=self.candidates, parsed=self.parsed, headers=self.headers, truncated=self.truncated
        )

    def line(self, cand: CandidateLine, text: str) -> None:
        # Only the rules whose required literals are all on this line can match it; a line
        # no rule and no indicator can match is not parsed at all.
        picked, ioc = self.pick(text.lower())
        if not picked and not ioc:
            return
        self.parsed += 1
        family = self.family
        rec = build_record(family, self.fields or [], text)
        # Keywords search the line as written and its decoded values (a published line pattern such as
        # MSRC's reads the raw line; a value unquoted by the tokenizer reads as the server saw it).
        # Built only when a picked rule has keywords; the time only for a window or a finding.
        kw = text + "\n" + keyword_text(rec) if any(r.keywords for r in picked) else text
        t = record_time(family, rec, text) if self.windowed else None
        if self.windowed and not _in_window(t, self.task.since, self.task.until):
            return
        timed = self.windowed
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
                self.out.add_rule(
                    rule,
                    time=t,
                    line=cand.line_no,
                    offset=cand.offset,
                    excerpt=text,
                    facts=facts_of(family, rec),
                )
        if ioc:
            if not timed:
                t = record_time(family, rec, text)
            _context(self.bundle, rec, family, t, cand, text, self.out)


def _context(
    bundle: Bundle,
    rec: dict[str, str],
    family: str,
    t: datetime | None,
    cand: CandidateLine,
    text: str,
    out: _FileOut,
) -> None:
    if family not in ("httpproxy", "iis"):
        return
    ip = rec.get("c-ip") or rec.get("ClientIpAddress") or ""
    ua = rec.get("c-useragent") or rec.get("UserAgent") or ""
    for kind, value in (("ip", ip.strip()), ("ua", ua_key(ua) if ua else "")):
        hit = bundle.iocs.user_hit(kind, value) if value else None
        if hit:
            out.add_user_ioc(hit, kind, value, t, line=cand.line_no, offset=cand.offset, excerpt=text)
    if ip and ip.strip() in bundle.iocs.ips and not bundle.iocs.user_hit("ip", ip.strip()):
        out.add(
            "context.attacker_ip",
            title="Published attacker IP address",
            time=t,
            why=f"Client {ip}: {bundle.iocs.ips[ip.strip()]}.",
            facts=facts_of(family, rec),
            line=cand.line_no,
            offset=cand.offset,
            excerpt=text,
            focus=_found(text, ip.strip()),
        )
    if ua and ua_key(ua) in bundle.iocs.user_agents and not bundle.iocs.user_hit("ua", ua_key(ua)):
        out.add(
            "context.user_agent",
            title="User-Agent reported in March 2021 exploitation",
            time=t,
            why=f"User-Agent {ua!r}.",
            line=cand.line_no,
            offset=cand.offset,
            excerpt=text,
            focus=_found(text, ua) if _found(text, ua) is not None else _found(text, ua.replace(" ", "+")),
        )


def _hunt_events(task: HuntTask, bundle: Bundle, out: _FileOut) -> None:
    report = EvtxReport()
    want = bundle.event_filter()
    limit = task.max_file_bytes or None
    records = (
        read_evtx(Path(task.path), report, want, limit)
        if task.family == "evtx"
        else read_event_xml(Path(task.path), want, report, limit)
    )
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
        if rec.parsed and _in_window(rec.time, task.since, task.until):
            _match_event(bundle, rec, out)
    # A rule may match in two families (e.g. product windows and process_creation): keep one per record.
    seen: set[tuple[str, int | None]] = set()
    unique = []
    for f in out.findings:
        key = (f.rule, f.evidence.record)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    out.findings = unique
    for kind, problem in report.problems():
        out.error(kind, f"{task.rel}: {problem}")
    out.coverage = FileCoverage(
        "evtx", as_utc(first), as_utc(last), records=n, channels=tuple(sorted(channels))
    )
    out.count(records=n)


def _match_event(bundle: Bundle, rec: EventRecord, out: _FileOut) -> None:
    low = (rec.text + " " + " ".join(rec.fields.values())).lower()
    for fam in source_families(rec.fields):
        for rule in bundle.rule_picker(fam)(low)[0]:
            try:
                matched = rule.predicate(rec.fields, rec.text)
            except (KeyError, TypeError, ValueError):
                matched = False
            if matched:
                out.add_rule(
                    rule,
                    time=rec.time,
                    record=rec.record_id,
                    offset=rec.offset,
                    excerpt=f"{rec.fields.get('Provider_Name', '')} {rec.fields.get('EventID', '')}: {rec.text}",
                    facts=facts_of("event", rec.fields),
                )


def _hunt_plain(task: HuntTask, bundle: Bundle, out: _FileOut) -> None:
    rel = task.rel
    mtime = datetime.fromtimestamp(float(task.mtime), UTC)
    _path_checks(task, bundle, out, mtime)
    name = rel.lower().rsplit("/", 1)[-1]
    size = int(task.size)
    if size <= HASH_MAX and (size <= CONTENT_SCAN_MAX or name.endswith(SCRIPT_EXTENSIONS)):
        hexd, parts = _read_content(task, out)
        _hash_checks(bundle, out, mtime, hexd)
        data = parts[0][1] if parts else b""
        if data and bundle.yara is not None and not name.endswith(DOCUMENT_EXTENSIONS):
            _yara_checks(bundle, out, mtime, parts)
        if name == "applicationhost.config" and data and bundle.builtin:
            for line, off, excerpt in vdir_config_findings(data.decode("utf-8", "replace")):
                out.add(
                    "proxyshell.iis_vdir_config",
                    time=mtime,
                    line=line,
                    offset=off,
                    excerpt=excerpt,
                )
    if not _in_window(mtime, task.since, task.until):
        # --since/--until select file evidence by modification time, like log evidence by event time.
        out.findings = []
    out.coverage = FileCoverage("files", as_utc(mtime), as_utc(mtime), size)


def _path_checks(task: HuntTask, bundle: Bundle, out: _FileOut, mtime: datetime) -> None:
    """The user's path indicators and the built-in path rules (known web-shell names and folders)."""
    from exwatch.hunt.rules.iocs import path_key

    rel = task.rel
    key = path_key(rel)
    user_path = bundle.iocs.user_hit("path", key)
    if user_path is None:
        # A user's path indicator may be given with its drive and install folders: compare the tails.
        user_path = next(
            (
                m
                for (k, v), m in bundle.iocs.user.items()
                if k == "path" and (key.endswith("/" + v) or v.endswith("/" + key))
            ),
            None,
        )
    if user_path:
        out.add_user_ioc(user_path, "path", rel, mtime, line=None, offset=None, excerpt=rel)
    for rule_id, why in path_findings(rel, bundle.iocs) if bundle.builtin else ():
        out.add(
            rule_id,
            time=mtime,
            offset=None,
            excerpt=rel,
            why=why.capitalize() + ".",
        )


def _read_content(task: HuntTask, out: _FileOut) -> tuple[str, list[tuple[int, bytes]]]:
    """The file's SHA-256 and (offset in the file, bytes) of what the content rules see: all of a small
    file; the head and the tail of a large script (a web shell padded past the scan size is still found)."""
    size = int(task.size)
    digest = hashlib.sha256()
    with open(task.path, "rb") as fh:
        if size <= CONTENT_SCAN_MAX:
            data = fh.read(CONTENT_SCAN_MAX + 1)
            digest.update(data)
            return digest.hexdigest(), [(0, data)]
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
    out.error(
        "partial_scan",
        f"{task.rel}: {size:,} bytes, above {CONTENT_SCAN_MAX:,}: the content rules scanned its first and last {SCRIPT_WINDOW:,} bytes, {tail_at - SCRIPT_WINDOW:,} bytes in the middle were not scanned (its name and hash were checked)",
    )
    return digest.hexdigest(), parts


def _hash_checks(bundle: Bundle, out: _FileOut, mtime: datetime, hexd: str) -> None:
    user_hash = bundle.iocs.user_hit("sha256", hexd)
    if user_hash:
        out.add_user_ioc(user_hash, "sha256", hexd, mtime, line=None, offset=0, excerpt=f"sha256 {hexd}")
    elif hexd in bundle.iocs.sha256:
        out.add(
            "webshell.known_hash",
            time=mtime,
            offset=0,
            excerpt=f"sha256 {hexd}",
            why=f"SHA256 listed as {bundle.iocs.sha256[hexd]}.",
        )


def _yara_checks(bundle: Bundle, out: _FileOut, mtime: datetime, parts: list[tuple[int, bytes]]) -> None:
    """YARA-X over each scanned part; one finding per rule, at the first match of its evidence patterns."""
    import yara_x

    scanner = yara_x.Scanner(bundle.yara)
    matched: set[str] = set()
    for base, part in parts:
        try:
            results = scanner.scan(part)
        except yara_x.ScanError as exc:
            out.error("yara", f"{out.task.rel}: YARA scan failed: {exc}")
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
                match.offset for p in m.patterns if p.identifier.startswith(anchor) for match in p.matches
            ]
            offs = offs or [match.offset for p in m.patterns for match in p.matches]
            off = min(offs) if offs else 0
            out.add(
                rid,
                title=str(meta.get("description") or m.identifier),
                text=f"{m.identifier} {meta.get('description', '')} webshell",
                confidence=str(meta.get("exwatch_confidence", "likely")),
                time=mtime,
                # Lines are counted in the head only (the middle of a large file is not read).
                line=part.count(b"\n", 0, off) + 1 if base == 0 else None,
                offset=base + off,
                excerpt=part[off : off + 300].decode("utf-8", "backslashreplace"),
                why=f"YARA rule {m.identifier} matched.",
            )
