"""The type of a JSON value, for the ``to_dict`` edges of the typed read side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

# A JSON value (what ``json.dumps`` writes): read-only containers, so typed mappings fit in.
JSON: TypeAlias = Mapping[str, "JSON"] | Sequence["JSON"] | str | int | float | bool | None
JSONObject: TypeAlias = dict[str, JSON]
