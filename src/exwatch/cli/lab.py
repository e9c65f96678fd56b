"""``exwatch lab``: the emulator fleet and the triage-data generator."""

from __future__ import annotations

from exwatch.cli.main import LazyGroup

LAB_COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("exwatch.cli.lab_serve", "serve"),
    "triage": ("exwatch.cli.lab_triage", "triage"),
}


class _LabGroup(LazyGroup):
    commands_map = LAB_COMMANDS


@_LabGroup.group_command()
def lab() -> None:
    """A lab of emulated Exchange servers and triage packages, for tests, training and demos."""
