"""Every page renders through the autoescaped templates: a host name with markup is text on each page,
and the alerts page has the dashboard's signed-in header with its sign-out button."""

from __future__ import annotations

from pathlib import Path

from webfill import Client

from exwatch.fleet import open_store
from exwatch.web.auth import AuthSettings, AuthStore

NAME = "<script>alert('x')</script>.example"
PASSWORD = "a long enough password"


def _store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 't.db'}"
    with open_store(url) as store:
        sid = store.start_scan({"targets": ["127.61.0.1"]})
        record = {
            "target": "127.61.0.1",
            "key": "127.61.0.1:443",
            "address": "127.61.0.1",
            "port": 443,
            "status": "exchange",
            "build": "15.1.2176.2",
            "name": NAME,
            "fe_server": NAME,
            "waves": {"proxylogon": {"state": "vulnerable", "fix": {"text": NAME}}},
        }
        store.add_observations(sid, [record])
        store.finish_scan(sid)
        AuthStore(store.engine).add_user("alice", PASSWORD)
    return url


def test_markup_in_a_host_name_is_text_on_every_page(tmp_path: Path) -> None:
    from exwatch.web import create_app

    app = create_app(_store(tmp_path), auth_settings=AuthSettings(required=True))
    try:
        client = Client(app)
        login = client.get("/login?next=/%3Cscript%3E")
        assert "<script" not in login.text.lower()
        signed = client.post("/login", data={"username": "alice", "password": PASSWORD, "next": "/"})
        assert signed.status_code == 303
        for path in ("/", "/hosts/1", "/alerts", "/hosts/999", f"/?q={NAME}"):
            page = client.get(path)
            assert "<script" not in page.text.lower(), path
            assert "signed in as alice" in page.text and "id='logout'" in page.text, path
        assert "&lt;script&gt;" in client.get("/hosts/1").text
    finally:
        app.state.store.close()
