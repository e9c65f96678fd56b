"""The one place that reads the environment: data directory and default store URL."""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

ENV_HOME = "EXWATCH_HOME"
ENV_DB = "EXWATCH_DB"


def data_dir(create: bool = True) -> Path:
    """The user's data directory (``EXWATCH_HOME`` overrides it), created on first use (unless
    ``create`` is False: commands that only read never create anything)."""
    override = os.environ.get(ENV_HOME)
    path = Path(override) if override else Path(platformdirs.user_data_dir("exwatch", appauthor=False))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_url(create: bool = True) -> str:
    """The store URL: ``EXWATCH_DB`` if set, else a SQLite file in the data directory."""
    url = os.environ.get(ENV_DB)
    if url:
        return url
    return f"sqlite:///{data_dir(create) / 'exwatch.db'}"


_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<tail>@)", re.I)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for every repr and log line."""
    return _PASSWORD_IN_URL.sub(r"\g<head>***\g<tail>", url)
