"""A positioned XML reader: elements and comments with their character spans, for surgical text edits.

IIS configuration files are edited by hand, by IIS Manager and by scripts; an edit that re-serialises
the document would lose comments, attribute order, quoting, whitespace and the byte order mark. So the
file is decoded once (its BOM and declared encoding remembered), parsed with expat, which reports the
byte offset of every start tag, end tag and comment, and each node is given its span in the decoded
text. Edits are then splices of that text, and ``encode_text`` writes it back in the file's own encoding.
"""

from __future__ import annotations

import codecs
import re
import xml.parsers.expat
from dataclasses import dataclass, field

from exwatch.errors import InputError

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_DECLARED = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


@dataclass(frozen=True)
class Encoded:
    """How a file's bytes were encoded: the codec and the byte order mark, if any."""

    codec: str
    bom: bytes


@dataclass
class Node:
    """An element or a comment, with its span in the decoded text.

    For an element, ``start`` is the offset of ``<``, ``tag_end`` the offset just after the start tag's
    ``>``, ``content_end`` the offset of its end tag (``tag_end`` when self-closing) and ``end`` the offset
    just after the element. A comment has ``name`` ``"#comment"`` and ``tag_end == content_end == end``.
    """

    name: str
    attrs: dict[str, str]
    start: int
    tag_end: int = 0
    content_end: int = 0
    end: int = 0
    self_closing: bool = False
    text: str = ""
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    @property
    def is_comment(self) -> bool:
        return self.name == "#comment"

    def elements(self, name: str | None = None) -> list[Node]:
        """The child elements, optionally only those with this name."""
        return [c for c in self.children if not c.is_comment and (name is None or c.name == name)]

    def path(self) -> list[str]:
        """Element names from the root down to this node."""
        names: list[str] = []
        node: Node | None = self
        while node is not None:
            names.append(node.name)
            node = node.parent
        return names[::-1]


def decode_bytes(data: bytes, label: str = "file") -> tuple[str, Encoded]:
    """The text of an XML file and how it was encoded (BOM, then the declaration, then UTF-8)."""
    found = next(((b, c) for b, c in _BOMS if data.startswith(b)), None)
    if found is not None:
        bom, codec = found
        body = data[len(bom) :]
    else:
        bom, body = b"", data
        match = _DECLARED.match(data)
        codec = "utf-8"
        if match:
            declared = match.group(1).decode("ascii")
            try:
                codec = codecs.lookup(declared).name
            except LookupError as exc:
                raise InputError(f"{label}: unknown encoding {declared!r} in the XML declaration") from exc
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise InputError(f"{label}: not valid {codec} at byte {exc.start + len(bom)}") from exc
    return text, Encoded(codec, bom)


def encode_text(text: str, encoded: Encoded, label: str = "file") -> bytes:
    """The bytes of ``text`` in the file's own encoding, with its BOM."""
    try:
        return encoded.bom + text.encode(encoded.codec)
    except UnicodeEncodeError as exc:
        raise InputError(f"{label}: the new text cannot be written as {encoded.codec}") from exc


# A start or end tag: "<", then anything but quotes and ">", with quoted attribute values (which may hold ">").
_TAG = re.compile(r"""<[^"'>]*(?:(?:"[^"]*"|'[^']*')[^"'>]*)*>""")


def _tag_close(text: str, start: int) -> int:
    """The offset just after the ``>`` that closes the tag starting at ``start`` (quotes respected)."""
    match = _TAG.match(text, start)
    if match is None:
        raise InputError("unterminated tag")  # expat would have refused the document first
    return match.end()


def parse_text(text: str, label: str = "file") -> Node:
    """The root element of ``text`` with positioned children; malformed XML is an InputError."""
    utf8 = text.encode("utf-8")
    ascii_only = len(utf8) == len(text)

    # expat reports byte offsets in document order, so the character offset is kept up incrementally.
    cursor = [0, 0]  # byte offset, character offset

    def char_at(byte_offset: int) -> int:
        if ascii_only:
            return byte_offset
        last_byte, last_char = cursor
        if byte_offset < last_byte:
            return len(utf8[:byte_offset].decode("utf-8"))
        cursor[0], cursor[1] = byte_offset, last_char + len(utf8[last_byte:byte_offset].decode("utf-8"))
        return cursor[1]

    parser = xml.parsers.expat.ParserCreate(encoding="UTF-8")
    stack: list[Node] = []
    root: list[Node] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        pos = char_at(parser.CurrentByteIndex)
        node = Node(name=name, attrs=dict(attrs), start=pos)
        node.tag_end = _tag_close(text, pos)
        node.self_closing = text[node.tag_end - 2] == "/"
        if stack:
            node.parent = stack[-1]
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(name: str) -> None:
        node = stack.pop()
        if node.self_closing:
            node.content_end = node.end = node.tag_end
        else:
            node.content_end = char_at(parser.CurrentByteIndex)
            node.end = _tag_close(text, node.content_end)

    def comment(data: str) -> None:
        if not stack:
            return  # comments outside the root element are never touched
        pos = char_at(parser.CurrentByteIndex)
        close = text.index("-->", pos) + 3
        node = Node(name="#comment", attrs={}, start=pos, tag_end=close, content_end=close, end=close)
        node.text = data
        node.parent = stack[-1]
        stack[-1].children.append(node)

    def doctype(*_args: object) -> None:
        raise InputError(f"{label}: a DOCTYPE has no place in an IIS configuration file")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CommentHandler = comment
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(utf8, True)
    except xml.parsers.expat.ExpatError as exc:
        raise InputError(
            f"{label}: malformed XML: {xml.parsers.expat.ErrorString(exc.code)} "
            f"at line {exc.lineno}, column {exc.offset + 1}"
        ) from exc
    return root[0]


def line_indent(text: str, pos: int) -> str:
    """The whitespace before ``pos`` on its line, or "" when other text precedes it there."""
    line_start = max(text.rfind("\n", 0, pos), text.rfind("\r", 0, pos)) + 1
    head = text[line_start:pos]
    return head if head.strip(" \t") == "" else ""


def newline_of(text: str) -> str:
    """The file's newline: the first one found, CRLF when there is none (IIS files are Windows files)."""
    i = text.find("\n")
    if i < 0:
        return "\r\n" if "\r" not in text else "\r"
    return "\r\n" if i > 0 and text[i - 1] == "\r" else "\n"


def indent_unit(text: str) -> str:
    """The file's indentation step: a tab if lines start with tabs, else the smallest space step seen."""
    widths: set[int] = set()
    tabs = 0
    for line in text.splitlines():
        stripped = line.lstrip(" \t")
        if not stripped.startswith("<"):
            continue
        lead = line[: len(line) - len(stripped)]
        if lead.startswith("\t"):
            tabs += 1
        elif lead:
            widths.add(len(lead))
    if tabs and not widths:
        return "\t"
    if not widths:
        return "  "
    step = min(widths)
    for w in widths:
        # a step that does not divide every indentation is probably an attribute continuation line
        if w % step:
            step = min(step, 2)
    return " " * max(1, min(step, 8))
