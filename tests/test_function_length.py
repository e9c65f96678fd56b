"""No function over 80 lines anywhere in ``src/exwatch``: long functions hide several concepts in one body.

Every module of the package is held to the limit (issue 16 item 5), except the Alembic revisions in
``fleet/migrations/``: their ``upgrade`` functions are data-like lists of DDL (one ``create_table`` or
``create_index`` after another, as Alembic writes them), frozen once released, with no concept to split
out. Nested functions count on their own, and their lines also count towards the function around them.
"""

from __future__ import annotations

import ast
from pathlib import Path

MAX_LINES = 80
SRC = Path(__file__).resolve().parents[1] / "src" / "exwatch"
# Not held to the limit: Alembic revisions (DDL lists, see the module docstring).
EXEMPT = ("fleet/migrations/",)


def modules() -> list[Path]:
    """Every module of the package held to the limit."""
    return [
        path for path in sorted(SRC.rglob("*.py")) if not path.relative_to(SRC).as_posix().startswith(EXEMPT)
    ]


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


def test_no_function_over_the_limit() -> None:
    paths = modules()
    assert len(paths) > 100  # the whole package is walked, not an empty glob
    too_long = [found for path in paths for found in long_functions(path)]
    assert not too_long, "\n".join(
        f"{f}: {name} has {n} lines (limit {MAX_LINES})" for f, name, n in too_long
    )


def test_only_the_migrations_are_exempt() -> None:
    walked = {path.relative_to(SRC).as_posix() for path in modules()}
    every = {path.relative_to(SRC).as_posix() for path in SRC.rglob("*.py")}
    assert {p for p in every - walked} == {p for p in every if p.startswith("fleet/migrations/")}
    assert "fleet/store.py" in walked and "scan/engine.py" in walked and "lab/triage_scenarios.py" in walked
    # the exemption is used: the revisions do hold long upgrade functions
    assert any(long_functions(SRC / p) for p in every - walked)


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
