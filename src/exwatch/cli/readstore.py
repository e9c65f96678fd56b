"""Opening the store for the commands that only read it (report, hosts, scans): never create one."""

from __future__ import annotations

import click

from exwatch.fleet import Store, open_store


def store_url_option(db_url: str | None) -> str | None:
    """The command's own ``--db``, else the root ``--db``, else None (EXWATCH_DB or the default file)."""
    if db_url:
        return db_url
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        root = ctx.find_root().obj or {}
        if root.get("db_url"):
            return str(root["db_url"])
    return None


def existing_store(db_url: str | None, *, profile: str = "read") -> Store:
    """The store this command names, which must exist: else exit 2 with
    "no store at PATH; run exwatch scan first", and nothing created.  ``profile``: ``read`` (its
    connections only read) or ``existing`` (for the commands that change hosts or delete scans)."""
    return open_store(store_url_option(db_url), profile=profile)
