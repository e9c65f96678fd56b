"""The knowledge base in use: shipped data plus the user's imported Microsoft list, loaded once per process."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from exwatch import config
from exwatch.errors import ConfigError, InputError
from exwatch.kb._build import Build, parse_build
from exwatch.kb._catalogue import (
    Catalogue,
    CatalogueEntry,
    merge,
    parse_catalogue_csv,
    read_data_text,
    shipped_entries,
)
from exwatch.kb._mslist import ParsedList, parse_ms_list
from exwatch.kb._verdict import Engine, State
from exwatch.kb._waves import WaveData, shipped_waves

IMPORT_DIR = "kb"
IMPORT_FILE = "microsoft_build_numbers.csv"
IMPORT_META = "microsoft_build_numbers.json"
_COLUMNS = ("product", "cu", "build", "release_date", "kind", "su_name", "kb", "date_source")


def imported_path() -> Path:
    """Where ``exwatch kb update`` keeps the imported list (normalised) in the user's data directory."""
    return config.data_dir() / IMPORT_DIR / IMPORT_FILE


def imported_meta() -> dict[str, object] | None:
    """What was imported, when and from where (None if nothing was)."""
    meta = imported_path().with_name(IMPORT_META)
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def shipped_aliases() -> dict[Build, tuple[Build, str]]:
    """Build numbers that stand for a published build (package data ``aliases.csv``)."""
    out: dict[Build, tuple[Build, str]] = {}
    for row in csv.DictReader(io.StringIO(read_data_text("aliases.csv"))):
        out[parse_build(row["build"])] = (parse_build(row["same_as"]), row["reason"])
    return out


def _fixes_of(engine: Engine, entries: tuple[CatalogueEntry, ...]) -> dict[Build, tuple[str, ...]]:
    fixes = {}
    for e in entries:
        v = engine.verdict(e.build)
        fixes[e.build] = tuple(
            c.cve for w in v.waves.values() for c in w.cve_verdicts if c.state is State.PATCHED
        )
    return fixes


@dataclass(frozen=True)
class KnowledgeBase:
    """A catalogue (with computed ``fixes``), the waves, and the verdict engine over them."""

    catalogue: Catalogue
    waves: WaveData
    engine: Engine
    imported: int  # rows taken from the user's imported list
    _as_of: dict[date, Engine] = field(default_factory=dict, compare=False, repr=False)

    def engine_as_of(self, day: date | None) -> Engine:
        """The verdict engine with the knowledge of ``day``: only the builds released by then (None: today).

        A build patched by an update released after ``day`` is judged without that update, and the fix
        named is the one available that day. Engines are kept per day.
        """
        if day is None:
            return self.engine
        engine = self._as_of.get(day)
        if engine is None:
            with _lock:
                engine = self._as_of.get(day)
                if engine is None:
                    released = Catalogue([e for e in self.catalogue.entries if e.release_date <= day])
                    engine = Engine(released, self.waves, self.engine.aliases, as_of=day)
                    self._as_of[day] = engine
        return engine


def build_kb(imported: list[CatalogueEntry] | None = None) -> KnowledgeBase:
    """Assemble a knowledge base from the shipped data and optional imported rows."""
    waves = shipped_waves()
    aliases = shipped_aliases()
    raw = Catalogue(merge(shipped_entries(), imported or []))
    first = Engine(raw, waves, aliases)
    catalogue = raw.with_fixes(_fixes_of(first, raw.entries))
    return KnowledgeBase(catalogue, waves, Engine(catalogue, waves, aliases), len(imported or []))


def load_imported() -> list[CatalogueEntry]:
    """The rows of the user's imported list, or [] if none was imported."""
    path = imported_path()
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the imported build list {path}: {exc}") from exc
    return parse_catalogue_csv(text, source="imported", origin=str(path))


_lock = threading.Lock()
_current: KnowledgeBase | None = None


def current() -> KnowledgeBase:
    """The knowledge base of this process (loaded on first use)."""
    global _current
    kb = _current
    if kb is None:
        with _lock:
            if _current is None:
                _current = build_kb(load_imported())
            kb = _current
    return kb


def reload() -> KnowledgeBase:
    """Forget the loaded knowledge base (e.g. after ``kb update`` or a change of data directory)."""
    global _current
    with _lock:
        _current = None
    return current()


# -- kb update ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateResult:
    """What an import changed: new builds, changed builds, and the rows refused."""

    path: Path
    rows: int
    imported: int
    added: tuple[CatalogueEntry, ...]  # builds the catalogue did not know before
    new_since_previous: (
        tuple[CatalogueEntry, ...] | None
    )  # builds the previous import lacked (None: first import)
    changed: tuple[tuple[CatalogueEntry, CatalogueEntry], ...]  # (before, after) with different data
    skipped: tuple[str, ...]  # "line N: why"
    newest: CatalogueEntry | None
    older_than_shipped: bool
    written: bool = True  # False for a dry run

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "path": str(self.path),
            "rows": self.rows,
            "imported": self.imported,
            "added": [e.to_dict() for e in self.added],
            "new_since_previous_import": (
                None if self.new_since_previous is None else [e.to_dict() for e in self.new_since_previous]
            ),
            "changed": [
                {"build": str(a.build), "before": a.to_dict(), "after": b.to_dict()} for a, b in self.changed
            ],
            "skipped": list(self.skipped),
            "newest": self.newest.to_dict() if self.newest else None,
            "older_than_shipped": self.older_than_shipped,
            "written": self.written,
        }


def _same(a: CatalogueEntry, b: CatalogueEntry) -> bool:
    return (a.product, a.cu, a.kind, a.su_name, a.release_date, a.kb) == (
        b.product,
        b.cu,
        b.kind,
        b.su_name,
        b.release_date,
        b.kb,
    )


def read_ms_list(path: Path) -> ParsedList:
    """Read and validate a Microsoft build list file; InputError if it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not a text CSV file") from exc
    if "\x00" in text:
        raise InputError(f"{path}: not a text CSV file (binary content)")
    try:
        return parse_ms_list(text)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc


def import_ms_list(path: Path, *, skip_bad: bool = False, dry_run: bool = False) -> UpdateResult:
    """Validate Microsoft's list and make it the user's imported copy; the shipped data is not touched.

    Refuses (InputError, nothing written) a file that is not that CSV, or one with bad rows unless
    ``skip_bad`` (then the good rows are imported and the bad ones reported). ``dry_run``: report what
    would change and write nothing.
    """
    parsed = read_ms_list(path)
    if parsed.errors and not skip_bad:
        shown = "; ".join(parsed.errors[:5])
        more = f" (and {len(parsed.errors) - 5} more)" if len(parsed.errors) > 5 else ""
        raise InputError(
            f"{path}: {len(parsed.errors)} bad row(s), nothing imported: {shown}{more}; "
            "fix them or pass --skip-bad"
        )
    if not parsed.entries:
        raise InputError(f"{path}: no valid rows, nothing imported")
    before = current().catalogue
    try:
        previous: set[Build] | None = (
            {e.build for e in load_imported()} if imported_path().is_file() else None
        )
    except ConfigError:
        previous = None  # a damaged earlier import is simply replaced
    added = tuple(e for e in parsed.entries if e.build not in before.by_build)
    changed = tuple(
        (before.by_build[e.build], e)
        for e in parsed.entries
        if e.build in before.by_build and not _same(before.by_build[e.build], e)
    )
    newest = max(parsed.entries, key=lambda e: (e.release_date, e.build.sort_key))
    shipped_latest = max(e.release_date for e in shipped_entries())
    target = imported_path()
    if not dry_run:
        _write_import(target, path, parsed, newest)
        reload()
    return UpdateResult(
        path=target,
        rows=parsed.rows,
        imported=len(parsed.entries),
        added=tuple(sorted(added, key=lambda e: e.build.sort_key)),
        new_since_previous=(
            None
            if previous is None
            else tuple(
                sorted((e for e in parsed.entries if e.build not in previous), key=lambda e: e.build.sort_key)
            )
        ),
        changed=changed,
        skipped=tuple(parsed.errors),
        newest=newest,
        older_than_shipped=newest.release_date < shipped_latest,
        written=not dry_run,
    )


def _write_import(target: Path, path: Path, parsed: ParsedList, newest: CatalogueEntry) -> None:
    """Write the normalised rows and their provenance atomically (a reader never sees half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for e in sorted(parsed.entries, key=lambda e: e.build.sort_key):
        writer.writerow(
            [
                e.product,
                e.cu,
                str(e.build),
                e.release_date.isoformat(),
                e.kind,
                e.su_name,
                e.kb,
                e.date_source,
            ]
        )
    tmp = target.with_suffix(".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, target)
    meta = {
        "source": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": parsed.rows,
        "imported": len(parsed.entries),
        "skipped": parsed.errors,
        "newest_date": newest.release_date.isoformat(),
    }
    meta_tmp = target.with_name(IMPORT_META + ".tmp")
    meta_tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    os.replace(meta_tmp, target.with_name(IMPORT_META))
