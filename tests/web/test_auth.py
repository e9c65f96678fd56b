"""Dashboard authentication in process (the ASGI app, a real SQLite store): users, sessions, tokens,
rate limits, and the ``exwatch serve`` commands that manage them."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from webfill import Client, fill

from exwatch.cli.main import cli
from exwatch.fleet import open_store
from exwatch.web.auth import AuthSettings, AuthStore, LoginLimiter

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('auth') / 'store.db'}"
    with open_store(url) as store:
        fill(store)
        AuthStore(store.engine).add_user("alice", PASSWORD)
        AuthStore(store.engine).add_user("bob", PASSWORD + "!")
    return url


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(store_url: str, clock: Clock) -> Iterator[Any]:
    from exwatch.web import create_app

    settings = AuthSettings(limiter=LoginLimiter(attempts=3, window=600, clock=clock))
    app = create_app(store_url, auth_settings=settings)
    yield app
    app.state.store.close()


def _get_paths(app: Any) -> list[str]:
    """Every GET route of the app, with 1 for each path parameter."""
    paths = []
    for route in app.routes:
        if "GET" in getattr(route, "methods", set()):
            paths.append(re.sub(r"\{[^}]+\}", "1", route.path))
    return sorted(set(paths))


def login(client: Client, user: str = "alice", password: str = PASSWORD, next_path: str = "/") -> Any:
    return client.post("/login", data={"username": user, "password": password, "next": next_path})


def test_every_page_and_endpoint_refused_without_a_session(app: Any) -> None:
    client = Client(app)
    paths = _get_paths(app)
    assert {"/", "/hosts/1", "/api/summary", "/api/hosts", "/api/findings", "/api/openapi.json"} <= set(paths)
    for path in paths:
        r = client.get(path)
        if path in ("/login", "/api/health"):
            assert r.status_code == 200, path
        elif path.startswith("/api/"):
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert set(r.json()) == {"detail"}
        else:
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/login"), path
            assert "127.60.0" not in r.text  # nothing of the store
    assert client.get("/api/health").json() == {"status": "ok"}  # no store details without a session
    r = client.get("/hosts/5?x=1")
    assert r.headers["location"] == "/login?next=%2Fhosts%2F5%3Fx%3D1"


def test_login_sets_a_strict_httponly_cookie_then_logout_ends_it(app: Any, store_url: str) -> None:
    client = Client(app)
    r = login(client, next_path="/hosts/5")
    assert r.status_code == 303 and r.headers["location"] == "/hosts/5"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("exwatch_session=")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "max-age", "path", "samesite"} <= attrs and "secure" not in attrs
    assert "samesite=strict" in cookie.lower() and "max-age=43200" in cookie.lower()
    secret = client.cookies["exwatch_session"]
    assert len(secret) >= 40
    with sqlite3.connect(store_url.removeprefix("sqlite:///")) as con:  # only its hash is kept
        hashes = [h for (h,) in con.execute("SELECT token_hash FROM web_sessions")]
    assert secret not in hashes and len(hashes) >= 1
    page = client.get("/hosts/5")
    assert page.status_code == 200 and "127.60.0.5" in page.text and "signed in as alice" in page.text
    assert client.get("/").status_code == 200
    assert client.get("/api/summary").status_code == 200
    assert "latest_scan" in client.get("/api/health").json()
    out = client.post("/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert "exwatch_session" not in client.cookies
    # The old cookie, replayed, opens nothing: the session is gone from the store.
    replay = Client(app)
    replay.cookies.set("exwatch_session", secret)
    assert replay.get("/").status_code == 303
    assert replay.get("/api/summary").status_code == 401


def test_wrong_password_and_unknown_user_get_the_same_answer(app: Any) -> None:
    client = Client(app)
    wrong = login(client, password="not the password")
    nobody = login(client, user="mallory", password="not the password")
    for r in (wrong, nobody):
        assert r.status_code == 401 and "wrong user name or password" in r.text
        assert "set-cookie" not in r.headers
    assert client.get("/").status_code == 303


def test_login_rate_limited_per_user_and_per_address(app: Any, clock: Clock) -> None:
    attacker = Client(app, address="192.0.2.7")
    for _ in range(3):
        assert login(attacker, password="guess").status_code == 401
    # The fourth try is refused before the password is checked, even with the right one...
    r = login(attacker)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # ...and from another address too (the limit is per user name), while bob still signs in.
    assert login(Client(app, address="198.51.100.1")).status_code == 429
    assert login(Client(app, address="198.51.100.1"), "bob", PASSWORD + "!").status_code == 303
    # Per address: twelve failures on random names lock that address out for every name.
    spray = Client(app, address="203.0.113.9")
    for i in range(12):
        assert login(spray, user=f"user{i}", password="x" * 12).status_code == 401
    assert login(spray, "bob", PASSWORD + "!").status_code == 429
    clock.now += 601  # the window passes
    assert login(Client(app, address="192.0.2.7")).status_code == 303
    assert login(spray, "bob", PASSWORD + "!").status_code == 303


def test_expired_session_is_refused(app: Any, store_url: str) -> None:
    client = Client(app)
    assert login(client).status_code == 303
    assert client.get("/").status_code == 200
    with sqlite3.connect(store_url.removeprefix("sqlite:///")) as con:
        con.execute(
            "UPDATE web_sessions SET expires_at = ?",
            ((datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None),),
        )
    assert client.get("/").status_code == 303
    assert client.get("/api/hosts").status_code == 401


def test_bearer_tokens_read_the_api_only(app: Any, store_url: str) -> None:
    with open_store(store_url) as store:
        users = AuthStore(store.engine)
        read = users.create_token("ci", expires=datetime.now(UTC) + timedelta(days=1))
        write = users.create_token("admin", expires=None, scope="write")
        old = users.create_token("old", expires=datetime.now(UTC) + timedelta(seconds=1))
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE web_tokens SET expires_at = '2000-01-01 00:00:00' WHERE name = 'old'"
            )
    client = Client(app)
    auth = {"authorization": f"Bearer {read}"}
    r = client.get("/api/hosts", headers=auth)
    assert r.status_code == 200 and r.json()["total"] == 12
    assert client.get("/api/summary", headers=auth).json()["headline"]
    assert client.get("/", headers=auth).status_code == 303  # a token is not a sign-in
    assert client.post("/api/hosts", headers=auth).status_code == 403  # read-only
    assert client.post("/api/hosts", headers={"authorization": f"Bearer {write}"}).status_code == 405
    for bad in (old, read + "x", "exw_" + "A" * 43, "", "Bearer"):
        assert client.get("/api/hosts", headers={"authorization": f"Bearer {bad}"}).status_code == 401
    with open_store(store_url) as store:
        listed = {t["name"]: t for t in AuthStore(store.engine).list_tokens()}
        assert listed["ci"]["last_used_at"] and listed["old"]["expired"]
        assert AuthStore(store.engine).revoke_token(listed["ci"]["id"])
    assert client.get("/api/hosts", headers=auth).status_code == 401


def test_secure_cookie_when_behind_tls(store_url: str) -> None:
    from exwatch.web import create_app

    app = create_app(store_url, auth_settings=AuthSettings(secure_cookies=True))
    r = login(Client(app))
    assert r.status_code == 303 and "; secure" in r.headers["set-cookie"].lower()
    app.state.store.close()


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil"])
def test_login_never_redirects_off_site(app: Any, target: str) -> None:
    r = login(Client(app), next_path=target)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_cross_site_login_and_logout_are_refused(app: Any) -> None:
    client = Client(app)
    evil = {"origin": "http://evil.example"}
    r = client.post("/login", data={"username": "alice", "password": PASSWORD}, headers=evil)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    assert login(client).status_code == 303
    assert client.post("/logout", headers=evil).status_code == 403
    assert client.post("/logout", headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert client.get("/").status_code == 200
    assert client.post("/login", content=b"x" * 10_000).status_code == 413


def test_without_users_the_dashboard_stays_open(tmp_path: Path) -> None:
    from exwatch.web import create_app

    url = f"sqlite:///{tmp_path / 'open.db'}"
    with open_store(url) as store:
        fill(store)
    app = create_app(url)
    client = Client(app)
    assert client.get("/").status_code == 200
    assert client.get("/api/hosts").status_code == 200
    assert client.get("/login").headers["location"] == "/"
    app.state.store.close()


# -- the commands -------------------------------------------------------------------------------


def run(*args: str, **kwargs: Any) -> Any:
    return CliRunner().invoke(cli, list(args), **kwargs)


def test_users_add_list_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'u.db'}"
    r = run("serve", "users", "list", "--db", db)  # reading never creates a store
    assert r.exit_code == 2 and "no store" in r.stderr and not (tmp_path / "u.db").exists()
    r = run("serve", "users", "add", "carol", "--db", db, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    r = run("serve", "users", "add", "dave", "--db", db, input=f"{PASSWORD}\n{PASSWORD}x\n")
    assert r.exit_code == 2 and "differ" in r.stderr
    r = run("serve", "users", "add", "dave", "--db", db, input="short\n")
    assert r.exit_code == 2 and "too short" in r.stderr
    r = run("serve", "users", "add", "bad name", "--db", db)
    assert r.exit_code == 2 and "user name" in r.stderr
    monkeypatch.setenv("EXWATCH_PASSWORD", PASSWORD)
    assert run("serve", "users", "add", "dave", "--db", db).exit_code == 0
    r = run("serve", "users", "add", "dave", "--db", db)
    assert r.exit_code == 2 and "exists already" in r.stderr
    r = run("serve", "users", "list", "--db", db, "--format", "json")
    assert [u["name"] for u in __import__("json").loads(r.stdout)["users"]] == ["carol", "dave"]
    with open_store(db) as store:
        stored = store.engine.connect().exec_driver_sql("SELECT password_hash FROM web_users").scalars().all()
    assert all(h.startswith("$argon2id$") and PASSWORD not in h for h in stored)
    assert run("serve", "users", "remove", "carol", "--db", db).exit_code == 0
    r = run("serve", "users", "remove", "carol", "--db", db)
    assert r.exit_code == 2 and "no dashboard user" in r.stderr


def test_token_create_is_shown_once_and_stored_hashed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    r = run("serve", "token", "create", "--name", "grafana", "--expires", "30d", "--db", db)
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip()
    assert secret.startswith("exw_") and "read-only" in r.stderr
    r = run("serve", "token", "list", "--db", db, "--format", "json")
    (tok,) = __import__("json").loads(r.stdout)["tokens"]
    assert tok["name"] == "grafana" and tok["scope"] == "read" and secret not in r.stdout
    expires = datetime.fromisoformat(tok["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    for bad in ("yesterday", "2001-01-01", "0x"):
        assert run("serve", "token", "create", "--expires", bad, "--db", db).exit_code == 2
    assert run("serve", "token", "revoke", str(tok["id"]), "--db", db).exit_code == 0
    assert run("serve", "token", "revoke", str(tok["id"]), "--db", db).exit_code == 2


def test_serve_refuses_non_loopback_without_a_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    served: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets))
    db = f"sqlite:///{tmp_path / 's.db'}"
    open_store(db).close()  # serve reads a store that exists (it never creates one)
    r = run("serve", "--db", db, "--host", "0.0.0.0", "--port", "0")
    assert r.exit_code == 2 and served == []
    assert r.stderr.startswith("exwatch: error: refusing to serve on 0.0.0.0") and r.stderr.count("\n") == 1
    monkeypatch.setenv("EXWATCH_PASSWORD", PASSWORD)
    assert run("serve", "users", "add", "erin", "--db", db).exit_code == 0
    r = run("serve", "--db", db, "--host", "0.0.0.0", "--port", "0")
    assert r.exit_code == 0, r.output
    assert len(served) == 1 and "sign-in required" in r.stderr and "plain HTTP" in r.stderr
    r = run("serve", "--db", db, "--certfile", str(tmp_path / "nope.pem"), "--port", "0")
    assert r.exit_code == 2 and "--keyfile" in r.stderr
