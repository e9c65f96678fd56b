"""verify against the lab: a server whose mitigation comes from its web.config follows apply and rollback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.lab import ServerSpec, run_fleet_in_thread

from .conftest import DATA

pytestmark = pytest.mark.integration

ADDRESS = "127.30.0.1"
VULNERABLE_BUILD = "15.1.2176.2"  # Exchange 2016 CU19 without the March 2021 SU (builds.md)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def verify(target: str, db: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = CliRunner().invoke(
        cli, ["mitigate", "verify", target, "--db", db, "--format", "json", "--timeout", "3"]
    )
    return result.exit_code, json.loads(result.stdout)


def states(doc: dict) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    (target,) = doc["targets"]
    return {w: (v["result"], v["state"]) for w, v in target["waves"].items()}


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_verify_reads_apply_and_rollback(tmp_path: Path, scheme: str) -> None:
    web_config = tmp_path / "inetpub" / "wwwroot" / "web.config"
    web_config.parent.mkdir(parents=True)
    original = (DATA / "iis_default_bom_crlf.config").read_bytes()
    web_config.write_bytes(original)
    port = free_port(ADDRESS)
    spec = ServerSpec(
        name="EXCH30",
        address=ADDRESS,
        port=port,
        scheme=scheme,
        product="Exchange 2016",
        build=VULNERABLE_BUILD,
        web_config=web_config,
    )
    db = f"sqlite:///{tmp_path / 'store.db'}"
    target = f"{scheme}://{ADDRESS}:{port}"
    with run_fleet_in_thread([spec]):
        code, doc = verify(target, db)
        assert code == 1, doc
        assert states(doc) == {
            "proxylogon": ("vulnerable", "vulnerable"),
            "proxynotshell": ("vulnerable", "vulnerable"),
        }

        applied = CliRunner().invoke(cli, ["mitigate", "apply", "--web-config", str(web_config)])
        assert applied.exit_code == 0, applied.output
        code, doc = verify(target, db)
        assert code == 0, doc
        assert states(doc) == {
            "proxylogon": ("mitigated", "mitigated"),
            "proxynotshell": ("mitigated", "mitigated"),
        }
        assert "aborted" in doc["targets"][0]["waves"]["proxylogon"]["reason"]
        # with the build known, the output names the update that fixes it (from the kb)
        with_build = CliRunner().invoke(
            cli, ["mitigate", "verify", target, "--no-store", "--build", VULNERABLE_BUILD]
        )
        assert with_build.exit_code == 0
        assert "proxylogon: build 15.1.2176.2 is vulnerable: " in with_build.stdout
        assert "15.1.2176.9" in with_build.stdout

        # one wave rolled back: only that wave reads vulnerable again
        CliRunner().invoke(
            cli, ["mitigate", "rollback", "--web-config", str(web_config), "--wave", "proxylogon"]
        )
        code, doc = verify(target, db)
        assert states(doc) == {
            "proxylogon": ("vulnerable", "vulnerable"),
            "proxynotshell": ("mitigated", "mitigated"),
        }

        rolled = CliRunner().invoke(cli, ["mitigate", "rollback", "--web-config", str(web_config)])
        assert rolled.exit_code == 0, rolled.output
        assert web_config.read_bytes() == original
        code, doc = verify(target, db)
        assert code == 1
        assert states(doc) == {
            "proxylogon": ("vulnerable", "vulnerable"),
            "proxynotshell": ("vulnerable", "vulnerable"),
        }
        assert "CU" in doc["note"]

    engine = sa.create_engine(db)
    with engine.connect() as conn:
        kinds = conn.execute(sa.text("select kind from scans order by id")).scalars().all()
        rows = conn.execute(
            sa.text("select s.scan_id, s.wave, s.state from observation_states s order by s.scan_id, s.wave")
        ).all()
    engine.dispose()
    assert kinds == ["verify"] * 4
    by_scan: dict[int, dict[str, str]] = {}
    for scan_id, wave, state in rows:
        by_scan.setdefault(scan_id, {})[wave] = state
    assert list(by_scan.values()) == [
        {"proxylogon": "vulnerable", "proxynotshell": "vulnerable"},
        {"proxylogon": "mitigated", "proxynotshell": "mitigated"},
        {"proxylogon": "vulnerable", "proxynotshell": "mitigated"},
        {"proxylogon": "vulnerable", "proxynotshell": "vulnerable"},
    ]


def test_verify_unreachable_is_inconclusive(tmp_path: Path) -> None:
    port = free_port("127.30.0.2")  # nothing listens there
    result = CliRunner().invoke(
        cli,
        [
            "mitigate",
            "verify",
            f"http://127.30.0.2:{port}",
            "--no-store",
            "--format",
            "json",
            "--timeout",
            "2",
        ],
    )
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert {w["result"] for w in doc["targets"][0]["waves"].values()} == {"inconclusive"}
    assert doc["targets"][0]["status"] == "unreachable"


def test_verify_bad_target() -> None:
    result = CliRunner().invoke(cli, ["mitigate", "verify", "ftp://127.30.0.3", "--no-store"])
    assert result.exit_code == 2 and "scheme must be http or https" in result.stderr


@pytest.mark.postgres
def test_verify_stores_in_postgresql(tmp_path: Path, pg_url: str) -> None:
    web_config = tmp_path / "web.config"
    web_config.write_bytes((DATA / "mitigated_attr_order.config").read_bytes())
    port = free_port("127.30.0.4")
    spec = ServerSpec(
        name="EXCH34",
        address="127.30.0.4",
        port=port,
        scheme="http",
        build=VULNERABLE_BUILD,
        web_config=web_config,
    )
    with run_fleet_in_thread([spec]):
        code, doc = verify(f"http://127.30.0.4:{port}", pg_url)
    assert code == 0
    assert states(doc) == {
        "proxylogon": ("mitigated", "mitigated"),
        "proxynotshell": ("mitigated", "mitigated"),
    }
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        kind = conn.execute(sa.text("select kind from scans where id = :i"), {"i": doc["scan_id"]}).scalar()
        stored = conn.execute(
            sa.text("select wave, state from observation_states where scan_id = :i order by wave"),
            {"i": doc["scan_id"]},
        ).all()
    engine.dispose()
    assert kind == "verify"
    assert [tuple(r) for r in stored] == [("proxylogon", "mitigated"), ("proxynotshell", "mitigated")]
