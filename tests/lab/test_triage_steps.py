"""The scenario planter (exwatch.lab.triage_steps): templates, draws in order, times, truth, and the
scenario tables' output pinned per seed (a refactor of the tables must not change a package)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from exwatch.lab import triage_traffic as traffic
from exwatch.lab.triage_formats import ServerInfo, iso_ms
from exwatch.lab.triage_plan import EVT_SYSMON, Plan, TruthItem, iis_file
from exwatch.lab.triage_scenarios import lookalikes, proxylogon, proxynotshell, proxyshell
from exwatch.lab.triage_steps import (
    Draw,
    File,
    IisLine,
    Mark,
    Process,
    RandInt,
    ScenarioRun,
    Truth,
    after,
    plant,
    random_text,
    server_names,
)

T0 = datetime(2021, 3, 3, 6, 49, 42, tzinfo=UTC)


def _run(seed: int = 1, host: str = "EXCH01") -> ScenarioRun:
    plan = Plan(ServerInfo(host=host), T0 - timedelta(days=2), T0 + timedelta(hours=12), seed)
    return ScenarioRun(
        plan, "attack", "proxylogon", random.Random(seed), {"t0": T0}, server_names(plan.server)
    )


def test_templates_fill_names_and_draw_guids_left_to_right() -> None:
    run = _run()
    twin = random.Random(1)
    first, second = traffic.guid(twin), traffic.guid(twin)
    assert run.fill("{host}|{guid}|{fqdn}|{guid}") == f"EXCH01|{first}|EXCH01.contoso.com|{second}"
    assert run.fill(RandInt(5, 9)) == str(twin.randint(5, 9))


def test_a_filled_value_is_not_read_again_as_a_template() -> None:
    run = _run()
    run.names["odd"] = "{host}"
    assert run.fill("x{odd}y") == "x{host}y"
    # Braces that are not a slot (the web-shell script) stay as they are.
    assert run.fill("function Page_Load(){eval(1);}}") == "function Page_Load(){eval(1);}}"


def test_an_unknown_template_name_fails_loudly() -> None:
    with pytest.raises(KeyError, match="cannary"):
        _run().fill("/ecp/?msExchEcpCanary={cannary}")


def test_draws_and_marks_happen_in_step_order() -> None:
    run = _run(seed=5)
    plant(
        run,
        (
            Draw("name", random_text("ab", 4, prefix="p-", suffix=".aspx")),
            Mark("later", after("t0", minutes=7), jitter=40),
        ),
    )
    twin = random.Random(5)
    assert run.names["name"] == "p-" + "".join(twin.choice("ab") for _ in range(4)) + ".aspx"
    assert run.times["later"] == T0 + timedelta(minutes=7, seconds=twin.randint(0, 40))


def test_a_back_end_line_goes_to_the_request_file_and_truth_names_the_request_time() -> None:
    # A request 10 ms before midnight, logged 40 ms later by the back end: the line is in the file
    # of the request's day, carries the later time, and its truth item the request's time.
    run = _run()
    run.times["late"] = datetime(2021, 3, 3, 23, 59, 59, 990000, tzinfo=UTC)
    step = IisLine(
        after("late"),
        method="POST",
        stem="/ecp/DDI/DDIService.svc/SetObject",
        query="schema=ResetOABVirtualDirectory",
        user="{netbios}\\{host}$",
        client="{address}",
        agent="python-requests/2.25.1",
        status="200",
        time_taken="5",
        truth=(Truth("proxylogon.iis_backend_reset", "CVE-2021-27065", match="schema=Reset"),),
        back_end=True,
        lag=timedelta(milliseconds=40),
    )
    plant(run, (step,))
    (line,) = run.plan.lines
    assert line.file == iis_file("2", run.times["late"]) != iis_file("2", line.time)
    assert line.time == run.times["late"] + timedelta(milliseconds=40)
    assert "CONTOSO\\EXCH01$" in line.text and " 444 " in line.text
    # The user agent is a published indicator: a context item joins the planted one.
    assert [i.detection for i in line.items] == ["proxylogon.iis_backend_reset", "context.user_agent"]
    assert line.items[0].time == iso_ms(run.times["late"])
    assert line.items[0].match == "schema=Reset" and line.items[0].wave == "proxylogon"


def test_truth_matches_are_filled_and_events_carry_their_truth() -> None:
    run = _run()
    run.names["shell"] = "abc.aspx"
    plant(
        run,
        (
            Process(
                after("t0", seconds=3),
                image="C:\\Windows\\System32\\cmd.exe",
                command="cmd.exe /c attrib +h {shell}",
                parent_image="w3wp.exe",
                parent_command="w3wp.exe -ap pool",
                truth=(Truth("postexploit.cleanup_hiding", match="+h {shell}"),),
            ),
        ),
    )
    (event,) = run.plan.events
    assert event.file == EVT_SYSMON
    assert dict(event.spec.named_data)["CommandLine"] == "cmd.exe /c attrib +h abc.aspx"
    assert event.items[0].match == "+h abc.aspx"
    assert event.items[0].time == iso_ms(T0 + timedelta(seconds=3))


def test_a_replacing_file_drops_the_earlier_plant_of_its_path() -> None:
    run = _run()
    plant(
        run,
        (
            File(after("t0"), "a/b.txt", b"old"),
            File(after("t0"), "a/c.txt", b"other"),
            File(after("t0", minutes=1), "a/b.txt", lambda r, t: t.isoformat().encode(), replace=True),
        ),
    )
    assert [(f.path, f.content) for f in run.plan.files] == [
        ("a/c.txt", b"other"),
        ("a/b.txt", (T0 + timedelta(minutes=1)).isoformat().encode()),
    ]


def _json(items: list[TruthItem]) -> list[dict[str, object]]:
    """The items as truth.json holds them (what the digests were first taken of)."""
    return [i.to_dict() for i in items]


def _plan_digest(seed: int) -> str:
    """A digest of everything the four scenarios plant for ``seed`` (lines, events, files, truth)."""
    plan = Plan(ServerInfo(), datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 3, 4, tzinfo=UTC), seed)
    proxylogon(plan, T0)
    proxyshell(plan, T0 + timedelta(hours=3))
    proxynotshell(plan, T0 + timedelta(hours=5))
    lookalikes(plan)
    record = {
        "lines": [(p.file, p.time.isoformat(), p.text, _json(p.items)) for p in plan.lines],
        "events": [(p.file, dataclasses.asdict(p.spec), _json(p.items)) for p in plan.events],
        "files": [
            (p.path, hashlib.sha256(p.content).hexdigest(), p.time.isoformat(), _json(p.items))
            for p in plan.files
        ],
    }
    return hashlib.sha256(json.dumps(record, default=str, sort_keys=True).encode()).hexdigest()


# Digests of the plans written before the scenarios became tables (the long functions of
# triage_scenarios.py at commit bda37ac), so the tables are checked against what they replaced. A
# deliberate change to a scenario changes these: recompute them with _plan_digest and say why in
# the commit.
PLAN_DIGESTS = {
    3: "8d992491b186908dd1289cb1643609045f2eadd0f410564f51508afb468e9a1a",
    11: "81cb49351f00d7b46c7239dbc774c633dc24b54909e7da34e93b26119f0b97d4",
}


@pytest.mark.parametrize("seed", sorted(PLAN_DIGESTS))
def test_the_scenario_tables_plant_what_they_replaced(seed: int) -> None:
    assert _plan_digest(seed) == PLAN_DIGESTS[seed]
