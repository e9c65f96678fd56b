"""Run every benchmark under benchmarks/ in turn (``make bench``); each prints its own figures and ratios."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for part in sorted(p for p in HERE.iterdir() if (p / "run.py").is_file()):
        module = f"benchmarks.{part.name}.run"
        if importlib.util.find_spec(module) is None:
            continue
        print(f"== {module}", flush=True)
        rc = subprocess.call([sys.executable, "-m", module], cwd=HERE.parent)
        if rc != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
