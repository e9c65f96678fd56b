"""Benchmark of ``exwatch mitigate``: fidelity and speed of apply/rollback against a re-serialising editor.

The reference is what most scripts do with a web.config: parse it into a tree (lxml), add or remove the
rule elements, serialise the whole tree again. Both editors get the same files: the test corpus shaped
like real ones (BOM, CRLF, comments, tabs, Latin-1, self-closing rules, <location>) and synthetic files
with many rules. Figures: share of files whose apply-then-rollback gives back the original bytes, share
of the original lines kept verbatim after apply, and the median time of one apply and one rollback.

Run: ``python -m benchmarks.mitigate.run`` (writes ``benchmarks/mitigate/RESULTS.md``).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from exwatch.mitigate.edit import plan_apply, plan_rollback
from exwatch.mitigate.rules import RewriteRule, rules_for
from exwatch.mitigate.xmltext import decode_bytes, encode_text

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1] / "tests" / "mitigate" / "data"
RULES = rules_for("all")
REPEAT = 20


def synthetic(n_rules: int, nl: str) -> bytes:
    """A web.config with ``n_rules`` redirect rules, comments and other sections."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<configuration>",
        "    <system.webServer>",
        "        <rewrite>",
        "            <rules>",
    ]
    for i in range(n_rules):
        lines += [
            f"                <!-- rule {i} -->",
            f'                <rule name="Redirect {i}" stopProcessing="false">',
            f'                    <match url="^old/{i}/(.*)$" />',
            f'                    <action type="Redirect" url="/new/{i}/{{R:1}}" redirectType="Permanent" />',
            "                </rule>",
        ]
    lines += [
        "            </rules>",
        "        </rewrite>",
        '        <httpRedirect enabled="false" />',
        "    </system.webServer>",
        "</configuration>",
        "",
    ]
    return nl.join(lines).encode("utf-8")


def corpus() -> dict[str, bytes]:
    files = {
        p.name: p.read_bytes()
        for p in sorted(CORPUS.glob("*.config"))
        if not p.name.startswith(("malformed", "wrong", "location_noinherit", "mitigated", "renamed"))
    }
    for n in (10, 200, 2000):
        files[f"synthetic_{n}_rules_crlf"] = synthetic(n, "\r\n")
    return files


# --- exwatch: surgical text edits ---------------------------------------------------------------


def ours_apply(data: bytes) -> bytes:
    text, enc = decode_bytes(data)
    return encode_text(plan_apply(text, RULES).text, enc)


def ours_rollback(data: bytes) -> bytes:
    text, enc = decode_bytes(data)
    return encode_text(plan_rollback(text, RULES).text, enc)


# --- reference: parse, edit the tree, serialise ------------------------------------------------


def _rule_element(rule: RewriteRule) -> etree._Element:
    el = etree.Element("rule", name=rule.name, patternSyntax=rule.pattern_syntax)
    if rule.stop_processing:
        el.set("stopProcessing", "true")
    etree.SubElement(el, "match", url=rule.match_url)
    conds = etree.SubElement(el, "conditions")
    etree.SubElement(conds, "add", input=rule.input, pattern=rule.pattern)
    etree.SubElement(el, "action", type=rule.action)
    return el


def _serialise(tree: etree._ElementTree, data: bytes) -> bytes:
    encoding = tree.docinfo.encoding or "utf-8"
    return etree.tostring(
        tree, xml_declaration=data.lstrip(b"\xef\xbb\xbf").startswith(b"<?xml"), encoding=encoding
    )


def lxml_apply(data: bytes) -> bytes:
    tree = etree.ElementTree(etree.fromstring(data))
    root = tree.getroot()
    parent = root
    for name in ("system.webServer", "rewrite", "rules"):
        found = parent.find(name)
        parent = found if found is not None else etree.SubElement(parent, name)
    for i, rule in enumerate(RULES):
        parent.insert(i, _rule_element(rule))
    return _serialise(tree, data)


def lxml_rollback(data: bytes) -> bytes:
    tree = etree.ElementTree(etree.fromstring(data))
    names = {r.name for r in RULES}
    for el in tree.getroot().iter("rule"):
        if el.get("name") in names:
            el.getparent().remove(el)
    return _serialise(tree, data)


def kept_lines(original: bytes, applied: bytes) -> float:
    """Share of the original's lines found verbatim, in order, in the applied file."""
    old = original.split(b"\n")
    pos = 0
    kept = 0
    for line in old:
        found = applied.find(line, pos)
        if found >= 0:
            kept += 1
            pos = found + len(line)
    return kept / len(old)


def median_seconds(func: Callable[[bytes], bytes], data: bytes) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        func(data)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    files = corpus()
    rows = []
    totals = {"ours": [0, 0.0], "lxml": [0, 0.0]}
    for name, data in files.items():
        row = [name, str(len(data))]
        for label, do_apply, do_rollback in (
            ("ours", ours_apply, ours_rollback),
            ("lxml", lxml_apply, lxml_rollback),
        ):
            applied = do_apply(data)
            identical = do_rollback(applied) == data
            kept = kept_lines(data, applied)
            t_apply = median_seconds(do_apply, data)
            t_rollback = median_seconds(do_rollback, applied)
            totals[label][0] += int(identical)
            totals[label][1] += kept
            row += [
                "yes" if identical else "no",
                f"{kept:.0%}",
                f"{t_apply * 1e3:.2f}",
                f"{t_rollback * 1e3:.2f}",
            ]
        rows.append(row)
    n = len(files)
    header = ["file", "bytes", "exwatch identical", "exwatch lines kept", "exwatch apply ms", "exwatch rollback ms",
              "lxml identical", "lxml lines kept", "lxml apply ms", "lxml rollback ms"]  # fmt: skip
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    summary = (
        f"apply then rollback gives back the original bytes: exwatch {totals['ours'][0]}/{n}, "
        f"lxml re-serialisation {totals['lxml'][0]}/{n}; original lines kept verbatim after apply: "
        f"exwatch {totals['ours'][1] / n:.0%}, lxml {totals['lxml'][1] / n:.0%} (mean over files)"
    )
    big = "synthetic_2000_rules_crlf"
    big_row = next(r for r in rows if r[0] == big)
    speed = (
        f"on the {big_row[1]}-byte file with 2,000 rules: apply {big_row[4]} ms (exwatch) vs {big_row[8]} ms (lxml), "
        f"ratio {float(big_row[4]) / float(big_row[8]):.1f}x; rollback {big_row[5]} ms vs {big_row[9]} ms"
    )
    report = "\n".join(out)
    print(report)
    print(summary)
    print(speed)
    env = f"Python {sys.version.split()[0]}, lxml {etree.__version__}, median of {REPEAT} runs per figure"
    (HERE / "RESULTS.md").write_text(
        "# mitigate benchmark\n\n"
        "`python -m benchmarks.mitigate.run` (" + env + ").\n\n"
        "Reference: parse the file with lxml, edit the tree, serialise it again (what a re-serialising editor "
        "does). exwatch edits the text in place.\n\n" + report + "\n\n" + summary + ".\n\n" + speed + ".\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
