"""Regenerate the shipped catalogue data from a reference folder: ``python -m exwatch.kb.regenerate DIR``.

Checks the columns and every build of ``exchange_builds_extended.csv`` and ``exchange_su_cves.csv``,
then copies them unchanged to ``builds.csv`` and ``su_cves.csv`` beside this module (or ``--out``).
A developer step: at run time only the copies are read.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from exwatch.errors import ExwatchError, InputError
from exwatch.kb._build import parse_build
from exwatch.kb._catalogue import SHIPPED_COLUMNS, parse_catalogue_csv

FILES = {"exchange_builds_extended.csv": "builds.csv", "exchange_su_cves.csv": "su_cves.csv"}
SU_COLUMNS = ("su_name", "cve", "applies_to", "source")


def check(reference: Path) -> dict[str, bytes]:
    """Read and validate the two reference CSVs; their bytes by target name."""
    out = {}
    for source, target in FILES.items():
        path = reference / source
        try:
            raw = path.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from exc
        header = next(csv.reader(io.StringIO(text)), [])
        expected = SHIPPED_COLUMNS if target == "builds.csv" else SU_COLUMNS
        if tuple(header) != expected:
            raise InputError(f"{path}: columns {header} differ from {list(expected)}")
        if target == "builds.csv":
            entries = parse_catalogue_csv(text, source="shipped", origin=str(path))
            if len({e.build for e in entries}) != len(entries):
                raise InputError(f"{path}: a build appears twice")
        else:
            for row in csv.DictReader(io.StringIO(text)):
                if not row["cve"].startswith(("CVE-", "ADV")):  # advisories such as ADV190018 too
                    raise InputError(f"{path}: bad CVE id {row['cve']!r}")
        out[target] = raw
    return out


def regenerate(reference: Path, out_dir: Path) -> list[Path]:
    """Validate then copy; returns the files written."""
    texts = check(reference)
    written = []
    for target, raw in texts.items():
        path = out_dir / target
        path.write_bytes(raw)
        written.append(path)
    parse_build("15.1.2176.9")  # the parser the data relies on is importable
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="folder holding exchange_builds_extended.csv")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data", help="target folder")
    args = parser.parse_args(argv)
    try:
        for path in regenerate(args.reference, args.out):
            print(f"wrote {path}")
    except ExwatchError as exc:
        print(f"regenerate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
