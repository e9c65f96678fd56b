"""Streaming reader of text logs: one pass over the raw bytes picks the lines that can match.

A file is read in big chunks; each chunk is lower-cased and searched for the rules' required literals
(plus ``#fields:``, so that every header line is seen in order and each hit is parsed with the field map
of the last ``#Fields`` line before it). Only the lines holding a literal are decoded and parsed. Lines
longer than ``max_line`` are searched over their whole length but only their first ``max_line`` bytes are
kept, so a 200 MB line never becomes a 200 MB Python string.
"""

from __future__ import annotations

import codecs
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HEADER_LITERAL = "#fields:"


def _re2_searcher(rx: Any) -> Callable[[bytes, int, int], int]:
    """``search(buf, pos, end) -> start or -1`` for a compiled RE2 pattern over bytes.

    Calls the binding's ``Match`` directly when it is there: the Python wrapper around it costs more
    than the search itself on short lines (measured: about 3 of 6 microseconds per line).
    """
    import re2

    regexp = getattr(rx, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if regexp is not None and anchor is not None:

        def direct(buf: bytes, pos: int, end: int) -> int:
            return int(regexp.Match(anchor, buf, pos, end)[0][0])

        return direct

    def wrapped(buf: bytes, pos: int, end: int) -> int:
        m = rx.search(buf, pos, end)
        return -1 if m is None else int(m.start())

    return wrapped


def default_strategy() -> str:
    """``hyperscan`` where its wheel is installed (Linux x86-64), else ``re2``."""
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return "re2"
    return "hyperscan"


class LiteralFinder:
    """Finds the lines of a buffer that can match: case-insensitive literal and line-pattern search.

    Strategies (measured in ``benchmarks/hunt``, figures in its RESULTS.md): ``hyperscan`` (default where
    the wheel exists: Hyperscan finds the literals, each line it points at is checked against the RE2
    line patterns), ``re2`` (one RE2 DFA over the raw bytes for literals and line patterns),
    ``ahocorasick`` (pyahocorasick over the lower-cased text) and ``regex`` (Python ``re`` alternation,
    which has no multi-literal search). ``None`` literals means "every line is a candidate".
    """

    def __init__(
        self,
        literals: Iterable[str] | None,
        strategy: str = "re2",
        *,
        patterns: Iterable[bytes] = (),
        singles: Iterable[str] | None = None,
    ) -> None:
        """``literals``: every literal a candidate line may be found by (the loose set). With RE2,
        ``patterns`` (line patterns such as two literals in either order) plus ``singles`` (literals
        searched alone) replace it for the main search; the loose set serves long lines."""
        self.all_lines = literals is None
        lits = sorted({x.lower() for x in (literals or ())} | {HEADER_LITERAL}, key=len, reverse=True)
        self.literals = lits
        self.strategy = strategy
        alternation = b"|".join(re.escape(x.encode("utf-8")) for x in lits)
        self._rx = re.compile(alternation)
        self._re2: Any = None
        self._re2_loose: Any = None
        self._ac: Any = None
        self._hs: Any = None
        self._line_check: Any = None
        if self.all_lines:
            pass
        elif strategy == "re2":
            self._re2_loose, check = _re2_searches(alternation, patterns, singles)
            self._re2 = check if check is not None else self._re2_loose
        elif strategy == "hyperscan":
            import hyperscan

            # Hyperscan finds the loose literals (SIMD, several GB/s); each line it points at is then
            # checked against the RE2 line patterns (two or three literal groups of one rule).
            self._re2_loose, self._line_check = _re2_searches(alternation, patterns, singles)
            exprs = [re.escape(x.encode("utf-8")) for x in lits]
            db = hyperscan.Database()
            db.compile(
                expressions=exprs,
                ids=list(range(len(exprs))),
                elements=len(exprs),
                flags=[hyperscan.HS_FLAG_CASELESS] * len(exprs),
            )
            self._hs = db
            # Hyperscan's scratch space may serve one scan at a time: each thread that scans with this
            # (shared, cached) database gets its own (threaded Dask workers, the cluster hunt's client threads).
            self._hs_scratch = threading.local()
        elif strategy == "ahocorasick":
            import ahocorasick

            ac = ahocorasick.Automaton()
            for x in lits:
                ac.add_word(x.encode("utf-8").decode("latin-1"), len(x))
            ac.make_automaton()
            self._ac = ac

    def positions(self, body: bytes, end: int | None = None) -> Iterator[int]:
        """Start positions of the lines of ``body[:end]`` holding a literal, in order, each line once
        (``end`` spares the reader a copy of its block)."""
        n = len(body) if end is None else end
        if self.all_lines:
            yield from _line_starts(body, n)
        elif self._hs is not None:
            yield from self._hs_positions(body, n)
        elif self._ac is not None:
            yield from _ac_positions(self._ac, body if n == len(body) else body[:n])
        else:
            yield from self._rx_positions(body if n == len(body) else body[:n])

    def _hs_positions(self, body: bytes, n: int) -> Iterator[int]:
        """Hyperscan: the lines holding a match end, each checked in RE2 against the pair patterns."""
        assert self._hs is not None
        ends: list[int] = []

        def on_match(_id: int, _from: int, to: int, _flags: int, _ctx: Any) -> None:
            ends.append(to)

        scratch = getattr(self._hs_scratch, "scratch", None)
        if scratch is None:
            import hyperscan

            scratch = self._hs_scratch.scratch = hyperscan.Scratch(self._hs)
        self._hs.scan(
            body if n == len(body) else memoryview(body)[:n],
            match_event_handler=on_match,
            scratch=scratch,
        )
        ends.sort()
        check = _re2_searcher(self._line_check) if self._line_check is not None else None
        last_ls = -1
        for stop in ends:
            ls = body.rfind(b"\n", 0, stop) + 1
            if ls == last_ls:
                continue
            last_ls = ls
            if check is not None:
                le = body.find(b"\n", stop, n)
                if check(body, ls, n if le < 0 else le) < 0:
                    continue
            yield ls

    def _rx_positions(self, body: bytes) -> Iterator[int]:
        """RE2 over the bytes, or Python's ``re`` over the lower-cased bytes."""
        if self._re2 is not None:
            hay = body
            find = _re2_searcher(self._re2)
        else:
            hay = body.lower()
            rx = self._rx

            def find(buf: bytes, pos: int, end: int) -> int:
                m = rx.search(buf, pos, end)
                return -1 if m is None else m.start()

        pos = 0
        n = len(hay)
        while True:
            start = find(hay, pos, n)
            if start < 0:
                return
            ls = hay.rfind(b"\n", 0, start) + 1
            yield ls
            nl = hay.find(b"\n", start)
            if nl < 0:
                return
            pos = nl + 1

    def hit(self, data: bytes) -> bool:
        """Whether ``data`` holds any literal."""
        if self.all_lines:
            return True
        if self._re2_loose is not None:
            return self._re2_loose.search(data) is not None
        if self._ac is not None:
            for _ in self._ac.iter(data.lower().decode("latin-1")):
                return True
            return False
        return self._rx.search(data.lower()) is not None


@dataclass
class CandidateLine:
    """A line that holds a literal (or a header line): its number, byte offset and (capped) bytes."""

    line_no: int
    offset: int
    data: bytes
    truncated: bool = False


def sniff_encoding(head: bytes) -> str:
    """``utf-16-le``/``utf-16-be`` for UTF-16 logs (BOM or NUL pattern), else ``utf-8``."""
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le"
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be"
    sample = head[:4096]
    if len(sample) >= 8:
        odd = sample[1::2].count(0)
        even = sample[0::2].count(0)
        if odd > len(sample) * 0.4 and even < len(sample) * 0.05:
            return "utf-16-le"
        if even > len(sample) * 0.4 and odd < len(sample) * 0.05:
            return "utf-16-be"
    return "utf-8"


def transcode_to_temp(fh: IO[bytes], encoding: str, tmpdir: str) -> Path:
    """Copy a UTF-16 log as UTF-8 into ``tmpdir`` (the evidence is never touched)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    fd, name = tempfile.mkstemp(dir=tmpdir, suffix=".utf8.log")
    with os.fdopen(fd, "wb") as out:
        while True:
            block = fh.read(4 * 1024 * 1024)
            text = decoder.decode(block, final=not block)
            out.write(text.lstrip("\ufeff").encode("utf-8"))
            if not block:
                break
    return Path(name)


def _re2_searches(
    alternation: bytes, patterns: Iterable[bytes], singles: Iterable[str] | None
) -> tuple[Any, Any]:
    """RE2 searches (case-insensitive, over Latin-1 bytes): one for any loose literal, and the line check
    (the single literals, the header literal and the pair patterns; None without pair patterns)."""
    import re2

    options = re2.Options()
    options.case_sensitive = False
    options.encoding = re2.Options.Encoding.LATIN1
    options.max_mem = 256 << 20
    loose = re2.compile(b"(?:" + alternation + b")", options)
    pats = list(patterns)
    if not pats or singles is None:
        return loose, None
    single = sorted({x.lower() for x in singles} | {HEADER_LITERAL}, key=len, reverse=True)
    main = [re.escape(x.encode("utf-8")) for x in single] + [b"(?:" + p + b")" for p in pats]
    return loose, re2.compile(b"(?:" + b"|".join(main) + b")", options)


def _line_starts(body: bytes, n: int) -> Iterator[int]:
    """The start of every line of ``body[:n]`` (no pre-filter)."""
    pos = 0
    while pos < n:
        yield pos
        nl = body.find(b"\n", pos)
        if nl < 0:
            return
        pos = nl + 1


def _ac_positions(ac: Any, body: bytes) -> Iterator[int]:
    """Aho-Corasick over the lower-cased bytes: the start of each line holding a literal, once."""
    low = body.lower()
    text = low.decode("latin-1")
    last_end = -1
    for end, length in ac.iter(text):
        start = end - length + 1
        if start <= last_end:
            continue
        ls = low.rfind(b"\n", 0, start) + 1
        yield ls
        nl = low.find(b"\n", start)
        last_end = len(low) if nl < 0 else nl


def iter_candidates(
    fh: IO[bytes], finder: LiteralFinder, *, chunk_size: int = 16 * 1024 * 1024, max_line: int = 1024 * 1024
) -> Iterator[CandidateLine]:
    """Yield the candidate lines of a binary stream in order; memory stays near ``chunk_size + max_line``."""
    base_offset = 0
    base_line = 1
    tail = b""
    overlap = max((len(x) for x in finder.literals), default=8)
    # Long-line state: we are inside a line longer than max_line that started at long_start.
    long_head: bytes | None = None
    long_start = 0
    long_line_no = 0
    long_hit = False
    long_carry = b""
    try:
        seekable = bool(fh.seekable())
    except (AttributeError, OSError, ValueError):
        seekable = False
    while True:
        block = fh.read(chunk_size)
        eof = not block
        if long_head is not None:
            nl = block.find(b"\n") if block else -1
            segment = block if nl < 0 else block[:nl]
            if not long_hit and finder.hit(long_carry + segment):
                long_hit = True
            long_carry = segment[-overlap:] if len(segment) >= overlap else (long_carry + segment)[-overlap:]
            if nl < 0 and not eof:
                base_offset += len(block)
                continue
            if long_hit:
                yield CandidateLine(long_line_no, long_start, long_head, truncated=True)
            base_offset += (nl + 1) if nl >= 0 else len(block)
            base_line = long_line_no + 1
            long_head = None
            if eof:
                return
            tail = b""
            block = block[nl + 1 :]
        data = tail + block if tail else block
        if not data:
            return
        cut = data.rfind(b"\n")
        if cut < 0 and not eof:
            if len(data) > max_line:
                # Enter long-line mode: keep the head for parsing, search the rest as it streams by.
                long_head = data[:max_line]
                long_start = base_offset
                long_line_no = base_line
                long_hit = finder.hit(data)
                long_carry = data[-overlap:]
                base_offset += len(data)
                tail = b""
                continue
            tail = data
            continue
        body = data
        if eof:
            end, tail = len(data), b""
        elif seekable and not tail:
            # The unfinished last line is read again with the next block (a seek back): no copy of
            # the block (``tail + block``, ``data[:cut + 1]``) at every read, which cost as much CPU
            # as the Hyperscan search itself.
            end, tail = cut + 1, b""
            if end < len(data):
                fh.seek(end - len(data), os.SEEK_CUR)
        else:
            end, tail = cut + 1, data[cut + 1 :]
        yield from _block_candidates(finder, body, end, base_line, base_offset, max_line)
        base_line += body.count(b"\n", 0, end)
        base_offset += end
        if eof:
            return


def _block_candidates(
    finder: LiteralFinder, body: bytes, end: int, base_line: int, base_offset: int, max_line: int
) -> Iterator[CandidateLine]:
    """The candidate lines of ``body[:end]`` (whole lines), numbered from ``base_line`` and placed from
    ``base_offset``; a line over ``max_line`` bytes comes cut, marked ``truncated``."""
    last_ls = 0
    line_no = base_line
    for ls in finder.positions(body, end):
        line_no += body.count(b"\n", last_ls, ls)
        last_ls = ls
        le = body.find(b"\n", ls, end)
        if le < 0:
            le = end
        if le - ls > max_line:
            yield CandidateLine(line_no, base_offset + ls, body[ls : ls + max_line], truncated=True)
        else:
            yield CandidateLine(line_no, base_offset + ls, body[ls:le])


def decode_line(data: bytes) -> str:
    """Bytes of one line as text: UTF-8, else Latin-1; NULs and line ends dropped."""
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.lstrip("\ufeff").rstrip("\r\n")


def first_and_last_lines(fh: IO[bytes], size: int, window: int = 65536) -> tuple[list[bytes], list[bytes]]:
    """A few lines from the start and the end of a file (for its time coverage) without reading it all."""
    fh.seek(0)
    head = fh.read(window).split(b"\n")[:-1] if size > window else fh.read(window).split(b"\n")
    if size > window:
        fh.seek(max(0, size - window))
        tail = fh.read(window).split(b"\n")[1:]
    else:
        tail = list(head)
    fh.seek(0)
    return head, tail
