"""Commands that only read the store never create one; filter typos exit 2 naming the valid values."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.errors import InputError
from exwatch.fleet import open_store, require_store

READ_ONLY = (
    ["report"],
    ["report", "--format", "json"],
    ["report", "stix"],
    ["hosts", "list"],
    ["hosts", "show", "127.73.0.1"],
    ["hosts", "tag", "127.73.0.1", "country=NL"],
    ["hosts", "retire", "127.73.0.1"],
    ["hosts", "changes"],
    ["scans", "list"],
    ["scans", "show", "1"],
    ["scans", "delete", "1", "--yes"],
)


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a))
def test_default_store_missing(args: list[str], exwatch_home: Path) -> None:
    home = exwatch_home / "nested"  # a data directory that does not exist yet
    result = CliRunner(env={"EXWATCH_HOME": str(home)}).invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"exwatch: error: no store at {home / 'exwatch.db'}; run exwatch scan first"
    )
    assert not home.exists()  # not even the data directory


@pytest.mark.parametrize("args", READ_ONLY[:1] + READ_ONLY[3:4] + READ_ONLY[8:9], ids=lambda a: a[0])
def test_sqlite_url_missing(args: list[str], tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.db"
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", *args])
    assert result.exit_code == 2
    assert f"no store at {path}; run exwatch scan first" in result.output
    assert not path.exists() and not path.parent.exists()
    # an empty file is not a store either, and stays empty
    path.parent.mkdir()
    path.touch()
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", *args])
    assert result.exit_code == 2 and path.stat().st_size == 0


def test_existing_store_opens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with open_store(url):
        pass
    assert require_store(url) == url
    result = CliRunner().invoke(cli, ["--db", url, "report", "--format", "json"])
    assert result.exit_code == 0, result.output


@pytest.mark.postgres
@pytest.mark.integration
def test_postgres_without_schema(pg_url: str) -> None:
    from tests.fleet.conftest import fresh_pg_url

    for url in fresh_pg_url(pg_url):
        with pytest.raises(InputError, match="no store at"):
            require_store(url)
        result = CliRunner().invoke(cli, ["--db", url, "hosts", "list"])
        assert result.exit_code == 2 and "run exwatch scan first" in result.output
        from sqlalchemy import create_engine, inspect

        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            assert inspect(engine).get_table_names() == []  # nothing created
        finally:
            engine.dispose()


@pytest.fixture
def tagged_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 't.db'}"
    with open_store(url) as store:
        scan = store.start_scan({"targets": ["127.73.0.1"]})
        store.add_observations(
            scan,
            [
                {
                    "key": "127.73.0.1",
                    "address": "127.73.0.1",
                    "port": 443,
                    "status": "exchange",
                    "build": "15.1.2176.2",
                    "waves": {"proxylogon": {"state": "vulnerable"}},
                    "tags": {"country": "NL"},
                }
            ],
        )
        store.finish_scan(scan)
    return url


def test_wave_typo_names_the_waves(tagged_store: str) -> None:
    from exwatch import kb

    result = CliRunner().invoke(cli, ["--db", tagged_store, "report", "--wave", "proxylogin"])
    assert result.exit_code == 2
    assert "unknown wave 'proxylogin'" in result.output
    for wave in kb.WAVES:
        assert wave.id in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--tag", "countr=NL"], "unknown tag key 'countr': the store's tag keys are country"),
        (["report", "--tag", "country=XX"], "no host has the tag country=XX: the values of 'country' are NL"),
        (["hosts", "list", "--tag", "country=XX"], "the values of 'country' are NL"),
    ],
)
def test_tag_typo_names_the_values(tagged_store: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["--db", tagged_store, *args])
    assert result.exit_code == 2
    assert message in result.output
    ok = CliRunner().invoke(cli, ["--db", tagged_store, "report", "--tag", "country=NL", "--format", "json"])
    assert ok.exit_code == 1, ok.output  # one vulnerable host


def test_serve_needs_an_existing_store(exwatch_home: Path) -> None:
    home = exwatch_home / "nested"
    result = CliRunner(env={"EXWATCH_HOME": str(home)}).invoke(cli, ["serve", "--port", "0"])
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip() == f"exwatch: error: no store at {home / 'exwatch.db'}; run exwatch scan first"
    )
    assert not home.exists()


def test_read_profile_only_reads(tmp_path: Path) -> None:
    from exwatch.errors import InputError as NoStore

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(NoStore):
        open_store(url, profile="read")
    assert not (tmp_path / "r.db").exists()
    open_store(url).close()
    with open_store(url, profile="read") as store:
        assert store.latest_scan_id() is None  # it reads
        with pytest.raises(Exception, match="readonly"):
            store.start_scan({})  # and it cannot write
