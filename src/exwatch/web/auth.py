"""Dashboard authentication: users with Argon2id password hashes, server-side sessions, API bearer tokens,
and login rate limits.

Everything lives in the store (tables of migration 0005), so a dashboard behind a PostgreSQL store and
several ``exwatch serve`` processes share users, sessions and tokens.  What is kept of a secret:

- a password: its Argon2id hash (argon2-cffi's defaults, RFC 9106's second recommended profile);
- a session cookie or an API token: the SHA-256 of 32 random bytes (a random 256-bit secret needs no
  slow hash), so a copy of the store opens no session and no API.

When no user exists the dashboard is open, and ``exwatch serve`` refuses to bind anything but loopback.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from exwatch.errors import InputError

# The tables of migration 0005 (kept out of the fleet schema: only the dashboard reads them).
auth_metadata = MetaData()
web_users = Table(
    "web_users",
    auth_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
)
web_sessions = Table(
    "web_sessions",
    auth_metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("web_users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)
web_tokens = Table(
    "web_tokens",
    auth_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scope", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime),
    Column("last_used_at", DateTime),
)

SESSION_COOKIE = "exwatch_session"
TOKEN_PREFIX = "exw_"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 hashes any length; a megabyte "password" is only a way to burn CPU
SCOPES = ("read", "write")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def check_user_name(name: str) -> str:
    if not USER_NAME.match(name):
        raise InputError(
            f"user name {name!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-' (starting with a letter or digit)"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"the password is too long: at most {MAX_PASSWORD} characters")
    return password


@dataclass(frozen=True)
class Identity:
    """Who a request is: a signed-in user (a session) or an API token."""

    kind: str  # "session" or "token"
    name: str
    scope: str = "read"

    @property
    def can_write(self) -> bool:
        return self.kind == "session" or self.scope == "write"


class AuthStore:
    """Users, sessions and tokens in the store behind ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dummy_hash: str | None = None

    # -- users ---------------------------------------------------------------------------------

    def has_users(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(web_users.c.id).limit(1)).first() is not None

    def add_user(self, name: str, password: str) -> None:
        check_user_name(name)
        check_password(password)
        hashed = _hasher().hash(password)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(web_users).values(name=name, password_hash=hashed, created_at=_now()))
        except IntegrityError as exc:
            raise InputError(
                f"user {name!r} exists already (remove it first to change its password)"
            ) from exc

    def remove_user(self, name: str) -> bool:
        """Remove a user and end its sessions; False when there was no such user."""
        with self.engine.begin() as conn:
            user_id = conn.execute(select(web_users.c.id).where(web_users.c.name == name)).scalar()
            if user_id is None:
                return False
            conn.execute(delete(web_sessions).where(web_sessions.c.user_id == user_id))
            conn.execute(delete(web_users).where(web_users.c.id == user_id))
        return True

    def list_users(self) -> list[dict[str, Any]]:
        now = _now()
        live = (
            select(web_sessions.c.user_id, func.count().label("sessions"))
            .where(web_sessions.c.expires_at > now)
            .group_by(web_sessions.c.user_id)
            .subquery()
        )
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(web_users.c.name, web_users.c.created_at, live.c.sessions)
                .outerjoin(live, live.c.user_id == web_users.c.id)
                .order_by(web_users.c.name)
            ).all()
        return [
            {"name": r.name, "created_at": r.created_at.isoformat() + "Z", "sessions": int(r.sessions or 0)}
            for r in rows
        ]

    def verify_password(self, name: str, password: str) -> int | None:
        """The user's id when ``password`` is right; an unknown user costs the same hashing time."""
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = _hasher()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(web_users.c.id, web_users.c.password_hash).where(web_users.c.name == name)
            ).first()
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = hasher.hash(secrets.token_hex(16))
            try:
                hasher.verify(self._dummy_hash, password)
            except (VerificationError, InvalidHashError):
                pass
            return None
        try:
            hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if hasher.check_needs_rehash(row.password_hash):
            with self.engine.begin() as conn:
                conn.execute(
                    update(web_users)
                    .where(web_users.c.id == row.id)
                    .values(password_hash=hasher.hash(password))
                )
        return int(row.id)

    # -- sessions ------------------------------------------------------------------------------

    def new_session(self, user_id: int, lifetime: timedelta) -> str:
        secret = secrets.token_urlsafe(32)
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
            conn.execute(
                insert(web_sessions).values(
                    token_hash=_digest(secret), user_id=user_id, created_at=now, expires_at=now + lifetime
                )
            )
        return secret

    def session(self, secret: str) -> Identity | None:
        if not secret or len(secret) > 256:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(web_users.c.name, web_sessions.c.expires_at)
                .join(web_users, web_users.c.id == web_sessions.c.user_id)
                .where(web_sessions.c.token_hash == _digest(secret))
            ).first()
        if row is None or row.expires_at <= _now():
            return None
        return Identity("session", row.name)

    def end_session(self, secret: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == _digest(secret)))

    # -- tokens --------------------------------------------------------------------------------

    def create_token(self, name: str, *, expires: datetime | None, scope: str = "read") -> str:
        """A new API token (returned once; only its SHA-256 is kept)."""
        if scope not in SCOPES:
            raise InputError(f"unknown token scope {scope!r}: use one of {', '.join(SCOPES)}")
        if not name or len(name) > 64:
            raise InputError("a token name has 1 to 64 characters")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                insert(web_tokens).values(
                    name=name,
                    token_hash=_digest(secret),
                    scope=scope,
                    created_at=_now(),
                    expires_at=expires.astimezone(UTC).replace(tzinfo=None) if expires else None,
                )
            )
        return secret

    def token(self, secret: str) -> Identity | None:
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 256:
            return None
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(web_tokens.c.id, web_tokens.c.name, web_tokens.c.scope, web_tokens.c.expires_at).where(
                    web_tokens.c.token_hash == _digest(secret)
                )
            ).first()
            if row is None or (row.expires_at is not None and row.expires_at <= now):
                return None
            conn.execute(update(web_tokens).where(web_tokens.c.id == row.id).values(last_used_at=now))
        return Identity("token", row.name, row.scope)

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(web_tokens).order_by(web_tokens.c.id)).all()
        now = _now()

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() + "Z" if value else None

        return [
            {
                "id": r.id,
                "name": r.name,
                "scope": r.scope,
                "created_at": iso(r.created_at),
                "expires_at": iso(r.expires_at),
                "last_used_at": iso(r.last_used_at),
                "expired": r.expires_at is not None and r.expires_at <= now,
            }
            for r in rows
        ]

    def revoke_token(self, token_id: int) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(web_tokens).where(web_tokens.c.id == token_id)).rowcount)


class LoginLimiter:
    """Failed logins per client address and per user name in a sliding window (memory of one process)."""

    def __init__(self, attempts: int = 5, window: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.attempts = attempts
        self.per_address = attempts * 4  # a shared NAT or proxy address tries several users
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, address: str, user: str) -> int:
        """Seconds until this address may try this user again (0: now)."""
        now = self.clock()
        waits = []
        with self._lock:
            for key, limit in ((f"a:{address}", self.per_address), (f"u:{user.lower()}", self.attempts)):
                times = self._recent(key, now)
                if len(times) >= limit:
                    waits.append(times[len(times) - limit] + self.window - now)
        return max(1, int(max(waits)) + 1) if waits else 0

    def failed(self, address: str, user: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a spray of names
                self._failures.clear()
            for key in (f"a:{address}", f"u:{user.lower()}"):
                self._recent(key, now).append(now)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(f"u:{user.lower()}", None)


@dataclass
class AuthSettings:
    """How ``exwatch serve`` authenticates.

    ``required``: None decides by the store (required when a user exists); True or False forces it.
    """

    required: bool | None = None
    session_lifetime: timedelta = timedelta(hours=12)
    secure_cookies: bool = False
    login_attempts: int = 5
    login_window: float = 900.0
    limiter: LoginLimiter | None = field(default=None, repr=False)

    def make_limiter(self) -> LoginLimiter:
        if self.limiter is None:
            self.limiter = LoginLimiter(self.login_attempts, self.login_window)
        return self.limiter


def local_target(target: str | None) -> str:
    """Where to go after login: a path on this site only (no scheme, no host, no ``//``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def parse_form(body: bytes) -> dict[str, str]:
    """A url-encoded form body (at most a few KB: the login form has three fields)."""
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
    return {k: v[0] for k, v in fields.items()}


def login_page(*, next_path: str = "/", error: str | None = None, user: str = "") -> str:
    """The sign-in form: server-rendered (the dashboard's base template), no script, posts to /login."""
    from exwatch.web.pages import render

    return render("login.html", title="exwatch: sign in", message=error, next_path=next_path, user=user)


def login_redirect(path: str, query: str) -> str:
    target = path + ("?" + query if query else "")
    return "/login" if target == "/" else "/login?next=" + quote(target, safe="")
