"""Machine formats only on stdout: the hunt run as a process with stderr a pseudo-terminal (colour and
progress allowed there) and stdout a file, for json and jsonl, with -v progress."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exwatch.lab import triage


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pty") / "EXCH01"
    triage.write_triage(root, seed=41, size=200_000, scenarios=("proxylogon",))
    return root


def _run_with_pty_stderr(args: list[str], out_file: Path, home: Path) -> tuple[int, str]:
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "EXWATCH_DB"}
    env["EXWATCH_HOME"] = str(home)
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    with out_file.open("wb") as fh:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fh, stderr=slave, env=env)
        os.close(slave)
        got = b""
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the other side is closed
                    chunk = b""
                if not chunk:
                    break
                got += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(120)
    os.close(master)
    return code, got.decode("utf-8", "replace")


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@pytest.mark.parametrize("verbose", [["-v", "hunt"], ["hunt", "-v"]], ids=["root-v", "hunt-v"])
def test_machine_output_on_stdout_with_a_terminal(
    package: Path, tmp_path: Path, fmt: str, verbose: list[str]
) -> None:
    out = tmp_path / f"out.{fmt}"
    code, stderr = _run_with_pty_stderr(
        [
            sys.executable,
            "-m",
            "exwatch",
            *verbose,
            str(package),
            "--format",
            fmt,
            "--no-store",
            "--jobs",
            "1",
        ],
        out,
        tmp_path / "home",
    )
    assert code == 1, stderr
    text = out.read_text(encoding="utf-8")
    assert "\x1b[" not in text, "terminal escape codes in machine output"
    docs: list[Any]
    if fmt == "json":
        docs = [json.loads(text)]
        assert docs[0]["hosts"][0]["verdict"] == "compromised"
    else:
        docs = [json.loads(line) for line in text.splitlines()]
        kinds = {d["type"] for d in docs}
        assert {"host", "finding"} <= kinds
    # progress went to the terminal on stderr: files done/total and a rate
    progress = [line for line in stderr.splitlines() if line.startswith("hunt: EXCH01")]
    assert progress, stderr
    done, total = map(int, re.search(r"(\d+)/(\d+) files", progress[-1]).groups())  # type: ignore[union-attr]
    logs = sum(1 for p in package.rglob("*") if p.is_file() and p.suffix.upper() in (".LOG", ".XML"))
    assert done == total and total >= logs
    assert all(re.search(r"[\d.]+ MB/s", line) for line in progress)
