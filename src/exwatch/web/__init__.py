"""The web dashboard and read-only JSON API over the store (the ``web`` extra: FastAPI, uvicorn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from exwatch.errors import ConfigError
from exwatch.web.auth import AuthSettings, AuthStore, check_password, check_user_name

if TYPE_CHECKING:
    from fastapi import FastAPI

EXTRA_HINT = "pip install 'exwatch[web]'"


def require_web_extra() -> None:
    """Raise a ConfigError naming the install command when FastAPI or uvicorn is missing."""
    try:
        import argon2  # noqa: F401
        import fastapi  # noqa: F401
        import jinja2  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "fastapi/uvicorn"
        raise ConfigError(
            f"the dashboard needs the 'web' extra ({missing} is missing): {EXTRA_HINT}"
        ) from exc


def create_app(
    store_url: str | None,
    *,
    allowed_hosts: Sequence[str] | None = None,
    auth_settings: AuthSettings | None = None,
) -> FastAPI:
    """The FastAPI app over the store at ``store_url`` (see ``exwatch.web.app.create_app``)."""
    require_web_extra()
    from exwatch.web.app import create_app as factory

    return factory(store_url, allowed_hosts=allowed_hosts, auth_settings=auth_settings)


__all__ = [
    "AuthSettings",
    "AuthStore",
    "EXTRA_HINT",
    "check_password",
    "check_user_name",
    "create_app",
    "require_web_extra",
]
