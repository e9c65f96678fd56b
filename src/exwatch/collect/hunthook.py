"""What ``exwatch hunt`` does with a collection package: verify it first, take the host name and the
coverage from its manifest, restore file times, hunt listed archives and dumps by their path, and store the
installed build as an observation of the host (source ``collector``).

The hunt calls these few functions; everything collection-specific stays here.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from exwatch.collect.families import MANIFEST_NAME
from exwatch.collect.manifest import (
    CollectionError,
    Manifest,
    is_collection,
    parse_time,
    read_manifest,
    verify,
)

BUILD_SOURCE = "collector"


class ManifestCoverage(TypedDict):
    """What a collection says about itself (``coverage``): when (ISO 8601, ``Z``), how many files and
    bytes, the files it left out per reason, the listed files not copied, the build it read."""

    collected_at: str
    files: int
    bytes: int
    skipped: dict[str, int]
    listed_not_copied: int
    build: str | None


@dataclass(frozen=True)
class CollectedBuild:
    """The build the collector read on a server, stored as an observation of that host (source
    ``collector``); ``cu_only`` when it came from the registry, which gives the CU level only."""

    host: str
    build: str
    cu_only: bool
    time: datetime

    def to_record(self) -> dict[str, object]:
        """The observation record the store takes (the scanner's record shape)."""
        return {
            "key": f"collector:{self.host.lower()}",
            "target": self.host,
            "name": self.host,
            "fe_server": self.host.split(".", 1)[0],
            "status": "exchange",
            "build": self.build,
            "build_source": BUILD_SOURCE,
            "cu_only": self.cu_only,
            "time": self.time.astimezone(UTC).isoformat(),
        }


def open_for_hunt(path: Path, *, check: bool = True) -> Manifest | None:
    """The manifest of a collection package at ``path`` (verified unless ``check`` is False), or None when
    ``path`` is not a collection. A tampered package raises CollectionError (exit 2)."""
    if not is_collection(path):
        return None
    if check:
        return verify(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return read_manifest(zf)
    except (CollectionError, zipfile.BadZipFile, OSError):
        return None  # --no-verify: hunt it as a plain archive


def adjust_files(files: list[Any], manifest: Manifest, tmp_root: str) -> list[Any]:
    """The evidence files of a collection: the manifest itself left out, each file's time the one the
    manifest recorded (a zip keeps local times to two seconds), and each listed archive or dump that was not
    copied added as path-only evidence (an empty stand-in: its path, size and time are hunted, not its bytes)."""
    from dataclasses import replace

    from exwatch.hunt.sources.files import EvidenceFile

    times = manifest.mtime_of()
    out = []
    present = set()
    for ev in files:
        if ev.rel == MANIFEST_NAME:
            continue
        present.add(ev.rel)
        if ev.rel in times:
            ev = replace(ev, mtime=times[ev.rel])
        out.append(ev)
    stand_in: Path | None = None
    for item in manifest.listing:
        if item.path in present:
            continue
        if stand_in is None:
            stand_in = Path(tmp_root) / "listed-not-copied"
            stand_in.write_bytes(b"")
        out.append(
            EvidenceFile(str(stand_in), item.path, "file", item.size, parse_time(item.mtime).timestamp())
        )
    return out


def coverage(manifest: Manifest) -> ManifestCoverage:
    """What the collection says about itself: when, how much, and what it left out (by reason)."""
    reasons: dict[str, int] = {}
    for s in manifest.skipped:
        key = s["reason"].split(":", 1)[0]
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "collected_at": manifest.collected_at.isoformat().replace("+00:00", "Z"),
        "files": len(manifest.files),
        "bytes": sum(f.size for f in manifest.files),
        "skipped": reasons,
        "listed_not_copied": sum(1 for i in manifest.listing if not i.copied),
        "build": manifest.build,
    }


def warnings(manifest: Manifest) -> list[str]:
    """A coverage warning for evidence the collection left out."""
    out = []
    by_reason: dict[str, int] = {}
    for s in manifest.skipped:
        reason = s["reason"].split(":", 1)[0]
        if reason in ("folder not found", "channel absent"):
            continue
        by_reason[reason] = by_reason.get(reason, 0) + 1
    for reason, n in sorted(by_reason.items()):
        out.append(f"the collection left out {n} file(s) ({reason}): see skipped in {MANIFEST_NAME}")
    return out


def observation(manifest: Manifest) -> list[CollectedBuild]:
    """The build the collector read on the server, as an observation of that host (none without a build)."""
    if not manifest.build:
        return []
    exchange = manifest.raw.get("exchange") or {}
    # The registry's Msi* values give the CU level only (builds.md); ExSetup.exe's version is exact.
    cu_only = isinstance(exchange, dict) and exchange.get("build_from") == "registry"
    return [CollectedBuild(manifest.host, manifest.build, cu_only, manifest.collected_at)]


def store_builds(store: Any, builds: list[CollectedBuild], started_at: datetime | None = None) -> int | None:
    """Store the builds collected (``observation``) as one run of kind ``collect`` through the public
    Store API; its id, or None when there is none."""
    if not builds:
        return None
    scan_id = int(
        store.start_scan(
            {"command": "hunt", "source": BUILD_SOURCE, "hosts": [b.host for b in builds]},
            started_at=started_at,
            kind="collect",
        )
    )
    store.add_observations(scan_id, [b.to_record() for b in builds])
    store.finish_scan(scan_id)
    return scan_id
