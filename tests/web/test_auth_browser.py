"""Dashboard sign-in in a real headless Chromium, driven over the DevTools protocol against ``exwatch serve``.

The browser types into the real form and presses Enter; cookies are the browser's own. Covered: every
page refused without a session, a wrong password, sign-in, sign-out, an expired session, a token on
the API.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_serve import CHROMIUM_FLAGS, _chromium, _free_port, _wait_ready
from webfill import fill

from exwatch.fleet import open_store
from exwatch.web.auth import AuthStore

PASSWORD = "correct horse battery staple"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Browser:
    """One headless Chromium and one page, over the DevTools websocket."""

    def __init__(self, chromium: str, profile: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            pages = [t for t in json.load(resp) if t["type"] == "page"]
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        )
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Network.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_loaded(self, previous: str | None = None) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                state, href = self.js("[document.readyState, location.href]") or ("", "")
            except AssertionError:
                state, href = "", ""
            if state == "complete" and href != previous and href != "about:blank":
                return str(href)
            time.sleep(0.05)
        raise AssertionError("page did not load")

    def goto(self, url: str) -> str:
        self.send("Page.navigate", url=url)
        time.sleep(0.1)
        return self.wait_loaded()

    def type_into(self, element_id: str, text: str) -> None:
        self.js(f"document.getElementById({json.dumps(element_id)}).focus()")
        self.send("Input.insertText", text=text)

    def press_enter(self) -> str:
        before = self.js("location.href")
        self.js("window.__exwatch_marker = 1")
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                text="\r",
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a new document has no marker
            try:
                if (
                    self.js("window.__exwatch_marker") is None
                    and self.js("document.readyState") == "complete"
                ):
                    return str(self.js("location.href"))
            except AssertionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the form did not submit from {before}")

    def text(self, element_id: str) -> str | None:
        return self.js(f"(document.getElementById({json.dumps(element_id)}) || {{}}).textContent")

    def cookies(self) -> list[dict[str, Any]]:
        return list(self.send("Network.getCookies")["cookies"])

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "store.db"
    db = f"sqlite:///{path}"
    with open_store(db) as store:
        fill(store)
        AuthStore(store.engine).add_user("alice", PASSWORD)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "EXWATCH_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exwatch", "serve", "--db", db, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_ready(url, proc)
        yield url, path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_sign_in_flow_in_headless_chromium(served: tuple[str, Path], tmp_path: Path) -> None:
    url, store_path = served
    browser = Browser(_chromium(), tmp_path / "profile")
    try:
        # Every page is refused without a session: the browser lands on the sign-in form.
        for page in ("", "hosts/5", "hosts/13", "alerts", "?state=patched"):
            landed = browser.goto(url + page)
            assert landed.startswith(url + "login"), (page, landed)
            assert browser.text("login") is not None and "127.60.0" not in (
                browser.js("document.body.innerText") or ""
            )
        api = browser.goto(url + "api/summary")
        assert json.loads(browser.js("document.body.innerText"))["detail"].startswith(
            "authentication required"
        )
        assert api == url + "api/summary"

        # A wrong password: the form again, with the error, and no cookie.
        browser.goto(url + "hosts/5")
        browser.type_into("username", "alice")
        browser.type_into("password", "not the password!")
        landed = browser.press_enter()
        assert landed == url + "login"
        assert browser.text("login-error") == "wrong user name or password"
        assert [c for c in browser.cookies() if c["name"] == "exwatch_session"] == []

        # The right one: back to the page asked for, with an HttpOnly, SameSite=Strict session cookie.
        browser.goto(url + "hosts/5")
        browser.type_into("username", "alice")
        browser.type_into("password", PASSWORD)
        landed = browser.press_enter()
        assert landed == url + "hosts/5"
        assert "127.60.0.5" in browser.js("document.querySelector('h1').textContent")
        assert "signed in as alice" in browser.js("document.querySelector('header').textContent")
        (cookie,) = [c for c in browser.cookies() if c["name"] == "exwatch_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
        assert 11.9 * 3600 < cookie["expires"] - time.time() <= 12 * 3600
        assert browser.js("document.cookie") == ""  # not readable from a script
        assert browser.goto(url) == url and browser.text("headline")
        assert "headline" in json.loads(
            browser.goto(url + "api/summary") and browser.js("document.body.innerText")
        )

        # Sign out: the cookie is gone and the pages are refused again.
        browser.goto(url)
        browser.js("document.querySelector('#logout button').focus()")
        landed = browser.press_enter()
        assert landed.startswith(url + "login")
        assert [c for c in browser.cookies() if c["name"] == "exwatch_session"] == []
        assert browser.goto(url + "hosts/5").startswith(url + "login")

        # An expired session: signed in, then the session's time runs out in the store.
        browser.goto(url)
        browser.type_into("username", "alice")
        browser.type_into("password", PASSWORD)
        assert browser.press_enter() == url
        with sqlite3.connect(store_path) as con:
            con.execute("UPDATE web_sessions SET expires_at = '2000-01-01 00:00:00'")
        assert browser.goto(url + "hosts/5").startswith(url + "login")

        # A token on the API: the browser sends it as a bearer header; the pages still want a sign-in.
        with open_store(f"sqlite:///{store_path}") as store:
            token = AuthStore(store.engine).create_token("browser", expires=None)
        browser.send("Network.setExtraHTTPHeaders", headers={"Authorization": f"Bearer {token}"})
        browser.goto(url + "api/hosts")
        assert json.loads(browser.js("document.body.innerText"))["total"] == 12
        assert browser.goto(url).startswith(url + "login")
    finally:
        browser.close()
