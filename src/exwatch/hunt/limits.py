"""What the hunt refuses, as options: the per-file and per-PATH limits, and the store-in-evidence guard.

The limits are click options shared by ``exwatch hunt`` (and any command that hunts): sizes accept
``K``, ``M``, ``G`` and ``T`` suffixes (powers of 1024). docs/hunt.md "What the hunt refuses and why"
describes each one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import click

from exwatch.errors import InputError
from exwatch.hunt.model import ArchiveLimits, HuntOptions

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"64K"`` -> 65536; a plain number is bytes. ValueError for anything else."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (a number of bytes, or with K, M, G or T)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


class Size(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            n = parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if n <= 0:
            self.fail("must be more than 0", param, ctx)
        return n


_DEFAULT_LIMITS = ArchiveLimits()
_DEFAULT_OPTIONS = HuntOptions()


def _human(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


# (option, field, type, default, help): every limit of the hunt has an option.
_OPTIONS: list[tuple[str, str, Any, Any, str]] = [
    (
        "--max-file-bytes",
        "max_file_bytes",
        Size(),
        _DEFAULT_OPTIONS.max_file_bytes,
        "Bytes read of one log or event file; the rest is reported as an error.",
    ),
    (
        "--max-archive-bytes",
        "max_total_bytes",
        Size(),
        _DEFAULT_LIMITS.max_total_bytes,
        "Bytes all archives under one PATH may expand to, all nesting together.",
    ),
    (
        "--max-member-bytes",
        "max_member_bytes",
        Size(),
        _DEFAULT_LIMITS.max_member_bytes,
        "Bytes one archive member may expand to.",
    ),
    (
        "--max-members",
        "max_members",
        click.IntRange(min=1),
        _DEFAULT_LIMITS.max_members,
        "Archive members under one PATH, all nesting together.",
    ),
    (
        "--max-archive-ratio",
        "max_ratio",
        click.FloatRange(min=1.0),
        _DEFAULT_LIMITS.max_ratio,
        "Expanded bytes per byte of the evidence's archives (judged above 16 MiB).",
    ),
    (
        "--max-archive-depth",
        "max_depth",
        click.IntRange(min=1),
        _DEFAULT_LIMITS.max_depth,
        "Archives opened inside archives, the outer one counting 1.",
    ),
]


def limit_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the limit options to a click command; read them back with :func:`chosen_limits`."""

    def store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        ctx.meta.setdefault("exwatch.hunt.limits", {})[param.name] = value
        return value

    for opt, field, kind, default, text in reversed(_OPTIONS):
        shown = _human(default) if isinstance(kind, Size) else default
        f = click.option(
            opt,
            field,
            type=kind,
            default=default,
            show_default=str(shown),
            expose_value=False,
            callback=store,
            help=text,
        )(f)
    return f


def apply_limits(options: HuntOptions) -> HuntOptions:
    """``options`` with the limits (``max_file_bytes``, ``limits``) the current command's options chose."""
    ctx = click.get_current_context()
    values = dict(ctx.meta.get("exwatch.hunt.limits", {}))
    max_file = int(values.pop("max_file_bytes", _DEFAULT_OPTIONS.max_file_bytes))
    return replace(options, max_file_bytes=max_file, limits=ArchiveLimits(**values))


def sqlite_file(url: str) -> Path | None:
    """The database file a SQLite store URL opens, resolved, whatever the spelling (``sqlite+pysqlite://``,
    ``sqlite:///file:...?uri=true``, relative paths); None for other databases and in-memory stores."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if u.get_backend_name() != "sqlite":
        return None
    db = u.database or ""
    if db.startswith("file:"):
        # A SQLite URI filename (https://www.sqlite.org/uri.html): file:PATH or file://[localhost]/PATH.
        rest = db[5:].split("?", 1)[0].split("#", 1)[0]
        if rest.startswith("//"):
            authority, _, tail = rest[2:].partition("/")
            if authority not in ("", "localhost"):
                return None
            rest = "/" + tail
        if str(u.query.get("mode", "")) == "memory":
            return None
        db = unquote(rest)
    if not db or db == ":memory:":
        return None
    return Path(db).resolve()


def refuse_store_in_evidence(url: str, evidence: list[Path]) -> None:
    """A SQLite store must not be (or be created) inside the evidence: the hunt never writes there."""
    db = sqlite_file(url)
    if db is None:
        return
    for item in evidence:
        root = item.resolve()
        if db == root or root in db.parents:
            raise InputError(
                f"the store {db} is inside the evidence {item}: give --db elsewhere or --no-store"
            )
