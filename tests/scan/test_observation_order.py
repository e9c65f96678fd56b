"""The exposed-hosts order: worst first, the oldest wave weighing most."""

from __future__ import annotations

from exwatch.scan.observation import worst_state


def _rec(key: str, **states: str) -> dict[str, object]:
    return {"key": key, "waves": {w: {"state": s} for w, s in states.items()}}


def test_worst_first() -> None:
    recs = [
        _rec("a", proxylogon="patched", proxyshell="vulnerable", proxynotshell="vulnerable"),
        _rec("b", proxylogon="vulnerable", proxyshell="vulnerable", proxynotshell="vulnerable"),
        _rec("c", proxylogon="patched", proxyshell="patched", proxynotshell="patched"),
        _rec("d", proxylogon="mitigated", proxyshell="vulnerable", proxynotshell="vulnerable"),
        _rec("e", proxylogon="unknown", proxyshell="unknown", proxynotshell="unknown"),
        {"key": "f", "waves": {}},
    ]
    order = [r["key"] for r in sorted(recs, key=lambda r: (worst_state(r), r["key"]))]
    assert order == ["b", "d", "a", "e", "c", "f"]
