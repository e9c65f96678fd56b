"""exwatch: scan, hunt, mitigate and track Exchange Server vulnerability waves."""

from exwatch._version import __version__
from exwatch.errors import (
    BuildError,
    ConfigError,
    EvidenceError,
    ExwatchError,
    InputError,
    ScopeError,
    StoreError,
)

__all__ = [
    "BuildError",
    "ConfigError",
    "EvidenceError",
    "ExwatchError",
    "InputError",
    "ScopeError",
    "StoreError",
    "__version__",
]
