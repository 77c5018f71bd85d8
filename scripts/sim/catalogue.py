"""Cloud Code's model catalogue as fetchAvailableModels lists it today: servable models with
their limits, internal IDE models (listed, never servable) and forwarding of retired names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .util import thinking_model

GOOGLE, ANTHROPIC, OPENAI = "MODEL_PROVIDER_GOOGLE", "MODEL_PROVIDER_ANTHROPIC", "MODEL_PROVIDER_OPENAI"


class Spec(NamedTuple):
    display: str
    max_output: int  # generationConfig.maxOutputTokens above this is refused
    max_tokens: int = 1048576  # context window
    provider: str = GOOGLE
    thinking: bool = True
    images: bool = True
    internal: bool = False  # IDE chat/tab models: listed, but never to be routed or shown


CATALOGUE: dict[str, Spec] = {
    "claude-opus-4-6-thinking": Spec("Claude Opus 4.6 (Thinking)", 64000, 200000, ANTHROPIC),
    "claude-sonnet-4-6": Spec("Claude Sonnet 4.6", 64000, 200000, ANTHROPIC),
    "gemini-3.1-pro-high": Spec("Gemini 3.1 Pro (High)", 65535),
    "gemini-3.1-pro-low": Spec("Gemini 3.1 Pro (Low)", 65535),
    "gemini-pro-agent": Spec("Gemini 3.1 Pro (High)", 65535),  # an agent alias of the same model
    "gemini-3-flash": Spec("Gemini 3 Flash", 65536),
    "gemini-3.1-flash-image": Spec("Gemini 3.1 Flash Image", 32768, thinking=False),
    "gemini-2.5-flash": Spec("Gemini 2.5 Flash", 65535),
    "gpt-oss-120b-medium": Spec("GPT-OSS 120B (Medium)", 32768, 131072, OPENAI, images=False),
}
INTERNAL: dict[str, Spec] = {
    name: Spec(name, 8192, 32768, thinking=False, images=False, internal=True)
    for name in ("chat_20706", "chat_23310", "tab_flash_lite_preview")
}
DEPRECATED: dict[str, str] = {
    "claude-sonnet-4-5": "claude-sonnet-4-6",
    "claude-opus-4-5-thinking": "claude-opus-4-6-thinking",
    "gemini-3-pro-high": "gemini-3.1-pro-high",
    "gemini-3-pro-low": "gemini-3.1-pro-low",
    "gemini-2.5-pro": "gemini-3.1-pro-high",
}
DEFAULT_GOOGLE_MODELS: tuple[str, ...] = tuple(CATALOGUE)
OVERRIDES = {"remainingFraction", "resetTime", "displayName", "maxOutputTokens", "maxTokens"}


def family(model: str) -> str:
    """Whose thought signatures a model issues and accepts: they belong to a model family."""
    if model.startswith("claude-"):
        return "claude"
    return "openai" if model.startswith("gpt-") else "gemini"


def spec_for(name: str, given: dict[str, Any] | None = None) -> Spec:
    """The catalogue's entry for `name` (a guess for names it lacks), with a test's overrides."""
    given = given or {}
    if unknown := set(given) - OVERRIDES:
        raise ValueError(f"unknown model fields {sorted(unknown)} for {name!r}; allowed {sorted(OVERRIDES)}")
    base = CATALOGUE.get(name) or INTERNAL.get(name) or Spec(
        name.replace("-", " ").title(), 65536,
        provider={"claude": ANTHROPIC, "openai": OPENAI}.get(family(name), GOOGLE), thinking=thinking_model(name))
    return base._replace(display=str(given.get("displayName", base.display)),
                         max_output=int(given.get("maxOutputTokens", base.max_output)),
                         max_tokens=int(given.get("maxTokens", base.max_tokens)))


@dataclass(slots=True)
class AccountModel:
    """One catalogue entry of one account: what it is and how much quota is left."""

    spec: Spec
    quota: dict[str, Any] = field(default_factory=dict)  # remainingFraction, resetTime

    def listing(self) -> dict[str, Any]:
        s = self.spec
        return {"displayName": s.display, "maxTokens": s.max_tokens, "maxOutputTokens": s.max_output,
                "quotaInfo": dict(self.quota), "supportsThinking": s.thinking, "supportsImages": s.images,
                "recommended": not s.internal, "modelProvider": s.provider}

    def public(self) -> dict[str, Any]:
        return {**self.quota, "displayName": self.spec.display, "maxOutputTokens": self.spec.max_output,
                "internal": self.spec.internal}


def account_models(models: dict[str, dict[str, Any]] | None, reset: str) -> dict[str, AccountModel]:
    """An account's catalogue: today's (or the names a test gives) plus the internal models."""
    given = {name: {} for name in CATALOGUE} if models is None else models
    out = {}
    for name, extra in {**given, **{n: {} for n in INTERNAL if n not in given}}.items():
        extra = extra or {}
        quota = {"remainingFraction": float(extra.get("remainingFraction", 1.0)),
                 "resetTime": extra.get("resetTime", reset)}
        out[name] = AccountModel(spec_for(name, extra), quota)
    return out
