"""The exception tree of exwatch; every error a user can meet is one of these.

    ExwatchError                 base; its message reaches the user as one line (exit 2 unless noted)
    ├── InputError               the user's input is wrong: a bad option, target line, file or rule
    │   ├── BuildError           a build string that is not an Exchange build
    │   └── ScopeError           a target outside what the user allowed (e.g. a range over /16 without --yes-large)
    ├── ConfigError              the environment or configuration is wrong (a missing extra, a bad URL)
    ├── StoreError               the store cannot be opened or written
    └── EvidenceError            an evidence file cannot be read (reported per file; exit 3 when nothing found)

Errors from third-party libraries are remapped to these where they enter the package, and chained
with ``raise ... from``, so the CLI never shows a traceback for a known failure.
"""

from __future__ import annotations


class ExwatchError(Exception):
    """Base of every error exwatch raises on purpose."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # One line, always: the CLI prints it as it is.
        return " ".join(self.message.split())


class InputError(ExwatchError):
    """The user's input (an argument, a file, a target, a rule) is wrong."""


class BuildError(InputError):
    """A build string that is not a valid Exchange build."""


class ScopeError(InputError):
    """A target the user has not allowed (too large, excluded, not an address)."""


class ConfigError(ExwatchError):
    """The configuration or environment is wrong: a missing extra, a bad store URL."""


class StoreError(ExwatchError):
    """The store cannot be opened, migrated or written."""


class EvidenceError(ExwatchError):
    """An evidence file cannot be read; it is reported and the run goes on."""

    exit_code = 3
