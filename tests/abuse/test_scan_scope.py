"""Issue 11: an excluded IPv4 address spelled as IPv6 (IPv4-mapped, 6to4, NAT64, IPv4-compatible) or
reached through a name must never be contacted.

A small listener on loopback records every connection; the scan is run from the CLI as a user would,
and no connection may arrive at an excluded address, whatever its spelling.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.scan.targets import Exclusions, address_views, embedded_ipv4

EXCLUDED = ("127.66.1.98", "127.66.1.99")
ALLOWED = "127.66.1.80"
PORT = 18466


class Recorder:
    """TCP listeners that accept, record the peer's target address, and close."""

    def __init__(self, addresses: tuple[str, ...], port: int) -> None:
        self.hits: list[str] = []
        self.socks: list[socket.socket] = []
        self.stop = threading.Event()
        for address in addresses:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(16)
            s.settimeout(0.1)
            self.socks.append(s)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for s in self.socks:
                try:
                    conn, _peer = s.accept()
                except (TimeoutError, OSError):
                    continue
                self.hits.append(s.getsockname()[0])
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for s in self.socks:
            s.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder((*EXCLUDED, ALLOWED), PORT)
    yield rec
    rec.close()


def _scan(tmp_path: Path, *targets: str) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(
        cli,
        [
            "scan",
            *targets,
            "--exclude",
            "127.66.1.90-127.66.1.99",
            "--ports",
            f"{PORT}/http",
            "--timeout",
            "1",
            "--format",
            "jsonl",
            "--db",
            f"sqlite:///{tmp_path / 's.db'}",
        ],
    )
    assert result.exit_code in (0, 3), result.output
    return {json.loads(line)["address"]: json.loads(line) for line in result.stdout.splitlines()}


def test_ipv4_mapped_targets_of_excluded_addresses_are_not_contacted(
    recorder: Recorder, tmp_path: Path
) -> None:
    hosts = _scan(
        tmp_path,
        "::ffff:127.66.1.98",
        f"http://[::ffff:127.66.1.99]:{PORT}/",
        f"[::ffff:127.66.1.98]:{PORT + 1}",
        "::127.66.1.99",  # IPv4-compatible
        f"::ffff:{ALLOWED}",  # the control: mapped but not excluded, so it is contacted
    )
    assert all(hit == ALLOWED for hit in recorder.hits), recorder.hits
    assert ALLOWED in recorder.hits  # the listener works: the control target got through
    # one host record per address (the two spellings of ::ffff:127.66.1.98 are one host)
    for address in ("::ffff:7f42:162", "::ffff:7f42:163", "::7f42:163"):
        assert (hosts[address]["status"], hosts[address]["error"]) == ("unreachable", "excluded")
        assert all(s["error"] == "excluded" for s in hosts[address]["services"])


def test_a_name_resolving_to_an_excluded_address_is_not_contacted(recorder: Recorder, tmp_path: Path) -> None:
    # "localhost" resolves to loopback; excluding 127.0.0.0/8 spelled as IPv4-mapped IPv6 covers it.
    result = CliRunner().invoke(
        cli,
        [
            "scan",
            f"http://localhost:{PORT}/",
            "--exclude",
            "::ffff:127.0.0.0/104",
            "--exclude",
            "::1",
            "--timeout",
            "1",
            "--format",
            "jsonl",
            "--no-store",
        ],
    )
    assert result.exit_code == 3, result.output
    rec = json.loads(result.stdout.splitlines()[0])
    assert rec["error"] == "excluded"
    assert recorder.hits == []


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("::ffff:127.66.1.98", "127.66.1.98"),
        ("2002:7f42:162::1", "127.66.1.98"),  # 6to4
        ("64:ff9b::7f42:162", "127.66.1.98"),  # NAT64 well-known prefix
        ("64:ff9b:1::7f42:162", "127.66.1.98"),  # NAT64 local-use prefix
        ("::127.66.1.98", "127.66.1.98"),  # IPv4-compatible
        ("2001:0:4136:e378:8000:63bf:80bd:fe9d", "127.66.1.98"),  # Teredo client (obfuscated)
        ("::1", None),
        ("2001:db8::1", None),
        ("127.66.1.98", None),
    ],
)
def test_embedded_ipv4(address: str, inner: str | None) -> None:
    got = embedded_ipv4(address)
    assert (str(got) if got else None) == inner
    excl = Exclusions(["127.66.1.90-127.66.1.99"])
    assert excl.address_excluded(address) is (inner is not None or address == "127.66.1.98")
    assert address_views(address)
