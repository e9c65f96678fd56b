"""Every JSON output of the fleet's read side on two fixed stores, pinned to files made by the code
before the read API and the typed report (issue 16): the refactor must not change a byte of them.

``python tests/report/golden_outputs.py`` writes the files again (only when an output is meant to
change); ``test_golden.py`` compares.  Volatile values (the generation time, the store's temporary
path, the time a change was recorded) are replaced by placeholders.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "web"))

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("report_fill", HERE / "conftest.py")
assert _spec and _spec.loader
_report_fill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_report_fill)
DAY0, fill, record = _report_fill.DAY0, _report_fill.fill, _report_fill.record
from webfill import Client  # noqa: E402
from webfill import fill as web_fill  # noqa: E402

from exwatch.cli.main import cli  # noqa: E402
from exwatch.fleet import Store, open_store  # noqa: E402

VOLATILE = ("generated_at", "created_at", "finished_at")


def fill_report_store(store: Store) -> None:
    """The report tests' store, then a scan of hosts 1 to 4 only 50 days on (hosts 5 to 10 stale),
    host 4 answering on two ports that disagree (a conflict), and host 2 retired."""
    from exwatch.fleet import lifecycle

    fill(store)
    sid = store.start_scan({"targets": ["127.40.2.1-4"]}, started_at=DAY0 + timedelta(days=50))
    recs = [record(h, "patched") for h in (1, 2, 3)]
    four = record(4, "vulnerable", build="15.1.2176.2")
    other = dict(record(4, "patched", build="15.1.2308.8"), port=80, key="127.40.2.4:80")
    store.add_observations(sid, [*recs, dict(four, port=443, key="127.40.2.4:443"), other])
    store.finish_scan(sid)
    lifecycle.retire(store, "127.40.2.2", at=DAY0 + timedelta(days=45))


def _normal(value: Any, store_url: str) -> Any:
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE else _normal(v, store_url) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v, store_url) for v in value]
    if isinstance(value, str) and store_url.split("///")[-1] in value:
        return "<store>"
    return value


def cli_json(url: str, args: list[str]) -> Any:
    result = CliRunner().invoke(cli, [*args, "--db", url])
    assert result.exit_code in (0, 1), result.output
    return _normal(json.loads(result.stdout), url)


REPORT_RUNS: dict[str, list[str]] = {
    "report": ["report", "--format", "json"],
    "report_by_build": ["report", "--format", "json", "--by-build"],
    "report_filtered": ["report", "--format", "json", "--wave", "proxylogon", "--tag", "country=NL"],
    "report_max_age": ["report", "--format", "json", "--max-age", "60", "--limit", "3"],
    "report_fit_window": [
        "report", "--format", "json", "--fit-since", "2021-03-09T00:00", "--fit-until", "2021-03-09T05:00",
    ],
    "report_since": ["report", "--format", "json", "--since", "2021-03-14"],
    "hosts_list": ["hosts", "list", "--format", "json"],
    "hosts_list_tag": ["hosts", "list", "--format", "json", "--tag", "country=BE", "--max-age", "60"],
    "hosts_show": ["hosts", "show", "127.40.2.4", "--format", "json"],
    "hosts_show_retired": ["hosts", "show", "127.40.2.2", "--format", "json"],
    "hosts_changes": ["hosts", "changes", "--format", "json"],
    "scans_list": ["scans", "list", "--format", "json"],
    "scans_show": ["scans", "show", "4", "--format", "json"],
}  # fmt: skip

WEB_PATHS: dict[str, str] = {
    "web_report": "report",
    "api_summary": "/api/summary",
    "api_snapshots": "/api/snapshots",
    "api_snapshots_tag": "/api/snapshots?tag=country=NL",
    "api_hosts": "/api/hosts",
    "api_hosts_page": "/api/hosts?limit=3&offset=2",
    "api_hosts_patched": "/api/hosts?state=patched&wave=proxyshell",
    "api_hosts_text": "/api/hosts?q=exch0&tag=country=NL",
    "api_hosts_unknown_text": "/api/hosts?state=unknown&q=15.2",
    "api_host_5": "/api/hosts/5",
    "api_host_hostile": "/api/hosts/13",
    "api_findings": "/api/findings",
    "api_findings_host": "/api/findings?host=127.60.0.5&confidence=confirmed&limit=5",
}


def report_outputs(url: str) -> Iterator[tuple[str, Any]]:
    for name, args in REPORT_RUNS.items():
        yield name, cli_json(url, args)
    yield "web_report_store", _web_doc(url, "report")


def _web_doc(url: str, path: str) -> Any:
    from exwatch.web import create_app

    app = create_app(url)
    try:
        if path == "report":
            from exwatch.web import data

            doc = data.report(app.state.store)
            return _normal(json.loads(json.dumps(_plain(doc), default=str)), url)
        response = Client(app).get(path)
        assert response.status_code == 200, response.text
        return _normal(response.json(), url)
    finally:
        app.state.store.close()


def _plain(doc: Any) -> Any:
    to_json = getattr(doc, "to_dict", None)
    return to_json() if callable(to_json) else doc


def web_outputs(url: str) -> Iterator[tuple[str, Any]]:
    for name, path in WEB_PATHS.items():
        yield name, _web_doc(url, path)
    for name, args in (("web_report_cli", ["report", "--format", "json", "--by-build"]),):
        yield name, cli_json(url, args)


def build(tmp: Path) -> dict[str, str]:
    """The two stores (SQLite files under ``tmp``)."""
    urls = {"report": f"sqlite:///{tmp / 'report.db'}", "web": f"sqlite:///{tmp / 'web.db'}"}
    with open_store(urls["report"]) as store:
        fill_report_store(store)
    with open_store(urls["web"]) as store:
        web_fill(store)
    return urls


def outputs(tmp: Path) -> dict[str, Any]:
    urls = build(tmp)
    out = dict(report_outputs(urls["report"]))
    out.update(web_outputs(urls["web"]))
    return out


def write(tmp: Path, *, check: Callable[[str], bool] = lambda _n: True) -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, doc in outputs(tmp).items():
        if check(name):
            (GOLDEN / f"{name}.json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
    print(f"written {len(list(GOLDEN.glob('*.json')))} files to {GOLDEN}")
