"""The on-disk cache of compiled rules, so that a hunt does not parse its rules again at every start.

What is cached is plain data (JSON), never code: the rules' condition trees in the IR of
:mod:`exwatch.hunt.rules.sigma_engine`, from which predicates are compiled in a few milliseconds
without importing pySigma. An entry is keyed by a SHA-256 of everything it was built from (the rule
files' paths and bytes, the versions of exwatch and pySigma, the source of the code that builds it),
and holds a SHA-256 of its own payload: a stale entry is never found (another key), a damaged or
edited one is detected, ignored and rebuilt. Writing is atomic (temp file, then rename); a cache that
cannot be written (read-only home, full disk) only costs the time to build the rules again.

Location: ``$EXWATCH_HOME/cache`` when ``EXWATCH_HOME`` is set, else the user's cache directory
(``platformdirs.user_cache_dir("exwatch")``, e.g. ``~/.cache/exwatch`` on Linux).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMAT = 1
ENV_HOME = "EXWATCH_HOME"
# Set to "0" to neither read nor write the cache (benchmarks of a cold start).
ENV_CACHE = "EXWATCH_RULE_CACHE"


def cache_dir() -> Path:
    """Where compiled rules are kept (not created here)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home) / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("exwatch", appauthor=False))


def enabled() -> bool:
    return os.environ.get(ENV_CACHE, "1") != "0"


def make_key(kind: str, parts: Iterable[bytes | str]) -> str:
    """A SHA-256 over ``kind`` and every part (length-prefixed, so that parts cannot run together)."""
    h = hashlib.sha256(f"exwatch-rule-cache/{FORMAT}/{kind}".encode())
    for p in parts:
        b = p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


def _path(kind: str, key: str) -> Path:
    return cache_dir() / f"{kind}-{key[:32]}.json"


def load(kind: str, key: str) -> Any | None:
    """The cached payload under ``key``, or None when there is none or it is not intact."""
    if not enabled():
        return None
    try:
        raw = _path(kind, key).read_bytes()
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key:
            return None
        payload = doc.get("payload")
        if not isinstance(payload, str):
            return None
        if hashlib.sha256(payload.encode("utf-8")).hexdigest() != doc.get("sha256"):
            return None
        return json.loads(payload)
    except (OSError, ValueError, UnicodeError):
        return None


def store(kind: str, key: str, payload: Any) -> bool:
    """Write ``payload`` (JSON-able) under ``key``; False (and nothing left behind) when it cannot."""
    if not enabled():
        return False
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    doc = {
        "format": FORMAT,
        "key": key,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "payload": text,
    }
    target = _path(kind, key)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{kind}-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, separators=(",", ":"))
        os.replace(tmp, target)
        tmp = None
        return True
    except OSError:
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
