"""Model names: what the caller asked for -> what the pool is asked to serve.

`[model_mapping]` entries are exact names or `*` globs; the most specific match wins (an exact
name, then the glob with the most literal characters).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping


def _specificity(pattern: str) -> tuple[int, int]:
    literal = sum(1 for ch in pattern if ch not in "*?[]")
    return (0 if any(ch in pattern for ch in "*?[") else 1, literal)


def lookup(model: str, table: Mapping[str, str]) -> str | None:
    """The target for `model` in `table`, or None when nothing matches."""
    if model in table:
        return table[model]
    matches = [p for p in table if fnmatch.fnmatchcase(model, p)]
    if not matches:
        return None
    return table[max(matches, key=_specificity)]


def resolve(model: str, table: Mapping[str, str]) -> str:
    # Callers sometimes send Gemini names with their resource prefix.
    model = model.removeprefix("models/")
    return lookup(model, table) or model
