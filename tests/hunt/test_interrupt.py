"""Ctrl-C during a hunt (DESIGN: one line, what is kept, the exit code of what it had found): the
pool's workers are stopped and reaped, nothing is stored, and the process never hangs at exit.

A real pool and a real SIGINT: the hunt in a child process sends SIGINT to itself when its first
file is done (the parent only, as ``kill -INT PID`` or ``timeout`` do; before the fix, the workers
never got their stop sentinel and the process hung at exit), or to its whole process group (as a
terminal's Ctrl-C does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from exwatch.lab import triage

# The hunt's own progress hook (the per-file tick) is where the signal is raised: a fixed point
# mid-hunt, whatever the machine's speed.  Everything else is the real command.
CHILD = """
import os, signal, sys
import exwatch.hunt.engine as engine
from exwatch.cli.main import main

group = sys.argv.pop(1) == "group"
tick = engine._Run.tick
def interrupt_after_the_first_file(self, host, finished=False):
    if self.files_done == 1 and not getattr(self, "sent", False):
        self.sent = True
        if group:
            os.killpg(os.getpgrp(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)
    return tick(self, host, finished)
engine._Run.tick = interrupt_after_the_first_file
sys.argv[0] = "exwatch"
main()
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interrupt") / "EXCH01"
    triage.write_triage(root, seed=43, size=3_000_000, scenarios=("all",), host="EXCH01")
    return root


@pytest.mark.parametrize("who", ["parent", "group"])
def test_ctrl_c_stops_the_workers_stores_nothing_and_says_so(package: Path, tmp_path: Path, who: str) -> None:
    db = tmp_path / "store.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, who, "hunt", str(package), "--jobs", "2", "--db", f"sqlite:///{db}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the workers' fate can be checked after it exits
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the interrupted hunt did not exit in 60 s")
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("exwatch: interrupted; nothing stored ("), err
    assert "Traceback" not in err and out == ""
    done, total = lines[-1].split("(", 1)[1].split(" files", 1)[0].split(" of ")
    assert 1 <= int(done.replace(",", "")) < int(total.replace(",", ""))
    found = int(lines[-1].split("hunted, ", 1)[1].split(" ", 1)[0].replace(",", ""))
    assert proc.returncode == (1 if found else 3)
    with pytest.raises(ProcessLookupError):  # no worker of the pool is left behind
        os.killpg(proc.pid, 0)
    if db.exists():  # the store may have been created; it holds no hunt
        with create_engine(f"sqlite:///{db}").connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM hunts")).scalar() == 0


AFTER = """
import os, signal, sys
import exwatch.cli.hunt as cli_hunt
from exwatch.cli.main import main

output = cli_hunt._output
def interrupt_while_printing(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return output(*args, **kwargs)
cli_hunt._output = interrupt_while_printing
sys.argv[0] = "exwatch"
main()
"""


def test_ctrl_c_while_printing_keeps_the_exit_code_of_the_findings(package: Path, tmp_path: Path) -> None:
    """Ctrl-C after the hunt, while its result is stored or printed: one line, and 1 since the hunt
    found something (the root's generic line and 3 would say nothing was found)."""
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            AFTER,
            "hunt",
            str(package),
            "--jobs",
            "2",
            "--db",
            f"sqlite:///{tmp_path / 's.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.stderr.strip().splitlines()[-1] == (
        "exwatch: interrupted after the hunt, while storing or printing it: run it again"
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
