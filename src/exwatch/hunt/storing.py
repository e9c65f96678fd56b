"""A hunt into the store: one function for ``exwatch hunt``, ``exwatch cluster hunt`` and the demo.

Through the public Store API only (``find_hosts``, ``add_hunt``, the fleet read API for the fix); the
findings and errors are serialised here, at the store edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from exwatch.hunt.model import HostResult, HuntResult, NextSteps, StoredHunt

if TYPE_CHECKING:
    from exwatch.fleet import Store


def record_hunt(
    store: Store,
    result: HuntResult,
    *,
    started_at: datetime | None = None,
    store_names: Mapping[str, str] | None = None,
) -> list[StoredHunt]:
    """Store each host's verdict, coverage, findings and errors; one ``StoredHunt`` per host, also set
    on the host (``HostResult.store``).

    A host is stored under its name, or under ``store_names[name]`` (an address or ``#id`` a scan knows
    it by). It is linked to the stored host its name matches; when it matches none or several, the
    ``StoredHunt`` says so in ``message``. ``--host #12`` (a name starting with ``#``) names the hunt
    after the stored host. A linked host takes its fix from the store's last scan of it. The build a
    collection package read (``HostResult.collection``) is stored first, as a ``collect`` run.
    """
    from exwatch.collect.hunthook import observation, store_builds

    builds = [rec for h in result.hosts if h.collection for rec in observation(h.collection)]
    store_builds(store, builds, started_at)
    stored = []
    for h in result.hosts:
        name = (store_names or {}).get(h.host, h.host)
        matches = store.find_hosts(name)
        if len(matches) == 1 and name.strip().startswith("#"):
            name = _relabel(result, h, store, matches[0])
        hunt_id = store.add_hunt(
            name,
            verdict=h.verdict,
            coverage=h.coverage.to_dict(),
            findings=[f.to_dict() for f in result.findings if f.host == h.host],
            started_at=started_at,
            errors=[e.to_dict() for e in h.errors],
        )
        h.store = StoredHunt(
            hunt_id, matches[0] if len(matches) == 1 else None, _link_message(hunt_id, name, matches)
        )
        stored.append(h.store)
        if h.store.host_id is not None:
            _fix_from_store(store, h, h.store.host_id)
    return stored


def _link_message(hunt_id: int, name: str, matches: list[int]) -> str | None:
    if not matches:
        return (
            f"hunt #{hunt_id} of {name!r} stored, but no scanned host in the store is named "
            f"{name!r}: it is linked to no host; hunt again with --host NAME (a name, address "
            "or #id from exwatch hosts) to link it"
        )
    if len(matches) > 1:
        return (
            f"hunt #{hunt_id} of {name!r} stored, but {name!r} matches {len(matches)} hosts in "
            "the store: it is linked to none; hunt again with --host #ID to link it"
        )
    return None


def _relabel(result: HuntResult, h: HostResult, store: Store, host_id: int) -> str:
    """``--host #12``: name the hunt (host and findings) after the stored host (its DNS name, else its address)."""
    from exwatch.fleet import queries

    ident = queries.host_history(store, f"#{host_id}")
    label = str(ident.name or ident.address or h.host)
    result.findings = [replace(f, host=label) if f.host == h.host else f for f in result.findings]
    h.host = label
    return label


def _fix_from_store(store: Store, h: HostResult, host_id: int) -> None:
    """The fix of a linked host from the store's last scan of it, when it knows the build (or the hunt
    had no fix at all)."""
    from exwatch.hunt.nextsteps import fix_from_store

    steps = h.next_steps or NextSteps()
    fix = fix_from_store(store, f"#{host_id}", steps.waves)
    if fix is not None and (fix.build or not steps.fix):
        h.next_steps = replace(steps, fix=fix)
