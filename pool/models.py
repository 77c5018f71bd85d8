"""Google's model catalogue, and what a model's name says about it.

fetchAvailableModels is the only truth about what an account serves: models come, go and get
renamed (`deprecatedModelIds` forwards the old names), so nothing here lists models. Instead a
model id is read as family, version and variants — `claude-opus-4-6-thinking` is claude-opus 4.6
thinking, `gemini-3.1-pro-high` gemini-pro 3.1 high — so that a name no catalogue ever had
(`claude-opus-4-8`) can find the newest model of its family that the pool does serve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from .state import Quota

# The IDE's own chat and tab-completion models: listed by the service, never for callers.
INTERNAL_PREFIXES = ("chat_", "tab_")

# Words of a name that pick a flavour of one model rather than another model, and how much an
# unrequested one is worth when the caller named none (the better default first; a plain model
# scores 0).
VARIANTS: dict[str, int] = {"high": 1, "thinking": 0, "medium": -1, "low": -2, "minimal": -3}
# Release stages: they say when, not what.
STAGES = frozenset({"preview", "latest", "exp", "experimental", "stable"})
# Words that make a family do something else than text chat: such a family and a text family
# never stand in for each other.
SPECIAL_WORDS = frozenset({"image", "imagen", "dall", "embedding", "tts", "audio", "live", "veo", "search", "computer"})

_VERSION = re.compile(r"\d{1,2}(?:\.\d+)*")
_SIZE = re.compile(r"\d+(?:\.\d+)?[bkm]")  # gpt-oss-120b, gemma-3-27b: a size of the same family
_SPLIT = re.compile(r"[\s\-_()]+")


ModelKind = Literal["text", "image", "embedding"]
# Words of a model id that say it makes something other than text, and what.
KIND_WORDS: dict[str, ModelKind] = {"image": "image", "imagen": "image", "dall": "image", "embedding": "embedding"}


def internal(name: str) -> bool:
    return name.startswith(INTERNAL_PREFIXES)


@lru_cache(maxsize=4096)
def kind(model_id: str) -> ModelKind:
    """What a model makes, read from its id: images (gemini-3.1-flash-image, gpt-image-1,
    dall-e-3, imagen-4), embeddings (gemini-embedding-001, text-embedding-3-small) or text."""
    for word in _SPLIT.split(model_id.removeprefix("models/").lower()):
        if (found := KIND_WORDS.get(word)) is not None:
            return found
    return "text"


@dataclass(frozen=True, slots=True)
class Ident:
    """What a model id says: family, version, variants."""

    family: str
    version: tuple[int, ...] = ()
    variants: frozenset[str] = frozenset()
    canonical: bool = True  # the id itself carries the version (not an alias like gemini-pro-agent)

    @property
    def special(self) -> bool:
        return not SPECIAL_WORDS.isdisjoint(self.family.split("-"))


def _read(text: str) -> Ident:
    words: list[str] = []
    version: list[int] = []
    variants: set[str] = set()
    in_version = False  # only the first run of numbers is the version; later ones are dates
    for token in _SPLIT.split(text.lower()):
        if not token:
            continue
        if _VERSION.fullmatch(token):
            if not version or in_version:
                version.extend(int(part) for part in token.split("."))
                in_version = True
            continue
        in_version = False
        if token.isdigit() or token in STAGES or _SIZE.fullmatch(token):
            continue
        if token in VARIANTS:
            variants.add(token)
        else:
            words.append(token)
    return Ident("-".join(words), tuple(version), frozenset(variants))


@lru_cache(maxsize=4096)
def identify(model_id: str, display_name: str | None = None) -> Ident:
    """Family, version and variants of a model: from its id, or from its display name when the
    id names no version (`gemini-pro-agent`, "Gemini 3.1 Pro (High)")."""
    ident = _read(model_id.removeprefix("models/"))
    if ident.version or not display_name:
        return ident
    shown = _read(display_name)
    if not shown.version:
        return ident
    return Ident(shown.family, shown.version, shown.variants, canonical=False)


# --- fetchAvailableModels ---------------------------------------------------------------------------


@dataclass(slots=True)
class Catalogue:
    """One account's answer to fetchAvailableModels, internal names left out."""

    models: dict[str, Quota] = field(default_factory=dict)
    forwards: dict[str, str] = field(default_factory=dict)  # deprecated id -> its successor


@dataclass(slots=True)
class Listing:
    """One model as the pool lists it to callers: what its accounts' catalogues agree on."""

    display_name: str | None = None
    max_tokens: int | None = None
    max_output_tokens: int | None = None

    def add(self, entry: Quota) -> None:
        """One more account lists the model: the limits every account allows."""
        self.display_name = self.display_name or entry.display_name
        self.max_tokens = _least(self.max_tokens, entry.max_tokens)
        self.max_output_tokens = _least(self.max_output_tokens, entry.max_output_tokens)


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def read_catalogue(data: Any) -> Catalogue:
    """The models an account may use (quota left and reset time, display name, output limit)
    and the forwarding of deprecated names. Anything malformed is skipped, never fatal."""
    catalogue = Catalogue()
    if not isinstance(data, dict):
        return catalogue
    models = data.get("models")
    if isinstance(models, dict):
        for name, info in models.items():
            if isinstance(name, str) and name and not internal(name):
                catalogue.models[name] = _entry(info if isinstance(info, dict) else {})
    forwards = data.get("deprecatedModelIds")
    if isinstance(forwards, dict):
        for old, new in forwards.items():
            target = new.get("newModelId") if isinstance(new, dict) else None
            if isinstance(old, str) and isinstance(target, str) and target and not internal(target):
                catalogue.forwards[old] = target
    return catalogue


def _entry(info: dict[str, Any]) -> Quota:
    display_name = info.get("displayName")
    entry = Quota(
        display_name=display_name if isinstance(display_name, str) and display_name else None,
        max_tokens=_count(info.get("maxTokens")),
        max_output_tokens=_count(info.get("maxOutputTokens")),
    )
    quota_info = info.get("quotaInfo")
    if isinstance(quota_info, dict):
        entry.reset_at = _timestamp(quota_info.get("resetTime"))
        entry.remaining = _float(quota_info.get("remainingFraction"))
        if entry.remaining is None and entry.reset_at is not None:
            entry.remaining = 0.0  # an exhausted model is listed with its reset time only
    return entry


def _count(value: object) -> int | None:
    number = _float(value)
    return int(number) if number is not None and 1 <= number < 2**53 else None


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
