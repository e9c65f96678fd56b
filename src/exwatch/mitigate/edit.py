"""Pure text edits of a web.config: add the mitigation rules, remove them, nothing else.

Every edit is a splice of the decoded text at positions found by ``xmltext``; the rest of the file is
left as it was. The inserted text uses the file's newline and indentation. Two rules make rollback the
exact inverse of apply:

- Rules are inserted as one run of siblings: before the first rule that follows the last ``<clear/>``
  (as ``rule NL indent`` each, so they run first), or at the end of ``<rules>`` (as ``NL indent rule``).
  Removing a run of our rules removes the rule texts and the whitespace up to the next sibling, or, when
  the run ends the element, the whitespace before the run: exactly what was inserted.
- When apply has to create ``<rewrite>``/``<rules>`` (or open a self-closing element), it marks what it
  created with a comment; rollback removes the created element (or closes the element again) once it
  holds nothing but whitespace, that comment and other bare containers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exwatch.errors import InputError
from exwatch.mitigate.rules import RewriteRule
from exwatch.mitigate.webconfig import RULES_PATH, evaluate, load, site_blocks
from exwatch.mitigate.xmltext import Node, indent_unit, line_indent, newline_of

MARKER_CREATED = "<!-- exwatch mitigate: section added by apply; rollback removes it -->"
MARKER_OPENED = "<!-- exwatch mitigate: element opened by apply; rollback closes it again -->"
_MARKER_TEXTS = {MARKER_CREATED[4:-3]: "created", MARKER_OPENED[4:-3]: "opened"}
_CONTAINERS = ("system.webServer", "rewrite", "rules")


@dataclass
class Edit:
    """The new text and what changed."""

    text: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already valid (name, or "name (as other)")

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def render_rule(rule: RewriteRule, indent: str, unit: str, nl: str) -> str:
    """The ``<rule>`` element; its first line carries no indentation, the others ``indent``."""
    head = f'<rule name="{_attr(rule.name)}" patternSyntax="{_attr(rule.pattern_syntax)}"'
    if rule.stop_processing:
        head += ' stopProcessing="true"'
    inner = indent + unit
    lines = [
        head + ">",
        f'{inner}<match url="{_attr(rule.match_url)}" />',
        f"{inner}<conditions>",
        f'{inner}{unit}<add input="{_attr(rule.input)}" pattern="{_attr(rule.pattern)}" />',
        f"{inner}</conditions>",
        f'{inner}<action type="{_attr(rule.action)}" />',
        f"{indent}</rule>",
    ]
    return nl.join(lines)


def _at_line_start(text: str, pos: int) -> bool:
    start = max(text.rfind("\n", 0, pos), text.rfind("\r", 0, pos)) + 1
    return text[start:pos].strip(" \t") == ""


def _child_indent(text: str, parent: Node, unit: str) -> str:
    """The indentation of ``parent``'s children: as its existing children, else one step deeper."""
    for child in parent.children:
        if _at_line_start(text, child.start):
            return line_indent(text, child.start)
    return line_indent(text, parent.start) + unit


def _trailing_ws_start(text: str, parent: Node) -> int:
    """Start of the whitespace run just before ``parent``'s end tag (after its last child)."""
    floor = parent.children[-1].end if parent.children else parent.tag_end
    pos = parent.content_end
    while pos > floor and text[pos - 1] in " \t\r\n":
        pos -= 1
    return pos


def _render_chain(
    levels: list[str], rules: list[RewriteRule], indent: str, unit: str, nl: str, marker: str
) -> str:
    """``<level0>`` ... ``</level0>`` down to ``<rules>`` with the rules; first line unindented."""
    inner = indent + unit
    out = f"<{levels[0]}>"
    if marker:
        out += nl + inner + marker
    if len(levels) > 1:
        out += nl + inner + _render_chain(levels[1:], rules, inner, unit, nl, "")
    else:
        for rule in rules:
            out += nl + inner + render_rule(rule, inner, unit, nl)
    return out + nl + indent + f"</{levels[0]}>"


def _insert(text: str, root: Node, rules: list[RewriteRule], label: str) -> str:
    """``text`` with ``rules`` inserted into the site's rules element (created when missing)."""
    nl = newline_of(text)
    unit = indent_unit(text)
    blocks = site_blocks(root)
    if blocks:
        block = next((b for b in blocks if b.location is None), blocks[0])
        if not block.inherited:
            raise InputError(
                f'{label}: the site\'s rewrite rules are inside <location path="{block.location}" '
                'inheritInChildApplications="false">, which Exchange\'s applications do not inherit; '
                "move them out of that element first"
            )
        container = block.node
        if not container.self_closing:
            return _insert_into(text, container, rules, nl, unit)
        return _open_and_fill(text, container, [], rules, nl, unit)
    # No rules element for the site: create what is missing under the top-level <system.webServer>.
    parent = root
    levels = list(RULES_PATH)
    while levels:
        nxt = parent.elements(levels[0])
        if not nxt:
            break
        parent = nxt[0]
        levels.pop(0)
    if parent.self_closing:
        return _open_and_fill(text, parent, levels, rules, nl, unit)
    ci = _child_indent(text, parent, unit)
    at = _trailing_ws_start(text, parent)
    block_text = nl + ci + _render_chain(levels, rules, ci, unit, nl, MARKER_CREATED)
    return text[:at] + block_text + text[at:]


def _insert_into(text: str, container: Node, rules: list[RewriteRule], nl: str, unit: str) -> str:
    children = container.elements()
    last_clear = max((i for i, c in enumerate(children) if c.name == "clear"), default=-1)
    first_rule = next((c for c in children[last_clear + 1 :] if c.name == "rule"), None)
    if first_rule is not None:
        # Before the first rule (after any <clear/>): the mitigation runs before rules that stop processing.
        if _at_line_start(text, first_rule.start):
            indent = line_indent(text, first_rule.start)
            sep = nl + indent
        else:
            indent = _child_indent(text, container, unit)
            sep = ""
        piece = "".join(render_rule(r, indent, unit, nl) + sep for r in rules)
        return text[: first_rule.start] + piece + text[first_rule.start :]
    ci = _child_indent(text, container, unit)
    at = _trailing_ws_start(text, container)
    piece = "".join(nl + ci + render_rule(r, ci, unit, nl) for r in rules)
    return text[:at] + piece + text[at:]


def _open_and_fill(
    text: str, elem: Node, levels: list[str], rules: list[RewriteRule], nl: str, unit: str
) -> str:
    """Open a self-closing ``elem`` (``<x/>`` -> ``<x>...</x>``) and put the rules (and levels) in it."""
    indent = line_indent(text, elem.start) if _at_line_start(text, elem.start) else ""
    ci = indent + unit
    head = text[elem.start : elem.tag_end - 2] + ">"
    body = nl + ci + MARKER_OPENED
    if levels:
        body += nl + ci + _render_chain(levels, rules, ci, unit, nl, "")
    else:
        body += "".join(nl + ci + render_rule(r, ci, unit, nl) for r in rules)
    return text[: elem.start] + head + body + nl + indent + f"</{elem.name}>" + text[elem.end :]


def _remove_nodes(text: str, doomed: list[Node]) -> str:
    """``text`` without ``doomed`` (siblings), each run removed with the whitespace apply put around it."""
    ids = {id(n) for n in doomed}
    spans: list[tuple[int, int]] = []
    parents: dict[int, Node] = {}
    for node in doomed:
        assert node.parent is not None
        parents[id(node.parent)] = node.parent
    for parent in parents.values():
        kids = parent.children
        i = 0
        while i < len(kids):
            if id(kids[i]) not in ids:
                i += 1
                continue
            j = i
            while (
                j + 1 < len(kids)
                and id(kids[j + 1]) in ids
                and text[kids[j].end : kids[j + 1].start].strip() == ""
            ):
                j += 1
            first, last = kids[i], kids[j]
            nxt = kids[j + 1] if j + 1 < len(kids) else None
            if nxt is not None and text[last.end : nxt.start].strip() == "":
                spans.append((first.start, nxt.start))
            else:
                floor = kids[i - 1].end if i > 0 else parent.tag_end
                start = first.start
                while start > floor and text[start - 1] in " \t\r\n":
                    start -= 1
                spans.append((start, last.end))
            i = j + 1
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + text[end:]
    return text


def _is_bare(text: str, node: Node) -> bool:
    """Whether ``node``'s content is only whitespace, our markers and bare attribute-less containers."""
    pos = node.tag_end
    for child in node.children:
        if text[pos : child.start].strip():
            return False
        if child.is_comment:
            if child.text not in _MARKER_TEXTS:
                return False
        elif child.name not in _CONTAINERS or child.attrs or not _is_bare(text, child):
            return False
        pos = child.end
    return not text[pos : node.content_end].strip()


def _undo_created(text: str, label: str) -> str:
    """Remove sections apply created (and close elements it opened) once nothing else is in them."""
    while any(marker in text for marker in _MARKER_TEXTS):
        root = load(text, label)
        markers: list[Node] = []
        stack = [root]
        while stack:
            node = stack.pop()
            for child in node.children:
                if child.is_comment and child.text in _MARKER_TEXTS:
                    markers.append(child)
                elif not child.is_comment:
                    stack.append(child)
        for marker in markers:
            owner = marker.parent
            assert owner is not None
            if not _is_bare(text, owner):
                continue
            if _MARKER_TEXTS[marker.text] == "opened":
                text = text[: owner.tag_end - 1] + "/>" + text[owner.end :]
            else:
                text = _remove_nodes(text, [owner])
            break
        else:
            return text
    return text


def plan_apply(
    text: str, rules: tuple[RewriteRule, ...], *, force: bool = False, label: str = "web.config"
) -> Edit:
    """The text with every missing rule added; a rule of ours that is wrong is an error unless ``force``."""
    root = load(text, label)
    statuses = evaluate(root, rules)
    edit = Edit(text=text)
    wrong = [s for s in statuses if s.status == "invalid"]
    if wrong and not force:
        detail = "; ".join(f"{s.rule.name!r}: {', '.join(s.problems)}" for s in wrong)
        raise InputError(
            f"{label}: a rule with the mitigation's name is not right ({detail}); --force replaces it"
        )
    if wrong:
        doomed = [s.node for s in wrong if s.node is not None]
        text = _remove_nodes(text, doomed)
        edit.replaced = [s.rule.name for s in wrong]
        root = load(text, label)
    missing = [s.rule for s in statuses if s.status != "ok"]
    edit.present = [
        s.rule.name + (f" (as {s.found_as!r})" if s.found_as else "") for s in statuses if s.status == "ok"
    ]
    if missing:
        text = _insert(text, root, missing, label)
        edit.added = [r.name for r in missing if r.name not in edit.replaced]
    after = evaluate(load(text, label), rules)
    bad = [s for s in after if s.status != "ok"]
    if bad:
        detail = "; ".join(f"{s.rule.name!r}: {', '.join(s.problems) or s.status}" for s in bad)
        raise InputError(f"{label}: the rules would not take effect after apply ({detail}); nothing changed")
    edit.text = text
    return edit


def plan_rollback(text: str, rules: tuple[RewriteRule, ...], *, label: str = "web.config") -> Edit:
    """The text without the rules named as ours (as EOMT's rollback does, by name)."""
    root = load(text, label)
    names = {r.name.lower() for r in rules}
    doomed: list[Node] = []
    for block in site_blocks(root):
        doomed += [n for n in block.node.elements("rule") if (n.attrs.get("name") or "").lower() in names]
    edit = Edit(text=text)
    if doomed:
        edit.removed = [n.attrs.get("name", "") for n in doomed]
        text = _remove_nodes(text, doomed)
        text = _undo_created(text, label)
    edit.text = text
    return edit
