"""No function over 80 lines in the checked packages: long functions hide several concepts in one body.

``CHECKED`` names the packages (or modules) under ``src/exwatch`` held to the limit; add a package once its long
functions are split (issue 16 item 5). Nested functions count on their own, and their lines also count
towards the function around them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MAX_LINES = 80
# Packages, or single modules (a path ending in .py) of a package not yet held to the limit as a whole.
CHECKED = (
    "fleet/queries.py",
    "fleet/lifecycle.py",
    "fleet/metrics.py",
    "fleet/rows.py",
    "fleet/profiles.py",
    "report",
    "web",
    "cli/report.py",
    "cli/hosts.py",
    "cli/scans.py",
    "cli/readstore.py",
    "lab",
    "hunt",
    "cli/hunt.py",
    "cli/hunt_output.py",
    "cluster/hunt.py",
    "kb",
    "mitigate",
    "collect",
    "watch",
    "importers",
    "cluster/__init__.py",
    "cluster/connect.py",
    "cluster/executor.py",
    "cluster/shards.py",
    "cluster/tasks.py",
    "demo.py",
    "config.py",
    "errors.py",
    "cli/kb.py",
    "cli/lab.py",
    "cli/lab_serve.py",
    "cli/lab_triage.py",
    "cli/mitigate.py",
    "cli/serve.py",
    "cli/demo.py",
    "cli/collect.py",
    "cli/watch.py",
    "cli/imports.py",
    "cli/main.py",
    "cli/common.py",
)
SRC = Path(__file__).resolve().parents[1] / "src" / "exwatch"


def long_functions(root: Path, limit: int = MAX_LINES) -> list[tuple[str, str, int]]:
    """(file, qualified name, lines) of every function under ``root`` longer than ``limit`` lines."""
    found = []
    for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found.extend(_walk(tree, path.relative_to(SRC.parent).as_posix(), "", limit))
    return found


def _walk(node: ast.AST, file: str, prefix: str, limit: int) -> list[tuple[str, str, int]]:
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if lines > limit:
                    found.append((file, name, lines))
            found.extend(_walk(child, file, name + ".", limit))
        else:
            found.extend(_walk(child, file, prefix, limit))
    return found


@pytest.mark.parametrize("package", CHECKED)
def test_no_function_over_the_limit(package: str) -> None:
    too_long = long_functions(SRC / package)
    assert not too_long, "\n".join(
        f"{f}: {name} has {n} lines (limit {MAX_LINES})" for f, name, n in too_long
    )


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    # The walker itself: a method nested in a class, and a function nested in a function, both seen.
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    src = f"class C:\n    def method(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n\n" + (
        f"def outer():\n    def inner():\n    {body.replace(chr(10), chr(10) + '    ')}\n    return inner\n"
    )
    (tmp_path / "m.py").write_text(src)
    names = [(name, n) for _, name, n in _walk(ast.parse(src), "m.py", "", MAX_LINES)]
    assert ("C.method", MAX_LINES + 1) in names
    assert ("outer", MAX_LINES + 3) in names
    assert ("outer.inner", MAX_LINES + 1) in names
