"""Requests for Google Cloud Code (v1internal) as its models take them.

The body is a GenerateContentRequest however it was made: encoded by `gemini` from the canonical
form, or a Gemini caller's own body passing through (camelCase or snake_case, as the Gemini API
accepts both). Every model has an output limit, and a larger `maxOutputTokens` is refused.

Claude models (claude-*) are reached through Google but checked as Anthropic checks them, so
they refuse much that Gemini takes: calls and responses without ids, thinking given as a level or
with too small a budget or no room for an answer, thoughts signed by another model family, a
tool loop resumed without its signed thought, schema keywords outside a small subset, a calling
mode other than VALIDATED. `prepare` copies the body and applies `CLAUDE_STEPS`, one rule each.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .gemini import SchemaSubset, clean_schema, fit_image_model, is_image_model

__all__ = ["CLAUDE_STEPS", "is_claude", "prepare"]

SignatureFamily = Callable[[str], str | None]

# Gemini's documented "no signature" stand-in; Claude takes it for a forged one.
PLACEHOLDER_SIGNATURE: Final = "skip_thought_signature_validator"

MIN_BUDGET: Final = 1024  # Claude's smallest thinking budget; below it thinking goes
AUTO_BUDGET: Final = 24576  # for "as much as needed" (-1), no budget at all, or an unknown level
ANSWER_ROOM: Final = 8192  # output tokens added above the budget when the caller left too few
# thinkingLevel (or effort) -> budget; None is "as much as the model allows".
LEVEL_BUDGETS: Final[dict[str, int | None]] = {
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,
    "max": None,
}

# Claude keeps no constraint keyword and no `format`: each is told in the description instead.
CLAUDE_SCHEMA: Final = SchemaSubset(constraints=frozenset(), formats=frozenset())
# VALIDATED calling wants at least one required property on every object.
PLACEHOLDER_PROPERTY: Final = "reason"
PLACEHOLDER_SCHEMA: Final = {"type": "string", "description": "Brief explanation of why you are calling this tool"}

_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")  # Anthropic's tool_use ids are [a-zA-Z0-9_-]+

# The objects of a GenerateContentRequest whose keys are field names rather than data (call
# arguments, responses, schemas): kind -> {field: (kind of its value, whether a list of them)}.
_FIELDS: Final[dict[str, dict[str, tuple[str, bool]]]] = {
    "request": {
        "contents": ("content", True),
        "systemInstruction": ("content", False),
        "tools": ("tool", True),
        "toolConfig": ("toolConfig", False),
        "generationConfig": ("generationConfig", False),
    },
    "content": {"parts": ("part", True)},
    "part": {"functionCall": ("call", False), "functionResponse": ("call", False)},
    "call": {},
    "tool": {"functionDeclarations": ("declaration", True)},
    "declaration": {},
    "toolConfig": {"functionCallingConfig": ("calling", False)},
    "calling": {},
    "generationConfig": {"thinkingConfig": ("thinking", False)},
    "thinking": {},
}


def is_claude(model: str) -> bool:
    return model.removeprefix("models/").startswith("claude-")


@dataclass(slots=True)
class Request:
    """One body on its way through the steps, with what they learn about it."""

    body: dict[str, Any]
    limit: int | None  # the model's maxOutputTokens, when known
    family: SignatureFamily
    thinking_off: str | None = None  # why thinking must stay off for this request

    @property
    def contents(self) -> list[dict[str, Any]]:
        contents = self.body.get("contents")
        return [turn for turn in contents if isinstance(turn, dict)] if isinstance(contents, list) else []

    def claude_signed(self, signature: Any) -> bool:
        """Signed, and not known to come from another family: a signature this gateway never saw
        (issued before a restart) is given the benefit of the doubt."""
        return isinstance(signature, str) and bool(signature) and not self.foreign(signature)

    def foreign(self, signature: str) -> bool:
        return signature == PLACEHOLDER_SIGNATURE or self.family(signature) not in (None, "claude")


Step = Callable[[Request], None]


def prepare(
    body: dict[str, Any], model: str, *, output_limit: int | None, signature_family: SignatureFamily
) -> dict[str, Any]:
    """The body to send `model` on v1internal. The input is never changed; for a model other
    than Claude it comes back as it is unless its output has to be capped."""
    if is_image_model(model):
        return fit_image_model(_field_names(_capped(body, output_limit), "request"), name_modalities=False)
    if not is_claude(model):
        return _capped(body, output_limit)
    request = Request(_field_names(body, "request"), output_limit, signature_family)
    for step in CLAUDE_STEPS:
        step(request)
    return request.body


# --- copying ------------------------------------------------------------------------------------


def _camel(key: str) -> str:
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _field_names(node: Any, kind: str) -> Any:
    """A copy of the request's structure with field names in camelCase (that spelling wins when
    a caller sent both); data inside (arguments, schemas, media) is shared, not copied, and steps
    replace rather than change it."""
    if not isinstance(node, dict):
        return node
    fields = _FIELDS[kind]
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = _camel(key)
        if name != key and name in node:
            continue
        if (inner := fields.get(name)) is not None:
            inner_kind, is_list = inner
            if is_list and isinstance(value, list):
                value = [_field_names(item, inner_kind) for item in value]
            elif not is_list:
                value = _field_names(value, inner_kind)
        out[name] = value
    return out


def _capped(body: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The cap alone, copying only the config it changes: other bodies pass as they came."""
    if limit is None:
        return body
    for key in ("generationConfig", "generation_config"):
        config = body.get(key)
        if not isinstance(config, dict):
            continue
        for field in ("maxOutputTokens", "max_output_tokens"):
            value = config.get(field)
            if _is_int(value) and value > limit:
                return {**body, key: {**config, field: limit}}
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- the steps ----------------------------------------------------------------------------------


def cap_output_tokens(request: Request) -> None:
    """`maxOutputTokens` no larger than the model's limit."""
    config = request.body.get("generationConfig")
    if request.limit is not None and isinstance(config, dict):
        value = config.get("maxOutputTokens")
        if _is_int(value) and value > request.limit:
            config["maxOutputTokens"] = request.limit


class _Pairs:
    """Responses paired with the calls before them: a response takes its own id when that names
    an unanswered call, else the earliest unanswered call of its name (Gemini clients answer
    without ids, or with ids of their own)."""

    __slots__ = ("_open", "_names", "seen")

    def __init__(self) -> None:
        self._open: dict[Any, deque[str]] = {}
        self._names: dict[str, Any] = {}  # unanswered call id -> name
        self.seen: set[str] = set()

    def call(self, call_id: str, name: Any) -> None:
        self._open.setdefault(name, deque()).append(call_id)
        self._names[call_id] = name
        self.seen.add(call_id)

    def response(self, call_id: str | None, name: Any) -> str | None:
        """The id of the call this answers; None when every call before it has its answer."""
        if call_id is not None and call_id in self._names:
            self._open[self._names.pop(call_id)].remove(call_id)
            return call_id
        if queue := self._open.get(name):
            found = queue.popleft()
            del self._names[found]
            return found
        return None


def _safe_id(value: Any) -> str | None:
    return _ID_BAD.sub("_", value) if isinstance(value, str) and value else None


def _invented_id(seed: str) -> str:
    """Same history, same id: the upstream's prompt cache stays warm across turns."""
    return "call_" + hashlib.blake2s(seed.encode(), digest_size=12).hexdigest()


def _loose_result(result: dict[str, Any]) -> dict[str, Any]:
    """A response no open call asked for, kept as text: Claude refuses a tool result without its
    call, or a second one for the same call."""
    name = result.get("name") or "tool"
    return {"text": f"[{name} result] {json.dumps(result.get('response'), ensure_ascii=False)}"}


def pair_call_ids(request: Request) -> None:
    """An id on every functionCall and functionResponse, each response carrying its call's."""
    pairs = _Pairs()
    for i, turn in enumerate(request.contents):
        parts = turn.get("parts")
        for j, part in enumerate(parts if isinstance(parts, list) else ()):
            if not isinstance(part, dict):
                continue
            if isinstance(call := part.get("functionCall"), dict):
                call_id = _safe_id(call.get("id"))
                if call_id is None or call_id in pairs.seen:
                    call_id = _invented_id(f"contents[{i}].parts[{j}]")
                call["id"] = call_id
                pairs.call(call_id, call.get("name"))
            elif isinstance(result := part.get("functionResponse"), dict):
                call_id = pairs.response(_safe_id(result.get("id")), result.get("name"))
                if call_id is None:
                    parts[j] = _loose_result(result)
                else:
                    result["id"] = call_id


def drop_unsigned_thoughts(request: Request) -> None:
    """Thoughts Claude did not sign (unsigned, another family's, the placeholder) cannot go back
    to it, and without them its thinking cannot go on: thinking is off for this request."""
    for turn in request.contents:
        parts = turn.get("parts")
        if not isinstance(parts, list):
            continue
        kept = [p for p in parts if not _thought(p) or request.claude_signed(p.get("thoughtSignature"))]
        if len(kept) < len(parts):
            turn["parts"] = kept
            request.thinking_off = "a thought of the history was not signed by a Claude model"


def strip_foreign_signatures(request: Request) -> None:
    """Other parts keep only Claude's signatures."""
    for turn in request.contents:
        for part in turn.get("parts") or ():
            if isinstance(part, dict) and "thoughtSignature" in part and not _thought(part):
                if not request.claude_signed(part["thoughtSignature"]):
                    del part["thoughtSignature"]


def drop_empty_parts(request: Request) -> None:
    """No part without content (such as what is left of a bare signature), no turn without
    parts, and neighbouring turns of one role merged into one."""
    contents: list[dict[str, Any]] = []
    for turn in request.contents:
        parts = turn.get("parts")
        if not isinstance(parts, list):
            contents.append(turn)
            continue
        parts = [part for part in parts if not _empty(part)]
        if not parts:
            continue
        if contents and _role(contents[-1]) == _role(turn) and isinstance(contents[-1].get("parts"), list):
            contents[-1]["parts"] = [*contents[-1]["parts"], *parts]
        else:
            turn["parts"] = parts
            contents.append(turn)
    if "contents" in request.body:
        request.body["contents"] = contents


def check_open_tool_loop(request: Request) -> None:
    """A tool loop that is still open resumes with thinking only when its model turn opens with
    a signed thought, as Anthropic demands."""
    turn = _open_loop_turn(request.contents)
    if turn is None:
        return
    first = turn["parts"][0] if turn["parts"] else None
    if not (_thought(first) and request.claude_signed(first.get("thoughtSignature"))):
        request.thinking_off = "the open tool loop's model turn does not open with a signed thought"


def fit_thinking(request: Request) -> None:
    """A concrete budget from 1024 up to the limit, and room above it for the answer; thinking
    goes entirely when it must be off or the budget comes out smaller."""
    config = request.body.get("generationConfig")
    if not isinstance(config, dict) or not isinstance(thinking := config.get("thinkingConfig"), dict):
        return
    budget = None if request.thinking_off else _budget(thinking, request.limit)
    if budget is not None and request.limit is not None:
        budget = min(budget, request.limit - 1)
    if budget is None or budget < MIN_BUDGET:
        del config["thinkingConfig"]
        return
    kept = {key: value for key, value in thinking.items() if key not in ("thinkingLevel", "thinkingBudget")}
    config["thinkingConfig"] = {**kept, "thinkingBudget": budget}
    room = config.get("maxOutputTokens")
    if not _is_int(room) or room <= budget:
        wanted = budget + ANSWER_ROOM
        config["maxOutputTokens"] = wanted if request.limit is None else min(wanted, request.limit)


def clean_tool_schemas(request: Request) -> None:
    """Every declaration's schema in Claude's subset, hints in descriptions, no empty object."""
    for declaration in _declarations(request.body):
        fields = [field for field in ("parametersJsonSchema", "parameters") if isinstance(declaration.get(field), dict)]
        for field in fields:
            declaration[field] = _placeheld(clean_schema(declaration[field], CLAUDE_SCHEMA))
        if not fields:
            declaration.pop("parametersJsonSchema", None)
            declaration["parameters"] = _placeheld({"type": "object"})


def validated_calling(request: Request) -> None:
    """Claude's function calling runs in mode VALIDATED only; a list of allowed names stays."""
    if not _declarations(request.body):
        return
    tool_config = request.body.get("toolConfig")
    tool_config = tool_config if isinstance(tool_config, dict) else {}
    calling = tool_config.get("functionCallingConfig")
    calling = calling if isinstance(calling, dict) else {}
    request.body["toolConfig"] = {**tool_config, "functionCallingConfig": {**calling, "mode": "VALIDATED"}}


CLAUDE_STEPS: Final[tuple[Step, ...]] = (
    cap_output_tokens,
    pair_call_ids,
    drop_unsigned_thoughts,
    strip_foreign_signatures,
    drop_empty_parts,
    check_open_tool_loop,
    fit_thinking,
    clean_tool_schemas,
    validated_calling,
)


# --- helpers ------------------------------------------------------------------------------------


def _thought(part: Any) -> bool:
    return isinstance(part, dict) and part.get("thought") is True


def _empty(part: Any) -> bool:
    """A non-thought part with nothing for the model: no text and no other data field."""
    if not isinstance(part, dict) or _thought(part):
        return False
    return not part.get("text") and not (part.keys() - {"text", "thought", "thoughtSignature"})


def _role(turn: dict[str, Any]) -> str:
    return "model" if turn.get("role") == "model" else "user"


def _open_loop_turn(contents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last model turn, when it called functions and a user turn after it answers them."""
    last = next((i for i in range(len(contents) - 1, -1, -1) if _role(contents[i]) == "model"), None)
    if last is None:
        return None
    turn = contents[last]
    if not isinstance(turn.get("parts"), list) or not any(_has(part, "functionCall") for part in turn["parts"]):
        return None
    answered = any(_has(part, "functionResponse") for later in contents[last + 1 :] for part in later.get("parts") or ())
    return turn if answered else None


def _has(part: Any, field: str) -> bool:
    return isinstance(part, dict) and isinstance(part.get(field), dict)


def _budget(thinking: dict[str, Any], limit: int | None) -> int | None:
    """The budget asked for: None for thinking off."""
    budget = thinking.get("thinkingBudget")
    if isinstance(budget, float) and budget.is_integer():
        budget = int(budget)
    if _is_int(budget):
        if budget == -1:
            return AUTO_BUDGET
        return budget if budget > 0 else None
    level = thinking.get("thinkingLevel")
    if not isinstance(level, str):
        return AUTO_BUDGET
    level = level.lower()
    if level not in LEVEL_BUDGETS:
        return AUTO_BUDGET  # THINKING_LEVEL_UNSPECIFIED, or a level newer than this table
    budget = LEVEL_BUDGETS[level]
    if budget is None:
        return limit - 1 if limit is not None else LEVEL_BUDGETS["xhigh"]
    return budget


def _declarations(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    found: list[dict[str, Any]] = []
    for tool in tools if isinstance(tools, list) else ():
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        if isinstance(declarations, list):
            found.extend(d for d in declarations if isinstance(d, dict))
    return found


def _placeheld(schema: dict[str, Any]) -> dict[str, Any]:
    """Every object without properties (a fresh schema from `clean_schema`, changed in place)
    gets the placeholder property, required."""
    if schema.get("type") == "object" and not schema.get("properties"):
        schema["properties"] = {PLACEHOLDER_PROPERTY: dict(PLACEHOLDER_SCHEMA)}
        schema["required"] = [PLACEHOLDER_PROPERTY]
    for child in (schema.get("properties") or {}).values():
        _placeheld(child)
    if isinstance(schema.get("items"), dict):
        _placeheld(schema["items"])
    for option in schema.get("anyOf") or ():
        _placeheld(option)
    return schema
