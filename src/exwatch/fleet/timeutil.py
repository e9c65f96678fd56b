"""Times in the store: UTC, stored without zone; given and returned as aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from exwatch.errors import InputError


def to_db(value: Any) -> datetime | None:
    """A datetime or ISO 8601 text as naive UTC for the database (None stays None)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InputError(f"not an ISO 8601 time: {value!r}") from exc
    if not isinstance(value, datetime):
        raise InputError(f"not a time: {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def from_db(value: Any) -> datetime | None:
    """A database time as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def now() -> datetime:
    """The current time, naive UTC, for the database."""
    return datetime.now(UTC).replace(tzinfo=None)
