"""Import of hand-written Shodan and Censys exports (with broken items): states, snapshots, exit codes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from exwatch.fleet import open_store
from exwatch.fleet import schema as t
from exwatch.importers import import_file
from exwatch.importers.base import Malformed
from exwatch.importers.censys import parse_host
from exwatch.importers.shodan import parse_banner, split_banner

DATA = Path(__file__).resolve().parent / "data"
SHODAN = DATA / "shodan_nl.jsonl"
CENSYS = DATA / "censys_de.json"
EXWATCH = [sys.executable, "-m", "exwatch"]


def stored(url: str) -> dict[str, dict[str, Any]]:
    """day -> {address:port -> (status, build, build_source, proxylogon state)} plus the scan params."""
    out: dict[str, dict[str, Any]] = {}
    with open_store(url) as store, store.connect() as conn:
        for scan in conn.execute(select(t.scans).order_by(t.scans.c.id)):
            params = json.loads(scan.params)
            day = params["import_day"]
            states = {
                r.host_id: r.state
                for r in conn.execute(
                    select(t.observation_states).where(
                        t.observation_states.c.scan_id == scan.id, t.observation_states.c.wave == "proxylogon"
                    )
                )
            }
            rows = conn.execute(select(t.observations).where(t.observations.c.scan_id == scan.id)).all()
            out[day] = {
                f"{r.address}:{r.port}": (r.status, r.build, r.build_source, states.get(r.host_id))
                for r in rows
            }
            out[day]["_params"] = params
            out[day]["_finished"] = scan.finished_at is not None
    return out


def test_shodan_export_states_per_day(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = import_file("shodan", SHODAN, url)
    assert result.lines == 10 and result.observations == 5
    assert dict(result.malformed) == {
        "not JSON": 1,
        "no timestamp": 1,
        "bad ip_str": 1,
        "bad port": 1,
        "not a JSON object": 1,
    }
    assert result.exit_code == 1  # 203.0.113.10 was vulnerable on 5 March
    days = stored(url)
    assert sorted(days) == ["2021-03-05", "2021-03-12"]
    assert {k: v for k, v in days["2021-03-05"].items() if not k.startswith("_")} == {
        "203.0.113.10:443": ("exchange", "15.1.2176.2", "x-owa-version", "vulnerable"),
        "203.0.113.11:443": ("exchange", "15.2.792", "owa-path", "unknown"),  # CU only: SU unknown
        "203.0.113.12:80": ("not_exchange", None, None, None),
    }
    assert {k: v for k, v in days["2021-03-12"].items() if not k.startswith("_")} == {
        "203.0.113.10:443": ("exchange", "15.1.2176.9", "x-owa-version", "patched"),  # from the integer ip
        "203.0.113.16:443": ("exchange", "15.2.792.10", "x-owa-version", "patched"),
    }
    first = days["2021-03-05"]["_params"]
    assert first["source"] == "shodan" and first["tags"] == {"source": "shodan"}
    assert first["scan_time"].startswith("2021-03-05T11:00:00")  # the day's last observation
    assert days["2021-03-05"]["_finished"]
    with open_store(url) as store, store.connect() as conn:
        tags = {(r.key, r.value) for r in conn.execute(select(t.tags))}
    assert ("country", "NL") in tags and ("source", "shodan") in tags


def test_reimport_stores_nothing_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    import_file("shodan", SHODAN, url)
    again = import_file("shodan", SHODAN, url)
    assert again.scans == {} and again.already == ["2021-03-05", "2021-03-12"]
    assert len(stored(url)) == 2


def test_censys_export_with_a_broken_item(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = import_file("censys", CENSYS, url, tags={"feed": "daily"})
    assert dict(result.malformed) == {"not JSON": 1, "malformed service": 1, "bad ip": 1}
    assert result.skipped == 1  # the SMTP-only host
    days = stored(url)
    assert {k: v for k, v in days["2021-03-06"].items() if not k.startswith("_")} == {
        "198.51.100.20:443": ("exchange", "15.1.2176.2", "x-owa-version", "vulnerable"),
        "198.51.100.21:443": ("exchange", "15.1.2176", "owa-path", "unknown"),
    }
    assert {k: v for k, v in days["2021-03-07"].items() if not k.startswith("_")} == {
        "198.51.100.22:80": ("not_exchange", None, None, None),
        "198.51.100.20:443": ("exchange", "15.1.2176.9", "x-owa-version", "patched"),
    }
    assert days["2021-03-06"]["_params"]["tags"] == {"source": "censys", "feed": "daily"}


def test_censys_json_lines_and_shodan_gzip(tmp_path: Path) -> None:
    lines = tmp_path / "c.jsonl"
    host = {
        "ip": "192.0.2.5",
        "services": [
            {
                "port": 443,
                "service_name": "HTTP",
                "observed_at": "2021-03-08T00:00:01Z",
                "http": {
                    "response": {
                        "status_code": 401,
                        "headers": {"X_Owa_Version": {"headers": ["15.1.2176.2"]}},
                    }
                },
            }
        ],
    }
    lines.write_text(json.dumps(host) + "\n{broken\n")
    r = import_file("censys", lines, f"sqlite:///{tmp_path / 'a.db'}")
    assert r.observations == 1 and r.malformed.total() == 1 and r.waves["proxylogon"]["vulnerable"] == 1
    gz = tmp_path / "s.json.gz"
    gz.write_bytes(gzip.compress(SHODAN.read_bytes()))
    r = import_file("shodan", gz, f"sqlite:///{tmp_path / 'b.db'}")
    assert r.observations == 5 and r.malformed.total() == 5


def test_cli_exit_codes_and_messages(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    done = subprocess.run(
        [*EXWATCH, "import", "shodan", str(SHODAN), "--db", db, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and json.loads(done.stdout)["observations"] == 5
    assert "5 malformed item(s) skipped" in done.stderr and done.stderr.count("\n") == 1
    # nothing vulnerable (an nginx banner), one item malformed: 3
    no_exchange = tmp_path / "p.jsonl"
    no_exchange.write_text(SHODAN.read_text().splitlines()[2] + "\nnot json\n")
    done = subprocess.run(
        [*EXWATCH, "import", "shodan", str(no_exchange), "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    # a Censys file given to the Shodan importer: nothing reads, exit 2, nothing stored
    fresh = f"sqlite:///{tmp_path / 'y.db'}"
    done = subprocess.run(
        [*EXWATCH, "import", "shodan", str(CENSYS), "--db", fresh], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stderr.startswith("exwatch: error:")
    assert not (tmp_path / "y.db").exists()
    done = subprocess.run(
        [*EXWATCH, "import", "shodan", str(tmp_path / "missing.jsonl"), "--db", fresh],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no such file" in done.stderr


def test_split_banner() -> None:
    status, headers, body = split_banner(
        "HTTP/1.1 401 Unauthorized\r\nX-OWA-Version: 15.1.2176.2\r\n\r\nbody"
    )
    assert status == 401 and headers == {"X-OWA-Version": "15.1.2176.2"} and body == b"body"
    assert split_banner("SSH-2.0-OpenSSH_8.2\r\n") == (None, {}, b"")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "ip_str": st.sampled_from(["192.0.2.1", "::1", "x"]) | st.text(max_size=10),
            "port": st.integers(-5, 70000) | st.text(max_size=5),
            "timestamp": st.sampled_from(["2021-03-05T01:02:03.000004", "2021-13-01", ""])
            | st.text(max_size=10),
            "data": st.text(max_size=200),
            "http": JSONISH,
            "ssl": JSONISH,
            "location": JSONISH,
        },
    )
)
def test_shodan_parser_never_crashes(banner: dict[str, Any]) -> None:
    try:
        seen = parse_banner(banner)
    except Malformed:
        return
    assert seen.port == int(banner["port"]) and seen.time.tzinfo is not None


@given(st.dictionaries(st.sampled_from(["ip", "services", "location", "last_updated_at"]), JSONISH))
def test_censys_parser_never_crashes(host: dict[str, Any]) -> None:
    try:
        seen, bad = parse_host(host)
    except Malformed:
        return
    assert bad >= 0 and all(0 < s.port < 65536 for s in seen)


@pytest.mark.parametrize("source", ["nmap", "masscan"])
def test_unknown_source(source: str, tmp_path: Path) -> None:
    from exwatch.errors import InputError

    with pytest.raises(InputError):
        import_file(source, SHODAN, f"sqlite:///{tmp_path / 'z.db'}")
