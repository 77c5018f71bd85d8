"""Thought signatures across callers and upstreams.

Gemini signs its thoughts and function calls and refuses a later turn whose calls come back
unsigned; Anthropic refuses thinking blocks signed by anyone else. Callers that speak OpenAI
(or Anthropic, for a call's signature) cannot carry these, so the gateway keeps them here,
bounded, keyed by tool call id or thought text, and puts them back on the next turn. Before a
history goes to an upstream, signatures known to come from another model family are removed
(a thought becomes plain text) instead of sending what that upstream would reject.

A signature belongs to the family of the model that issued it, whatever the transport: Claude
checks Claude's signatures whether it is reached with an Anthropic key or through Cloud Code,
and a Gemini model behind Cloud Code signs like one reached with a Gemini key.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
from collections import OrderedDict
from typing import Final

from .translate import canonical as c

# Upstream dialect -> the family whose signatures its models issue. Cloud Code serves several
# families: there the model's name tells (MODEL_FAMILIES, Gemini's otherwise).
DIALECT_FAMILIES: Final[dict[str, str]] = {"anthropic": "claude", "gemini": "gemini", "openai": "openai"}
MODEL_FAMILIES: Final[tuple[tuple[str, str], ...]] = (("gemini-", "gemini"), ("gpt-", "openai"))


def model_family(model: str, dialect: str) -> str:
    """Whose signatures `model`, reached through `dialect`, issues and accepts: Claude's for
    claude-* on any transport and for whatever an Anthropic-compatible key serves."""
    name = model.removeprefix("models/")
    if name.startswith("claude-"):
        return "claude"
    if dialect == "antigravity":
        return next((family for prefix, family in MODEL_FAMILIES if name.startswith(prefix)), "gemini")
    return DIALECT_FAMILIES.get(dialect, dialect)


class _Bounded(OrderedDict[str, tuple[str, str]]):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: tuple[str, str]) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def _thought_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _signature_key(signature: str) -> str:
    """One key per signature whichever base64 alphabet a client sends it back in (google-genai
    re-encodes Google's signatures URL-safe, with or without padding)."""
    text = signature.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return signature
    return hashlib.sha256(raw).hexdigest()


class SignatureCache:
    def __init__(self, limit: int = 20_000) -> None:
        self._by_call = _Bounded(limit)  # tool call id -> (signature, family)
        self._by_thought = _Bounded(limit)  # hash of thought text -> (signature, family)
        self._origin = _Bounded(limit)  # signature -> (family, "")

    def remember(self, parts: list[c.Part], family: str) -> None:
        """Notes the signatures of an answer from a model of `family` (see `model_family`)."""
        for part in parts:
            signature = getattr(part, "signature", None)
            if not signature:
                continue
            self._origin.put(_signature_key(signature), (family, ""))
            if isinstance(part, c.ToolCall):
                self._by_call.put(part.id, (signature, family))
            elif isinstance(part, c.Thinking) and part.text:
                self._by_thought.put(_thought_key(part.text), (signature, family))

    def restore(self, request: c.Request) -> None:
        """Puts known signatures back on the parts a caller sent without them (in place)."""
        if not (self._by_call or self._by_thought):
            return
        for message in request.messages:
            if message.role != "assistant":
                continue
            for part in message.parts:
                if isinstance(part, c.ToolCall) and not part.signature and part.id in self._by_call:
                    part.signature = self._by_call[part.id][0]
                elif isinstance(part, c.Thinking) and not part.signature and part.text:
                    if (known := self._by_thought.get(_thought_key(part.text))) is not None:
                        part.signature = known[0]

    # --- sharing with other replicas (addons/recall.py) ---------------------------------------------
    SPACES = ("sig-call", "sig-thought", "sig-origin")

    def _maps(self) -> dict[str, _Bounded]:
        return {"sig-call": self._by_call, "sig-thought": self._by_thought, "sig-origin": self._origin}

    def unknown(self, request: c.Request) -> dict[str, list[str]]:
        """The keys this request looks up (`restore`, `family`) that this replica never saw."""
        wanted: dict[str, set[str]] = {space: set() for space in self.SPACES}
        for message in request.messages:
            for part in message.parts:
                signature = getattr(part, "signature", None)
                if signature:
                    wanted["sig-origin"].add(_signature_key(signature))
                elif message.role == "assistant" and isinstance(part, c.ToolCall):
                    wanted["sig-call"].add(part.id)
                elif message.role == "assistant" and isinstance(part, c.Thinking) and part.text:
                    wanted["sig-thought"].add(_thought_key(part.text))
        maps = self._maps()
        return {space: [k for k in keys if k not in maps[space]] for space, keys in wanted.items() if keys}

    def learn(self, space: str, found: dict[str, tuple[str, str]]) -> None:
        target = self._maps()[space]
        for key, value in found.items():
            target.put(key, value)
            if space != "sig-origin":  # a restored signature's family is known with it
                self._origin.put(_signature_key(value[0]), (value[1], ""))

    def entries(self, parts: list[c.Part], family: str) -> dict[str, dict[str, tuple[str, str]]]:
        """What `remember` notes for these parts, by space: for the other replicas."""
        out: dict[str, dict[str, tuple[str, str]]] = {space: {} for space in self.SPACES}
        for part in parts:
            signature = getattr(part, "signature", None)
            if not signature:
                continue
            out["sig-origin"][_signature_key(signature)] = (family, "")
            if isinstance(part, c.ToolCall):
                out["sig-call"][part.id] = (signature, family)
            elif isinstance(part, c.Thinking) and part.text:
                out["sig-thought"][_thought_key(part.text)] = (signature, family)
        return {space: items for space, items in out.items() if items}

    def family(self, signature: str) -> str | None:
        """The family whose model issued `signature`, None when this gateway never saw it."""
        origin = self._origin.get(_signature_key(signature))
        return origin[0] if origin is not None else None

    def for_upstream(self, request: c.Request, family: str) -> c.Request:
        """The request as a model of `family` can take it: foreign signatures removed. The same
        object when there is nothing to remove, a copy otherwise (other accounts may need the
        original)."""
        if not any(self._foreign(part, family) for m in request.messages for part in m.parts):
            return request
        request = copy.deepcopy(request)
        for message in request.messages:
            kept: list[c.Part] = []
            for part in message.parts:
                if not self._foreign(part, family):
                    kept.append(part)
                elif isinstance(part, c.Thinking):
                    if part.text and not part.redacted:
                        kept.append(c.Text(part.text))
                else:
                    part.signature = None  # type: ignore[union-attr]
                    kept.append(part)
            message.parts = kept or [c.Text(".")]
        return request

    def honoured(self, request: c.Request, family: str) -> bool:
        """Whether the request's signatures can go to a model of `family` as the caller sent
        them: none foreign, and (for Gemini) the first call of every model turn signed, as
        Gemini 3 demands. Otherwise the request is translated, which repairs what it can."""
        for message in request.messages:
            first_call = True
            for part in message.parts:
                if self._foreign(part, family):
                    return False
                if isinstance(part, c.ToolCall) and message.role == "assistant" and first_call:
                    first_call = False
                    if family == "gemini" and not part.signature:
                        return False
        return True

    def _foreign(self, part: c.Part, family: str) -> bool:
        signature = getattr(part, "signature", None)
        if not signature:
            return False
        origin = self.family(signature)
        return origin is not None and origin != family
