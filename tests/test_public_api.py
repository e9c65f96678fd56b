"""Each package's public API is pinned (as httpx pins ``httpx.__all__``): nothing leaks in or out unseen.

``PUBLIC`` holds one expected ``__all__`` per package; a change to a package's public names must change
this file too. The CLI modules and the demo import those packages only through these names, and no
module imports another package's private ``_modules``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "exwatch"

PUBLIC: dict[str, tuple[str, ...]] = {
    "exwatch.kb": (
        "Build",
        "CatalogueEntry",
        "Cve",
        "CveVerdict",
        "Fix",
        "KnowledgeBase",
        "PRODUCTS",
        "State",
        "UpdateResult",
        "Verdict",
        "WAVES",
        "WAVE_IDS",
        "Wave",
        "WaveVerdict",
        "builds_for_cu",
        "catalogue",
        "cu_name",
        "current",
        "cve",
        "import_ms_list",
        "imported_meta",
        "imported_path",
        "parse_build",
        "product_of",
        "reload",
        "verdict",
        "wave",
    ),
    "exwatch.mitigate": (
        "BuildFix",
        "ChangeResult",
        "CheckResult",
        "DEFAULT_MAX_CONFIG_KB",
        "MITIGATED_WAVES",
        "Override",
        "RewriteRule",
        "TEMPORARY_NOTE",
        "TargetResult",
        "VerifyResult",
        "WaveCheck",
        "WaveProbe",
        "all_rules",
        "apply",
        "check",
        "fix_for",
        "powershell",
        "rollback",
        "rules_for",
        "verify",
        "waves_for",
    ),
    "exwatch.collect": (
        "CollectionError",
        "Manifest",
        "collect_tree",
        "generate",
        "is_collection",
        "verify",
    ),
    "exwatch.watch": (
        "Alert",
        "AlertLog",
        "Delivery",
        "KINDS",
        "NewFinding",
        "RoundResult",
        "WatchConfig",
        "Watcher",
        "list_alerts",
        "parse_duration",
        "watch_name",
    ),
    "exwatch.importers": (
        "ImportResult",
        "import_file",
    ),
    "exwatch.lab": (
        "DEFAULT_EXCHANGE_VARIANTS",
        "DEFAULT_OTHER_SHARE",
        "DEFAULT_OTHER_VARIANTS",
        "EXCHANGE_VARIANTS",
        "HOSTILE_VARIANTS",
        "LabFleet",
        "OTHER_VARIANTS",
        "SCENARIOS",
        "ServerSpec",
        "VARIANTS",
        "WAVES",
        "draw_fleet",
        "load_specs",
        "mitigation_web_config",
        "raise_nofile_limit",
        "run_fleet_in_thread",
        "truth",
        "truth_passive",
        "write_triage",
    ),
    "exwatch.fleet": (
        "Change",
        "Compromise",
        "CurrentVerdict",
        "DEFAULT_MAX_AGE",
        "DoublingFit",
        "ExposureWindow",
        "FindingRow",
        "HostHistory",
        "HostRow",
        "HostSnapshot",
        "HostState",
        "HuntSummary",
        "Listing",
        "PROFILES",
        "Picture",
        "STATES",
        "Service",
        "Snapshot",
        "Store",
        "WaveCounts",
        "WaveVerdict",
        "breakdown",
        "check_store",
        "check_tag",
        "compromise",
        "count_in_state",
        "damaged",
        "delete_scan",
        "exposure_windows",
        "findings",
        "fleet_series",
        "host_exists",
        "host_history",
        "host_verdicts",
        "hosts_at_risk",
        "hosts_in_state",
        "latest_scan",
        "list_changes",
        "list_hosts",
        "list_scans",
        "merge",
        "open_existing_store",
        "open_store",
        "parse_tag",
        "picture_time",
        "require_store",
        "resolve_host",
        "retire",
        "show_scan",
        "snapshots",
        "split",
        "tag_keys",
        "tag_values",
        "undo",
    ),
    "exwatch.report": (
        "Attempts",
        "Report",
        "ReportOptions",
        "WeekChange",
        "build_report",
        "bundle_json",
        "findings_bundle",
        "headline",
        "render_html",
        "render_markdown",
        "render_table",
    ),
    "exwatch.web": (
        "AuthSettings",
        "AuthStore",
        "EXTRA_HINT",
        "check_password",
        "check_user_name",
        "create_app",
        "require_web_extra",
    ),
    "exwatch.cluster": (
        "ClusterScanResult",
        "cluster_hunt",
        "cluster_scan",
        "find_packages",
        "open_client",
        "require_distributed",
    ),
}

# Modules that may use only the public names above (paths under src/exwatch), and the submodules they
# may still import directly: ``collect.winrm`` needs the optional ``collect`` extra, so the package
# does not import it.
CLIENTS = (
    "demo.py",
    "cli/kb.py",
    "cli/lab.py",
    "cli/lab_serve.py",
    "cli/lab_triage.py",
    "cli/mitigate.py",
    "cli/serve.py",
    "cli/demo.py",
    "cli/collect.py",
    "cli/watch.py",
    "cli/imports.py",
    "cli/main.py",
    "cli/common.py",
    "cli/report.py",
    "cli/hosts.py",
    "cli/scans.py",
    "cli/readstore.py",
)
OPTIONAL_SUBMODULES = frozenset({"exwatch.collect.winrm"})


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_all_is_pinned_and_sorted(package: str) -> None:
    module = importlib.import_module(package)
    assert tuple(module.__all__) == PUBLIC[package]
    assert list(module.__all__) == sorted(module.__all__)


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_every_public_name_exists(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not define: {missing}"


def _imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """(module, names, line) of every ``from X import names`` and ``import X`` in a file."""
    found: list[tuple[str, tuple[str, ...], int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, tuple(a.name for a in node.names), node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((a.name, (), node.lineno) for a in node.names)
    return found


def _owner(module: str) -> str | None:
    """The pinned package a module belongs to (``exwatch.lab.triage`` -> ``exwatch.lab``)."""
    return next((p for p in PUBLIC if module == p or module.startswith(p + ".")), None)


def public_name_violations(path: Path) -> list[str]:
    bad = []
    for module, names, line in _imports(path):
        package = _owner(module)
        if package is None and module.startswith("exwatch.") and module.count(".") == 1:
            # ``from exwatch import kb``: the package itself, used through its public names.
            continue
        if package is None or module in OPTIONAL_SUBMODULES:
            continue
        if module != package:
            bad.append(f"line {line}: imports {module} (use {package}'s public names)")
            continue
        bad.extend(
            f"line {line}: {package}.{n} is not public"
            for n in names
            if n not in PUBLIC[package] and f"{package}.{n}" not in OPTIONAL_SUBMODULES
        )
    return bad


@pytest.mark.parametrize("client", CLIENTS)
def test_cli_and_demo_use_only_public_names(client: str) -> None:
    bad = public_name_violations(SRC / client)
    assert not bad, f"{client}:\n" + "\n".join(bad)


def test_no_private_module_imported_from_outside_its_package() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        here = ".".join(("exwatch", *path.relative_to(SRC).with_suffix("").parts))
        for module, _, line in _imports(path):
            parts = module.split(".")
            private = next((i for i, p in enumerate(parts) if p.startswith("_") and i > 0), None)
            if private is None or module == "exwatch._version":
                continue
            owner = ".".join(parts[:private])
            if not (here == owner or here.startswith(owner + ".")):
                bad.append(f"{path.relative_to(SRC)}:{line}: imports {module}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    src = "from exwatch.lab.triage import write_triage\nfrom exwatch.kb import verdict, _WAVE_DATA\n"
    (tmp_path / "m.py").write_text(src)
    bad = public_name_violations(tmp_path / "m.py")
    assert bad == [
        "line 1: imports exwatch.lab.triage (use exwatch.lab's public names)",
        "line 2: exwatch.kb._WAVE_DATA is not public",
    ]
