"""Model names: what the caller asked for -> what the pool is asked to serve.

In order: the user's `[model_mapping]` (exact names and `*` globs, the most specific match
wins); the name itself when some account serves it; then a built-in table for the names that
well-known clients send (Claude Code asks for claude-*, Codex for gpt-*), whose targets are
tried in order until one is served; else the name as asked (and the caller hears that no
account serves it).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping

# Client model name -> targets in order of preference (the first one some account serves).
BUILTIN: dict[str, tuple[str, ...]] = {
    "claude-opus-*": ("claude-opus-4-5-thinking", "claude-opus-4-5", "gemini-3-pro-preview", "gemini-2.5-pro"),
    "claude-sonnet-*": ("claude-sonnet-4-5", "claude-sonnet-4-5-thinking", "gemini-2.5-pro", "gemini-2.5-flash"),
    "claude-haiku-*": ("claude-haiku-4-5", "gemini-2.5-flash", "gemini-2.5-flash-lite"),
    "claude-*": ("claude-sonnet-4-5", "gemini-2.5-pro", "gemini-2.5-flash"),
    "gpt-5*": ("gpt-5", "gemini-3-pro-preview", "gemini-2.5-pro", "claude-sonnet-4-5"),
    "gpt-4o-mini*": ("gpt-4o-mini", "gemini-2.5-flash-lite", "gemini-2.5-flash"),
    "gpt-*": ("gpt-4.1", "gemini-2.5-flash", "gemini-2.5-pro"),
    "o[1-9]*": ("gemini-2.5-pro", "gemini-3-pro-preview", "claude-sonnet-4-5"),
    "gemini-*-latest": ("gemini-2.5-flash", "gemini-2.5-pro"),
    "gemini-*": ("gemini-2.5-flash", "gemini-2.5-pro"),
}


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


def resolve(model: str, table: Mapping[str, str], served: Callable[[str], bool] = lambda _: False) -> str:
    """The model to route: `served(name)` says whether some enabled account serves a name."""
    model = model.removeprefix("models/")  # Gemini callers may send the resource name
    if (mapped := lookup(model, table)) is not None:
        return mapped
    if served(model):
        return model
    matches = [p for p in BUILTIN if fnmatch.fnmatchcase(model, p)]
    if matches:
        for target in BUILTIN[max(matches, key=_specificity)]:
            if served(target):
                return target
    return model
