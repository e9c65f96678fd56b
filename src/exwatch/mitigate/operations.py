"""The mitigate library entry points on files: check, apply and rollback a web.config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exwatch.errors import InputError
from exwatch.kb import verdict
from exwatch.mitigate.edit import plan_apply, plan_rollback
from exwatch.mitigate.files import DEFAULT_MAX_CONFIG_KB, child_configs, read_config, write_atomic
from exwatch.mitigate.rules import rules_for, waves_for
from exwatch.mitigate.webconfig import (
    Node,
    RuleStatus,
    child_override,
    evaluate,
    load,
    other_location_blocks,
    site_blocks,
)
from exwatch.mitigate.xmltext import decode_bytes, encode_text

# mitigations.md: mitigations never replace the security update, and a CU install removes the rules.
TEMPORARY_NOTE = (
    "The URL Rewrite rules are a temporary mitigation, not a fix: install the security update. "
    "Installing a CU rewrites the IIS configuration and removes the rules: check again after every CU."
)


@dataclass(frozen=True)
class BuildFix:
    """What the knowledge base says of one wave on the server's build: its state and the fixing update."""

    build: str
    state: str | None
    security_update: tuple[str, ...] = ()
    cumulative_update: str | None = None
    text: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON form (``fix`` of ``mitigate check`` and ``verify``)."""
        return {
            "build": self.build,
            "state": self.state,
            "security_update": list(self.security_update),
            "cumulative_update": self.cumulative_update,
            "text": self.text,
        }


def fix_for(build: str | None, wave: str) -> BuildFix | None:
    """The fixing update of ``wave`` for ``build`` from the knowledge base, or None without a build."""
    if not build:
        return None
    found = verdict(build)
    info = found.waves.get(wave)
    if info is None:
        return BuildFix(str(found.build), None)
    fix = info.fix
    return BuildFix(
        str(found.build),
        info.state.value,
        tuple(fix.security_update),
        fix.cumulative_update,
        fix.text or info.reason,
    )


@dataclass(frozen=True)
class Override:
    """A child web.config that undoes inherited rules: ``clear`` (all of them) or ``remove`` (``names``)."""

    file: str
    kind: str
    names: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "kind": self.kind, "names": list(self.names)}


@dataclass
class WaveCheck:
    """One wave's mitigation in a web.config: ``mitigated``, ``not_mitigated`` or ``unknown``."""

    wave: str
    state: str
    reason: str
    rules: list[RuleStatus]
    overrides: list[Override] = field(default_factory=list)
    fix: BuildFix | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "reason": self.reason,
            "rules": [r.to_dict() for r in self.rules],
            "overrides": [o.to_dict() for o in self.overrides],
            "fix": self.fix.to_dict() if self.fix else None,
        }


@dataclass
class CheckResult:
    """What ``check`` found in a web.config (and its child configs)."""

    path: str
    waves: dict[str, WaveCheck]
    warnings: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    build: str | None = None

    @property
    def not_mitigated(self) -> bool:
        """A wave without a working mitigation, on a server whose build is not known to be patched."""
        return any(
            w.state == "not_mitigated" and not (w.fix and w.fix.state == "patched")
            for w in self.waves.values()
        )

    @property
    def incomplete(self) -> bool:
        return any(w.state == "unknown" for w in self.waves.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "build": self.build,
            "waves": {k: v.to_dict() for k, v in self.waves.items()},
            "children": self.children,
            "warnings": self.warnings,
            "errors": self.errors,
            "note": TEMPORARY_NOTE,
        }


def _text_of(path: Path, max_kb: int = DEFAULT_MAX_CONFIG_KB) -> str:
    text, _ = decode_bytes(read_config(path, max_kb=max_kb), str(path))
    return text


# A child config of the Exchange tree: whether it clears the inherited rules, which names it removes.
_Child = tuple[Path, bool, set[str]]


def check(
    path: Path | str,
    wave: str = "all",
    *,
    exchange_path: Path | str | None = None,
    build: str | None = None,
    max_kb: int = DEFAULT_MAX_CONFIG_KB,
) -> CheckResult:
    """Validate the mitigation rules in ``path`` like HealthChecker, and child configs that undo them.

    It only reads, so it reads through links; a file over ``max_kb`` KB is refused (an InputError
    for ``path``, an unreadable child for a child config).
    """
    path = Path(path)
    root = load(_text_of(path, max_kb), str(path))
    result = CheckResult(path=str(path), waves={}, build=build)
    blocks = site_blocks(root)
    if len(blocks) > 1:
        result.warnings.append(f"{len(blocks)} rewrite <rules> sections for the site in one file")
    result.warnings.extend(_location_warnings(root))
    children = _read_children(Path(exchange_path), max_kb, result) if exchange_path is not None else []
    for wave_id in waves_for(wave):
        statuses = evaluate(root, rules_for(wave_id))
        overrides = _overrides(statuses, children)
        state, reason = _wave_state(statuses, overrides, unreadable=bool(result.errors))
        result.waves[wave_id] = WaveCheck(
            wave_id, state, reason, statuses, overrides, fix_for(build, wave_id)
        )
    return result


def _location_warnings(root: Node) -> list[str]:
    """Our rules inside a ``<location path=...>``: they cover only that path."""
    our_names = {r.name.lower() for r in rules_for("all")}
    warnings = []
    for block in other_location_blocks(root):
        names = [n.attrs.get("name", "") for n in block.node.elements("rule")]
        ours = [n for n in names if n.lower() in our_names]
        if ours:
            warnings.append(
                f'rule(s) {", ".join(map(repr, ours))} sit in <location path="{block.location}"> and cover only that path'
            )
    return warnings


def _read_children(exchange_path: Path, max_kb: int, result: CheckResult) -> list[_Child]:
    """Every child config under the Exchange tree (listed in ``result``; unreadable ones as errors)."""
    children: list[_Child] = []
    for child in child_configs(exchange_path):
        result.children.append(str(child))
        try:
            clears, removes = child_override(_text_of(child, max_kb), str(child))
        except InputError as exc:
            result.errors.append({"file": str(child), "error": str(exc)})
            continue
        children.append((child, clears, removes))
    return children


def _overrides(statuses: list[RuleStatus], children: list[_Child]) -> list[Override]:
    """The child configs that clear or remove this wave's valid rules."""
    overrides: list[Override] = []
    shown = {
        (s.found_as or s.rule.name).lower(): s.found_as or s.rule.name for s in statuses if s.status == "ok"
    }
    valid_names = set(shown)
    for child, clears, removes in children:
        if clears:
            overrides.append(Override(str(child), "clear", tuple(sorted(shown.values()))))
        hit = sorted(shown[n] for n in valid_names & removes)
        if hit:
            overrides.append(Override(str(child), "remove", tuple(hit)))
    return overrides


def _wave_state(
    statuses: list[RuleStatus], overrides: list[Override], *, unreadable: bool
) -> tuple[str, str]:
    """HealthChecker's verdict order: clearing child, no valid rule, parse failures, removing child."""
    bad = [s for s in statuses if s.status != "ok"]
    if not bad and any(o.kind == "clear" for o in overrides):
        return (
            "not_mitigated",
            "rules present, but a child configuration ignores them (<clear/>): Revert to Parent",
        )
    if bad:
        missing = [s.rule.name for s in bad if s.status == "missing"]
        invalid = [s.rule.name for s in bad if s.status == "invalid"]
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(missing))
        if invalid:
            parts.append("not valid: " + ", ".join(invalid))
        return "not_mitigated", "; ".join(parts)
    if unreadable:
        return "unknown", "rules present, but a child configuration could not be read"
    if overrides:
        return "not_mitigated", "rules present, but a child configuration removes inherited rules"
    return "mitigated", "every rule present and valid"


@dataclass
class ChangeResult:
    """What ``apply`` or ``rollback`` did to a file."""

    action: str
    path: str
    changed: bool
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    backup: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "path": self.path,
            "changed": self.changed,
            "added": self.added,
            "replaced": self.replaced,
            "removed": self.removed,
            "present": self.present,
            "backup": self.backup,
            "note": TEMPORARY_NOTE,
        }


def _change(
    path: Path | str, action: str, wave: str, force: bool, follow_symlinks: bool, max_kb: int
) -> ChangeResult:
    path = Path(path)
    label = str(path)
    original = read_config(path, max_kb=max_kb, follow_symlinks=follow_symlinks)
    text, encoded = decode_bytes(original, label)
    rules = rules_for(wave)
    if action == "apply":
        edit = plan_apply(text, rules, force=force, label=label)
    else:
        edit = plan_rollback(text, rules, label=label)
    result = ChangeResult(action, label, False, edit.added, edit.replaced, edit.removed, edit.present)
    new = encode_text(edit.text, encoded, label)
    if new != original:
        result.backup = str(write_atomic(path, new, original, follow_symlinks=follow_symlinks, max_kb=max_kb))
        result.changed = True
    return result


def apply(
    path: Path | str,
    wave: str = "all",
    *,
    force: bool = False,
    follow_symlinks: bool = False,
    max_kb: int = DEFAULT_MAX_CONFIG_KB,
) -> ChangeResult:
    """Add the rules of ``wave`` to the web.config at ``path`` (idempotent; backup kept next to it).

    A ``path`` that is a symbolic link is refused unless ``follow_symlinks``; a file over ``max_kb``
    KB is refused (IIS itself reads at most 250 KB by default).
    """
    return _change(path, "apply", wave, force, follow_symlinks, max_kb)


def rollback(
    path: Path | str,
    wave: str = "all",
    *,
    follow_symlinks: bool = False,
    max_kb: int = DEFAULT_MAX_CONFIG_KB,
) -> ChangeResult:
    """Remove the rules of ``wave`` from the web.config at ``path``, and only them (same refusals as apply)."""
    return _change(path, "rollback", wave, False, follow_symlinks, max_kb)
