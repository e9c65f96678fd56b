"""The dashboard's pages on a fixed store, pinned as their parsed document (tags, attributes, text) from
the f-string renderer that came before the Jinja2 templates (issue 16): the pages must look the same.

``python tests/web/golden_pages.py`` writes the files again; ``test_golden_pages.py`` compares.  The
generation time and the store's temporary path are replaced by placeholders, and the SVG chart is
compared by its presence only (matplotlib draws it, not the templates).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_html"
sys.path.insert(0, str(HERE))

from webfill import Client, fill  # noqa: E402

from exwatch.fleet import open_store  # noqa: E402

PAGES = {
    "dashboard": "/",
    "dashboard_patched": "/?state=patched&wave=proxyshell",
    "dashboard_page2": "/?offset=10&q=127",
    "dashboard_error": "/?state=bogus",
    "host_5": "/hosts/5",
    "host_hostile": "/hosts/13",
    "not_found": "/hosts/4242",
    "alerts": "/alerts",
    "alerts_error": "/alerts?offset=x",
}
GENERATED = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def canonical(page: str, store_path: str) -> list[Any]:
    """The document as nested [tag, sorted attributes, text, children..., tail] lists."""
    import lxml.html

    page = GENERATED.sub("Generated <time> UTC", page).replace(store_path, "<store>")
    root = lxml.html.document_fromstring(page)

    def walk(el: Any) -> list[Any]:
        if el.tag == "svg" or str(el.tag).endswith("}svg"):
            return ["svg"]
        if not isinstance(el.tag, str):
            return ["comment"]
        text = " ".join((el.text or "").split())
        tail = " ".join((el.tail or "").split())
        attrs = sorted((k, " ".join(v.split())) for k, v in el.attrib.items())
        return [el.tag, attrs, text, [walk(c) for c in el], tail]

    return walk(root)


def pages(tmp: Path) -> dict[str, Any]:
    from exwatch.web import create_app
    from exwatch.web.auth import AuthSettings

    url = f"sqlite:///{tmp / 'pages.db'}"
    with open_store(url) as store:
        fill(store)
    out: dict[str, Any] = {}
    app = create_app(url)
    try:
        client = Client(app)
        for name, path in PAGES.items():
            r = client.get(path)
            out[name] = [r.status_code, canonical(r.text, str(tmp / "pages.db"))]
    finally:
        app.state.store.close()
    app = create_app(url, auth_settings=AuthSettings(required=True))
    try:
        client = Client(app)
        for name, path in (("login", "/login?next=/hosts/5"),):
            r = client.get(path)
            out[name] = [r.status_code, canonical(r.text, str(tmp / "pages.db"))]
    finally:
        app.state.store.close()
    return out


def write(tmp: Path) -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, doc in pages(tmp).items():
        (GOLDEN / f"{name}.json").write_text(json.dumps(doc, indent=0) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
    print(f"written {len(list(GOLDEN.glob('*.json')))} files to {GOLDEN}")
