"""Model names: what the caller asked for -> what the pool is asked to serve.

In order:
1. the user's `[model_mapping]` (exact names and `*` globs, the most specific match wins); a
   target the catalogue marks deprecated is forwarded to its successor when that is served;
2. the name itself, when some account serves it;
3. a deprecated name (`deprecatedModelIds`), forwarded to its successor when that is served;
4. by family: the name's own family, then the families FAMILIES lists for names like it, each
   resolving to the newest served model of that family (the variants asked for first);
5. else the name as asked, and the caller hears that no account serves it.

Clients ask for names no catalogue ever had (Claude Code `claude-opus-4-8`, Codex `gpt-5-codex`)
and catalogues rename their models every few months, so nothing here names a target model:
step 4 reads the served ids (`models.identify`) and picks among them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .models import VARIANTS, Ident, identify, internal

# Client model name -> the families to try after the name's own, in order. The most specific
# glob wins. Families are the names' words without version and variants (`models.identify`).
FAMILIES: dict[str, tuple[str, ...]] = {
    "claude-*": ("claude-sonnet", "claude-opus", "gemini-pro", "gemini-flash"),
    "claude-opus-*": ("claude-opus", "claude-sonnet", "gemini-pro", "gemini-flash"),
    "claude-sonnet-*": ("claude-sonnet", "claude-opus", "gemini-pro", "gemini-flash"),
    "claude-haiku-*": ("claude-haiku", "claude-sonnet", "gemini-flash"),
    "gpt-*": ("gemini-pro", "claude-sonnet", "gemini-flash"),
    "gpt-5*": ("gemini-pro", "claude-sonnet", "gemini-flash"),
    "gpt-*mini*": ("gemini-flash", "gemini-flash-lite"),
    "gpt-*nano*": ("gemini-flash-lite", "gemini-flash"),
    "codex-*": ("gemini-pro", "claude-sonnet", "gemini-flash"),
    "o[1-9]*": ("gemini-pro", "claude-sonnet", "gemini-flash"),
    "o[1-9]*-mini*": ("gemini-flash", "gemini-flash-lite"),
    "gemini-*": ("gemini-pro", "gemini-flash"),
    "gemini-*pro*": ("gemini-pro", "gemini-flash"),
    "gemini-*flash*": ("gemini-flash", "gemini-pro"),
    "gemini-*flash-lite*": ("gemini-flash-lite", "gemini-flash"),
    "gemini-*-image*": ("gemini-flash-image", "gemini-pro-image"),
    "gpt-image-*": ("gemini-flash-image", "gemini-pro-image"),
    "dall-e-*": ("gpt-image", "gemini-flash-image", "gemini-pro-image"),
    "gemini-*embedding*": ("gemini-embedding", "text-embedding"),
    "text-embedding-*": ("gemini-embedding",),
}


class Offer(Protocol):
    """What the pool serves now, as routing sees it."""

    def served(self, name: str) -> bool:
        """Some enabled account serves this name (a key account through its globs too)."""
        ...

    def forward(self, name: str) -> str | None:
        """The successor a catalogue names for a deprecated model id."""
        ...

    def model_names(self) -> Mapping[str, str | None]:
        """The served model ids a family can resolve to, each with its display name if known."""
        ...


@dataclass(frozen=True, slots=True)
class Served:
    """An `Offer` from plain data: exactly `names` (plus what `also` accepts) are served."""

    names: Mapping[str, str | None] | Collection[str] = ()
    forwards: Mapping[str, str] = field(default_factory=dict)
    also: Callable[[str], bool] = lambda _: False

    def served(self, name: str) -> bool:
        return name in self.names or self.also(name)

    def forward(self, name: str) -> str | None:
        return self.forwards.get(name)

    def model_names(self) -> Mapping[str, str | None]:
        names = self.names
        return names if isinstance(names, Mapping) else dict.fromkeys(names)


NOTHING = Served()


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


def resolve(model: str, table: Mapping[str, str], offer: Offer = NOTHING) -> str:
    """The model to route for what the caller asked."""
    model = model.removeprefix("models/")  # Gemini callers may send the resource name
    if (mapped := lookup(model, table)) is not None:
        return mapped if offer.served(mapped) else forwarded(mapped, offer) or mapped
    if offer.served(model):
        return model
    return forwarded(model, offer) or by_family(model, offer) or model


def forwarded(model: str, offer: Offer) -> str | None:
    """The served successor of a deprecated id, following a chain of renames."""
    seen = {model}
    while (model := offer.forward(model)) is not None and model not in seen:  # type: ignore[assignment]
        if offer.served(model):
            return model
        seen.add(model)
    return None


def by_family(model: str, offer: Offer) -> str | None:
    """The newest served model of the first family (of the name's own, then FAMILIES') that the
    pool serves at all. A special family (images, embeddings) and a text one never stand in
    for each other."""
    wanted = identify(model)
    families: dict[str, list[tuple[Ident, str]]] = {}
    for name, display in sorted(offer.model_names().items()):
        if not internal(name):
            ident = identify(name, display)
            families.setdefault(ident.family, []).append((ident, name))
    patterns = [p for p in FAMILIES if fnmatch.fnmatchcase(model, p)]
    fallbacks = FAMILIES[max(patterns, key=_specificity)] if patterns else ()
    for family in (wanted.family, *fallbacks):
        members = families.get(family)
        if members and Ident(family).special == wanted.special:
            return max(members, key=lambda member: _preference(member[0], wanted.variants))[1]
    return None


def _preference(ident: Ident, wanted: frozenset[str]) -> tuple:
    """The variants asked for, then the newest version, then the better unasked variant (high
    before low), then the canonical id over an alias, then the plainer id."""
    unasked = ident.variants - wanted
    return (len(ident.variants & wanted), ident.version, sum(VARIANTS[v] for v in unasked), ident.canonical, -len(unasked))


def family_table() -> str:
    """FAMILIES as the Markdown table the README shows, so the two never disagree."""
    rows = ["| asked for | families tried after the name's own |", "|---|---|"]
    rows += [f"| `{pattern}` | {', '.join(families)} |" for pattern, families in FAMILIES.items()]
    return "\n".join(rows)
