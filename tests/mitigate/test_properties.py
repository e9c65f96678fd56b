"""Property tests: for generated web.config files, apply then rollback is the identity."""

from __future__ import annotations

import codecs

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exwatch.errors import InputError
from exwatch.mitigate.edit import plan_apply, plan_rollback
from exwatch.mitigate.rules import all_rules, rules_for
from exwatch.mitigate.webconfig import evaluate, load
from exwatch.mitigate.xmltext import decode_bytes, encode_text

RULES = rules_for("all")
OUR_NAMES = {r.name.lower() for r in all_rules()}
WORD = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGH0123456789 -_.äéß", min_size=1, max_size=12
).filter(lambda s: s.strip() == s and s.lower() not in OUR_NAMES)
COMMENT = st.text(alphabet="abcdefghij klmnop<>&\"'äé", max_size=20).map(lambda s: f"<!--{s}-->")


class Layout:
    """How a generated file is laid out: newline, indentation step, or compact."""

    def __init__(self, nl: str, unit: str, compact: str) -> None:
        self.nl, self.unit, self.compact = nl, unit, compact

    def pad(self, depth: int) -> str:
        return self.nl + self.unit * depth if self.unit else self.compact


@st.composite
def tag(
    draw: st.DrawFn, name: str, attrs: list[tuple[str, str]], children: list[str], lay: Layout, depth: int
) -> str:
    """An element at ``depth``: attributes in a random order, random spacing; self-closing when empty."""
    attrs = draw(st.permutations(attrs)) if attrs else []
    space = draw(st.sampled_from([" ", "  ", "\t"]))
    head = f"<{name}" + "".join(f'{space}{k}="{v}"' for k, v in attrs)
    if not children and draw(st.booleans()):
        return head + draw(st.sampled_from(["/>", " />"]))
    inner = "".join(lay.pad(depth + 1) + c for c in children)
    tail = lay.pad(depth) if children and draw(st.integers(0, 4)) else ""
    return head + ">" + inner + tail + f"</{name}>"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


@st.composite
def other_rule(draw: st.DrawFn, lay: Layout, depth: int) -> str:
    name = _esc(draw(WORD))
    stop = draw(st.sampled_from(["true", "false"]))
    action = draw(
        st.sampled_from(
            [
                [("type", "Redirect"), ("url", "https://{HTTP_HOST}/{R:1}")],
                [("type", "Rewrite"), ("url", "/x/{R:1}")],
                [("type", "None")],
            ]
        )
    )
    d = depth + 1
    children = [draw(tag("match", [("url", "(.*)")], [], lay, d)), draw(tag("action", action, [], lay, d))]
    if draw(st.booleans()):
        cond = draw(tag("add", [("input", "{HTTPS}"), ("pattern", "off")], [], lay, d + 1))
        children.insert(1, draw(tag("conditions", [], [cond], lay, d)))
    return draw(tag("rule", [("name", name), ("stopProcessing", stop)], children, lay, depth))


@st.composite
def web_config(draw: st.DrawFn) -> bytes:
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    lay = Layout(nl, draw(st.sampled_from(["  ", "    ", "\t", ""])), draw(st.sampled_from(["", " ", nl])))
    latin = draw(st.booleans())
    decl = draw(
        st.sampled_from(
            ['<?xml version="1.0" encoding="ISO-8859-1"?>']
            if latin
            else [
                "",
                '<?xml version="1.0"?>',
                '<?xml version="1.0" encoding="utf-8"?>',
                "<?xml version='1.0' encoding='UTF-8' ?>",
            ]
        )
    )
    rules_children: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["rule", "rule", "clear", "remove", "comment"]))
        if kind == "rule":
            rules_children.append(draw(other_rule(lay, 4)))
        elif kind == "clear":
            rules_children.append(draw(tag("clear", [], [], lay, 4)))
        elif kind == "remove":
            rules_children.append(draw(tag("remove", [("name", _esc(draw(WORD)))], [], lay, 4)))
        else:
            rules_children.append(draw(COMMENT))
    rewrite_children = []
    rules_shape = draw(st.sampled_from(["none", "rules", "rules", "rules", "empty"]))
    if rules_shape == "rules":
        rewrite_children.append(draw(tag("rules", [], rules_children, lay, 3)))
    elif rules_shape == "empty":
        rewrite_children.append(draw(st.sampled_from(["<rules/>", "<rules />", "<rules></rules>"])))
    if draw(st.booleans()):
        rewrite_children.insert(
            draw(st.integers(0, len(rewrite_children))), draw(tag("outboundRules", [], [], lay, 3))
        )
    ws_children: list[str] = []
    kinds = draw(st.lists(st.sampled_from(["redirect", "comment", "handlers"]), max_size=3, unique=True))
    if draw(st.integers(0, 4)):
        kinds.insert(draw(st.integers(0, len(kinds))), "rewrite")
    for kind in kinds:
        if kind == "rewrite":
            ws_children.append(draw(tag("rewrite", [], rewrite_children, lay, 2)))
        elif kind == "redirect":
            ws_children.append(draw(tag("httpRedirect", [("enabled", "false")], [], lay, 2)))
        elif kind == "handlers":
            ws_children.append(draw(tag("handlers", [("accessPolicy", "Read, Script")], [], lay, 2)))
        else:
            ws_children.append(draw(COMMENT))
    top: list[str] = []
    kinds = draw(st.lists(st.sampled_from(["appsettings", "comment", "location"]), max_size=3, unique=True))
    if draw(st.integers(0, 4)):
        kinds.insert(draw(st.integers(0, len(kinds))), "webserver")
    for kind in kinds:
        if kind == "webserver":
            top.append(draw(tag("system.webServer", [], ws_children, lay, 1)))
        elif kind == "appsettings":
            add = draw(tag("add", [("key", _esc(draw(WORD))), ("value", "v")], [], lay, 2))
            top.append(draw(tag("appSettings", [], [add], lay, 1)))
        elif kind == "location":
            browse = draw(tag("directoryBrowse", [("enabled", "false")], [], lay, 3))
            inner = draw(tag("system.webServer", [], [browse], lay, 2))
            top.append(draw(tag("location", [("path", "aspnet_client")], [inner], lay, 1)))
        else:
            top.append(draw(COMMENT))
    root = draw(tag("configuration", [], top, lay, 0))
    text = (decl + nl if decl else "") + root + draw(st.sampled_from(["", nl, nl + nl]))
    if latin:
        return text.encode("latin-1")
    bom = codecs.BOM_UTF8 if draw(st.booleans()) else b""
    return bom + text.encode("utf-8")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(web_config(), st.sampled_from(["all", "proxylogon", "proxynotshell"]))
def test_apply_then_rollback_is_identity(data: bytes, wave: str) -> None:
    rules = rules_for(wave)
    text, encoded = decode_bytes(data)
    applied = plan_apply(text, rules)
    assert applied.added == [r.name for r in rules]
    assert all(s.status == "ok" for s in evaluate(load(applied.text), rules))
    assert plan_apply(applied.text, rules).text == applied.text  # idempotent
    back = plan_rollback(applied.text, rules)
    assert sorted(back.removed) == sorted(r.name for r in rules)
    assert encode_text(back.text, encoded) == data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(web_config(), st.data())
def test_damaged_input_is_refused_or_handled(data: bytes, draw: st.DataObject) -> None:
    """A cut or spliced file either parses (and round-trips) or is refused with an InputError."""
    i = draw.draw(st.integers(0, len(data)))
    j = draw.draw(st.integers(i, len(data)))
    damaged = data[:i] + draw.draw(st.sampled_from([b"", b"<", b"&", b"\xff", b"]]>", b"<rules>"])) + data[j:]
    try:
        text, encoded = decode_bytes(damaged)
        applied = plan_apply(text, RULES)
    except InputError:
        return
    assert encode_text(plan_rollback(applied.text, RULES).text, encoded) == damaged
