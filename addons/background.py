"""Background requests: the side requests coding agents send on the model picked for real work.

Claude Code names a session, checks whether a prompt starts a new topic, warms its sub-agents
up, probes its quota and summarises a long conversation — each one a request on the premium
model (2.1 sends session titles on Opus with `max_tokens` 64000). With `[routing]
background_model` set they go there instead; off by default.

Each rule below says what one such request looks like, from a real capture of it (the file
under tests/fixtures/clients/ is named in the rule, and a test checks the rule against it and
that the client's main requests match no rule). The rules read the canonical request, so they
hold whichever protocol carries it. Every condition a rule gives must hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from .translate import canonical as c


@dataclass(frozen=True, slots=True)
class Rule:
    name: str  # how ledger rows, headers and flows name it
    what: str  # for people: who sends it and why
    capture: str  # tests/fixtures/clients/<file>#<capture name>
    only_user_text: str | None = None  # the whole conversation is one user turn with exactly this text
    last_user_ends: str | None = None  # the last user turn's text ends with this
    last_user_contains: str | None = None
    system_contains: str | None = None
    schema_properties: frozenset[str] | None = None  # structured output with exactly these properties
    max_tokens: int | None = None


RULES: tuple[Rule, ...] = (
    Rule(
        "quota_probe", "Claude Code's quota check at start (when signed in to claude.ai)",
        "side-requests/claude-code-2.1.197.json#quota_probe", only_user_text="quota", max_tokens=1,
    ),
    Rule(
        "warmup", "Claude Code 2.0's warm-up of each sub-agent at start",
        "side-requests/claude-code-2.0.50.json#warmup", only_user_text="Warmup",
    ),
    Rule(
        "title", "Claude Code 2.1's session title, asked for on every prompt",
        "side-requests/claude-code-2.1.197.json#title", schema_properties=frozenset({"title"}),
        last_user_ends="Write the title in the language the user wrote in, regardless of the language of the examples above.",
    ),
    Rule(
        "topic", "Claude Code 2.0's topic check on each prompt (the terminal title)",
        "side-requests/claude-code-2.0.50.json#topic",
        system_contains="Analyze if this message indicates a new conversation topic",
    ),
    Rule(
        "summary", "Claude Code's conversation summary (/compact, and compaction when the context fills)",
        "side-requests/claude-code-2.1.197.json#summary",
        last_user_contains="an <analysis> block followed by a <summary> block",
    ),
)


def recognise(request: c.Request, rules: tuple[Rule, ...] = RULES) -> Rule | None:
    """The first rule the request fits, or None for real work."""
    for rule in rules:
        if _fits(rule, request):
            return rule
    return None


def _fits(rule: Rule, request: c.Request) -> bool:
    if rule.max_tokens is not None and request.max_tokens != rule.max_tokens:
        return False
    if rule.schema_properties is not None:
        fmt = request.response_format
        properties = (fmt.schema or {}).get("properties") if fmt is not None else None
        if not isinstance(properties, dict) or set(properties) != rule.schema_properties:
            return False
    if rule.only_user_text is not None:
        if len(request.messages) != 1 or request.messages[0].role != "user":
            return False
        if _text(request.messages[0]).strip() != rule.only_user_text:
            return False
    if rule.last_user_ends is not None or rule.last_user_contains is not None:
        last = next((m for m in reversed(request.messages) if m.role == "user"), None)
        text = _text(last) if last is not None else ""
        if rule.last_user_ends is not None and not text.rstrip().endswith(rule.last_user_ends):
            return False
        if rule.last_user_contains is not None and rule.last_user_contains not in text:
            return False
    if rule.system_contains is not None and not any(rule.system_contains in s for s in request.system):
        return False
    return True


def _text(message: c.Message) -> str:
    return "\n".join(part.text for part in message.parts if isinstance(part, c.Text))


def rule_table() -> str:
    """RULES as the Markdown table the README shows, so the two never disagree."""
    rows = ["| rule | what it is | recognised by | captured in |", "|---|---|---|---|"]
    for rule in RULES:
        signs = []
        if rule.only_user_text is not None:
            signs.append(f"the only turn is the user's `{rule.only_user_text}`")
        if rule.max_tokens is not None:
            signs.append(f"`max_tokens` {rule.max_tokens}")
        if rule.schema_properties is not None:
            signs.append("a JSON answer with only " + ", ".join(f"`{p}`" for p in sorted(rule.schema_properties)))
        if rule.last_user_ends is not None:
            signs.append(f"the last user text ends `{rule.last_user_ends}`")
        if rule.last_user_contains is not None:
            signs.append(f"the last user text has `{rule.last_user_contains}`")
        if rule.system_contains is not None:
            signs.append(f"the system prompt has `{rule.system_contains}`")
        rows.append(f"| `{rule.name}` | {rule.what} | {'; '.join(signs)} | `{rule.capture}` |")
    return "\n".join(rows)
