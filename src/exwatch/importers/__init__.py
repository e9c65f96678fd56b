"""Offline import of internet-scan exports (Shodan, Censys) as observations in the store.

base.py      the shared part: one HTTP answer -> fingerprint -> kb verdict -> observation record;
             grouping per observation day, one stored scan per day, malformed lines counted
shodan.py    ``shodan download`` JSON lines (banners)
censys.py    Censys search exports (a JSON array or JSON lines of host records)
"""

from __future__ import annotations

from exwatch.importers.base import ImportResult, import_file

__all__ = [
    "ImportResult",
    "import_file",
]
