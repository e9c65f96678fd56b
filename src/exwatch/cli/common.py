"""Shared pieces of the CLI: exit codes, the ``--format`` and ``--db`` options, the stderr console.

Every command module under ``exwatch.cli`` builds on these so that the contracts of DESIGN.md hold
everywhere: machine formats on stdout, messages on stderr, the same exit codes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console

from exwatch.config import default_db_url
from exwatch.errors import InputError

# Exit codes (DESIGN.md): 0 nothing found; 1 something found; 2 bad input or command;
# 3 nothing found but some targets or files could not be checked.
EXIT_OK = 0
EXIT_FOUND = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(found: bool, incomplete: bool) -> int:
    """The exit code of a finished run: something found wins over something missed."""
    if found:
        return EXIT_FOUND
    if incomplete:
        return EXIT_INCOMPLETE
    return EXIT_OK


def stderr_console() -> Console:
    """The console for progress and messages; it honours ``-q`` and ``-v`` from the root command."""
    ctx = click.get_current_context(silent=True)
    quiet = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("verbosity", 0) < 0)
    return Console(stderr=True, quiet=quiet)


def verbosity() -> int:
    """-1 with ``-q``, 0 by default, 1 or more with ``-v``."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return 0
    obj = ctx.find_root().obj or {}
    return int(obj.get("verbosity", 0))


def format_option(*choices: str, default: str = "table") -> Callable[[F], F]:
    """The ``--format`` option with the formats this command supports."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices) or ["table", "json"], case_sensitive=False),
        default=default,
        show_default=True,
        help="Output format; machine formats go to stdout, messages to stderr.",
    )


def db_option(func: F) -> F:
    """The ``--db`` option: a store URL; falls back to the root ``--db``, ``EXWATCH_DB``, then SQLite."""
    return click.option(
        "--db",
        "db_url",
        default=None,
        metavar="URL",
        help="Store URL (sqlite:///path or postgresql://...); default: EXWATCH_DB or a SQLite file in the data directory.",
    )(func)


def resolve_db(db_url: str | None) -> str:
    """The store URL for this command: its own ``--db``, else the root one, else the default."""
    if db_url:
        return db_url
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        root = ctx.find_root().obj or {}
        if root.get("db_url"):
            return str(root["db_url"])
    return default_db_url()


def quiet_stdout() -> None:
    """Stdout was closed by its reader (``| head -1``): point it at /dev/null, so that nothing more
    (not even the flush at exit) raises BrokenPipeError; the command then ends with its own line."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a real file (a test runner's buffer): nothing will be flushed to a pipe


def echo_json(obj: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False))
    sys.stdout.write("\n")


def echo_jsonl(objs: Iterable[Any]) -> None:
    """Write one JSON object per line to stdout, flushing each so that pipes see it at once."""
    for obj in objs:
        sys.stdout.write(json.dumps(obj, default=str, ensure_ascii=False))
        sys.stdout.write("\n")
        sys.stdout.flush()


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection",
# https://owasp.org/www-community/attacks/CSV_Injection); evidence and server answers are written by
# the attacker, so such a cell is written with a leading apostrophe, which shows the text as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value for a CSV cell: text that a spreadsheet would run as a formula is quoted with ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def echo_csv(fields: Sequence[str], rows: Iterable[Mapping[str, object]]) -> None:
    """Write CSV to stdout (header, then one line per row, flushed), each text cell made safe for a
    spreadsheet (:func:`csv_cell`)."""
    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
        sys.stdout.flush()


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time given to ``option``; without a zone it is UTC."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2021-03-03T06:49:42Z)") from exc
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
