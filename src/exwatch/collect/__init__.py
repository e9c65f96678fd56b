"""exwatch collect: get the evidence off Exchange servers, intact and provably so.

script.py     the PowerShell collector (``generate``), with the families of data/families.json embedded
manifest.py   the package format: ``exwatch-collection.json``, ``verify`` (every member's SHA-256)
reference.py  the same selection over a mounted image or a copied tree (``collect_tree``)
hunthook.py   what the hunter reads of a collection (coverage, builds)
winrm.py      collection over WinRM (the ``collect`` extra, pypsrp): imported on its own, not here
"""

from __future__ import annotations

from exwatch.collect.manifest import CollectionError, Manifest, is_collection, verify
from exwatch.collect.reference import collect_tree
from exwatch.collect.script import generate

__all__ = [
    "CollectionError",
    "Manifest",
    "collect_tree",
    "generate",
    "is_collection",
    "verify",
]
