"""Bodies for Claude models behind Google Cloud Code (v1internal): every rule the service applies
(the agreed sheet's section 4), checked on real client requests and histories made like theirs.

`refusals` is the simulated upstream's side of that sheet, written here so these tests stand on
their own: each test asserts that what the gateway sends would pass it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from addons import routes
from addons.gateway import Gateway
from addons.settings import Settings
from addons.signatures import model_family
from addons.translate import canonical as c
from addons.translate import cloudcode, registry
from addons.translate import gemini as g

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "clients"
OPUS, SONNET, FLASH = "claude-opus-4-6-thinking", "claude-sonnet-4-6", "gemini-3-flash"
LIMIT = 64000  # both Claude models' maxOutputTokens in today's catalogue

# Signatures as the simulated upstream issues them, by family.
CLAUDE_SIG = "RXJMRGNsYXVkZSB0aGlua2luZyBzaWduYXR1cmUgb25l"
CLAUDE_SIG_2 = "RXJMRGNsYXVkZSB0aGlua2luZyBzaWduYXR1cmUgdHdv"
GEMINI_SIG = "CiQB0e2Kb2dlbWluaSB0aG91Z2h0IHNpZ25hdHVyZQ=="
GEMINI_CALL_SIG = "CiQB0e2Kb2dlbWluaSBjYWxsIHNpZ25hdHVyZQ=="
ISSUED = {CLAUDE_SIG: "claude", CLAUDE_SIG_2: "claude", GEMINI_SIG: "gemini", GEMINI_CALL_SIG: "gemini"}

FORBIDDEN = frozenset(
    "$schema $id $ref $defs definitions const additionalProperties propertyNames patternProperties if then else "
    "not $comment default examples format pattern minLength maxLength minItems maxItems uniqueItems minimum "
    "maximum exclusiveMinimum exclusiveMaximum multipleOf deprecated".split()
)


# --- the service's side -------------------------------------------------------------------------


def _schema_refusals(node: Any, where: str) -> list[str]:
    """Keywords Claude refuses, at any depth of a schema (property names are not keywords)."""
    if not isinstance(node, dict):
        return []
    found = [f"{where}.{key}" for key in node if key in FORBIDDEN or key.startswith("x-")]
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, dict):
            for name, child in value.items():
                found += _schema_refusals(child, f"{where}.{key}.{name}")
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            for k, child in enumerate(value):
                found += _schema_refusals(child, f"{where}.{key}[{k}]")
        elif key in ("items", "additionalProperties", "not", "if", "then", "else", "propertyNames"):
            found += _schema_refusals(value, f"{where}.{key}")
    return found


def _open_loop_turn(contents: list[dict[str, Any]]) -> dict[str, Any] | None:
    models = [i for i, turn in enumerate(contents) if turn.get("role") == "model"]
    users = [i for i, turn in enumerate(contents) if turn.get("role") != "model"]
    if not models or not users or users[-1] < models[-1]:
        return None
    calls = {p["functionCall"].get("id") for p in contents[models[-1]]["parts"] if "functionCall" in p}
    answers = {p["functionResponse"].get("id") for p in contents[users[-1]]["parts"] if "functionResponse" in p}
    return contents[models[-1]] if calls and answers and answers <= calls else None


def refusals(body: dict[str, Any], *, limit: int | None = LIMIT) -> list[str]:
    """Why the simulated upstream would answer 400 to this body for a Claude model (empty: it
    would not). The sheet's rules, one by one."""
    out: list[str] = []
    claude = lambda sig: ISSUED.get(sig) == "claude"  # noqa: E731
    calls: set[str] = set()
    for i, turn in enumerate(body.get("contents", [])):
        for j, part in enumerate(turn["parts"]):
            where = f"contents[{i}].parts[{j}]"
            if "functionCall" in part:
                if not part["functionCall"].get("id"):
                    out.append(f"{where}: functionCall without id")
                calls.add(part["functionCall"].get("id"))
            if "functionResponse" in part:
                call_id = part["functionResponse"].get("id")
                if not call_id:
                    out.append(f"{where}: functionResponse without id")
                elif call_id not in calls:
                    out.append(f"{where}: functionResponse id {call_id} matches no earlier functionCall")
            signature = part.get("thoughtSignature")
            if part.get("thought") is True and not claude(signature):
                out.append(f"{where}: Invalid `signature` in `thinking` block")
            elif signature is not None and part.get("thought") is not True and not claude(signature):
                out.append(f"{where}: foreign thoughtSignature on a non-thought part")
    declarations = [d for tool in body.get("tools", []) for d in tool.get("functionDeclarations", [])]
    for k, declaration in enumerate(declarations):
        for field in ("parameters", "parametersJsonSchema"):
            out += _schema_refusals(declaration.get(field), f"{declaration['name']}.{field}")
    mode = body.get("toolConfig", {}).get("functionCallingConfig", {}).get("mode")
    if declarations and mode != "VALIDATED":
        out.append(f"functionCallingConfig.mode is {mode!r}, not VALIDATED")
    config = body.get("generationConfig", {})
    room = config.get("maxOutputTokens")
    if limit is not None and room is not None and room > limit:
        out.append(f"The requested maxOutputTokens {room} exceeds the model limit {limit}")
    thinking = config.get("thinkingConfig")
    if thinking is not None:
        budget = thinking.get("thinkingBudget")
        if "thinkingLevel" in thinking or not isinstance(budget, int):
            out.append("thinkingConfig: a concrete thinkingBudget is required")
        elif budget == -1 or 0 < budget < 1024 or budget < -1:
            out.append(f"thinkingBudget {budget} is not allowed")
        elif budget > 0:
            if room is None or room <= budget:
                out.append(f"maxOutputTokens {room} must be greater than thinkingBudget {budget}")
            turn = _open_loop_turn(body.get("contents", []))
            if turn is not None:
                first = turn["parts"][0]
                if not (first.get("thought") is True and claude(first.get("thoughtSignature"))):
                    out.append("thinking on, but the open tool loop's model turn does not start with a signed thought")
    return out


def prepare(body: dict[str, Any], model: str = OPUS, limit: int | None = LIMIT, **kw: Any) -> dict[str, Any]:
    """`cloudcode.prepare` with the test's signature families, checking that the input stays."""
    before = copy.deepcopy(body)
    out = cloudcode.prepare(body, model, output_limit=limit, signature_family=kw.get("family", ISSUED.get))
    assert body == before, "the caller's body was changed"
    return out


# --- bodies like the real ones ------------------------------------------------------------------


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def cli_body() -> dict[str, Any]:
    return fixture("gemini-cli-0.61-streamGenerateContent.json")["body"]


@pytest.fixture(scope="module")
def claude_code() -> dict[str, Any]:
    return fixture("claude-code-2.1.197-messages.json")["body"]


def claude_code_tools(claude_code: dict[str, Any]) -> list[dict[str, Any]]:
    """Claude Code's 24 tools as a Gemini caller declares them: JSON schemas as they are."""
    declarations = [
        {"name": t["name"], "description": t["description"], "parametersJsonSchema": t["input_schema"]}
        for t in claude_code["tools"]
    ]
    return [{"functionDeclarations": declarations}]


def call(name: str, args: dict[str, Any], call_id: str | None = None, **part: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name, "args": args}
    if call_id:
        fn["id"] = call_id
    return {"functionCall": fn, **part}


def answer(name: str, output: str, call_id: str | None = None) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name, "response": {"output": output}}
    if call_id:
        fn["id"] = call_id
    return {"functionResponse": fn}


def agent_history() -> list[dict[str, Any]]:
    """A Claude Code-style session as a Gemini body carries it, with no ids anywhere: list, then
    read two files and search the web in parallel (answered in another order), then a follow-up."""
    return [
        {"role": "user", "parts": [{"text": "list the files in this directory"}]},
        {"role": "model", "parts": [call("Bash", {"command": "ls", "description": "List files"})]},
        {"role": "user", "parts": [answer("Bash", "a.py\nb.py")]},
        {
            "role": "model",
            "parts": [
                {"text": "Reading both files."},
                call("Read", {"file_path": "/p/a.py"}),
                call("Read", {"file_path": "/p/b.py"}),
                call("WebSearch", {"query": "python TODO conventions"}),
            ],
        },
        {"role": "user", "parts": [answer("WebSearch", "PEP 350"), answer("Read", "print('a')"), answer("Read", "print('b')")]},
        {"role": "model", "parts": [{"text": "Two small scripts; a.py has a TODO."}]},
        {"role": "user", "parts": [{"text": "now fix the TODO"}]},
    ]


def agent_body(claude_code: dict[str, Any], contents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "contents": contents if contents is not None else agent_history(),
        "systemInstruction": {"role": "user", "parts": [{"text": "You are Claude Code."}]},
        "tools": claude_code_tools(claude_code),
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {"maxOutputTokens": 32000, "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 10000}},
    }


def ids(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, id) of every call and response, in order."""
    found = []
    for turn in body["contents"]:
        for part in turn["parts"]:
            for kind in ("functionCall", "functionResponse"):
                if kind in part:
                    found.append((kind, part[kind]["name"], part[kind]["id"]))
    return found


def test_the_raw_bodies_would_be_refused(claude_code: dict[str, Any], cli_body: dict[str, Any]) -> None:
    """What these tests feed `prepare` breaks the rules as sent, so a clean `refusals` means work done."""
    raw = refusals(agent_body(claude_code))
    assert "contents[1].parts[0]: functionCall without id" in raw
    assert "contents[2].parts[0]: functionResponse without id" in raw
    assert "Read.parametersJsonSchema.$schema" in raw and "Read.parametersJsonSchema.properties.offset.minimum" in raw
    assert "WebFetch.parametersJsonSchema.properties.url.format" in raw
    assert "TaskCreate.parametersJsonSchema.properties.metadata.propertyNames" in raw
    assert "functionCallingConfig.mode is 'AUTO', not VALIDATED" in raw
    cli = refusals(cli_body)
    assert "maxOutputTokens None must be greater than thinkingBudget 8192" in cli
    assert "read_file.parametersJsonSchema.properties.start_line.minimum" in cli
    assert not any(r.endswith("properties.pattern") for r in cli)  # glob's `pattern` is a property, no keyword
    assert "thinkingConfig: a concrete thinkingBudget is required" in refusals(
        {"generationConfig": {"maxOutputTokens": 9000, "thinkingConfig": {"thinkingLevel": "high"}}}
    )
    looped = agent_history()[:5]
    looped[1]["parts"][0] = {**looped[1]["parts"][0], "thoughtSignature": GEMINI_CALL_SIG}
    looped[3]["parts"].insert(0, {"text": "hmm", "thought": True})
    for turn in looped:  # ids everywhere, so only the signature rules speak
        for part in turn["parts"]:
            for kind in ("functionCall", "functionResponse"):
                if kind in part:
                    part[kind]["id"] = part[kind]["name"]
    looped[3]["parts"][3]["functionCall"]["id"] = "Read2"
    looped[4]["parts"][2]["functionResponse"]["id"] = "Read2"
    assert refusals({"contents": looped, "generationConfig": {"maxOutputTokens": 32000, "thinkingConfig": {"thinkingBudget": 8192}}}) == [
        "contents[1].parts[0]: foreign thoughtSignature on a non-thought part",
        "contents[3].parts[0]: Invalid `signature` in `thinking` block",
        "thinking on, but the open tool loop's model turn does not start with a signed thought",
    ]


# --- ids ----------------------------------------------------------------------------------------


def test_a_history_without_ids_gets_consistent_paired_ids(claude_code: dict[str, Any]) -> None:
    body = agent_body(claude_code)
    out = prepare(body)
    assert refusals(out) == []
    found = ids(out)
    calls = {(name, i): call_id for i, (kind, name, call_id) in enumerate(found) if kind == "functionCall"}
    assert len(set(calls.values())) == len(calls) == 4  # every call its own id
    bash, read_a, read_b, search = (found[i][2] for i in (0, 2, 3, 4))
    # The search's answer came first, yet each answer carries its own call's id; same-name answers in order.
    assert [call_id for kind, _, call_id in found if kind == "functionResponse"] == [bash, search, read_a, read_b]
    assert prepare(body) == out  # the same history, the same ids
    later = agent_body(claude_code, agent_history() + [
        {"role": "model", "parts": [call("Edit", {"file_path": "/p/a.py", "old_string": "TODO", "new_string": "done"})]},
        {"role": "user", "parts": [answer("Edit", "ok")]},
    ])
    grown = ids(prepare(later))
    assert grown[: len(found)] == found  # a turn later, the earlier ids have not moved
    assert grown[-1][2] == grown[-2][2] and grown[-1][2] not in calls.values()


def test_ids_that_are_there_are_kept_and_odd_ones_repaired(claude_code: dict[str, Any]) -> None:
    contents = [
        {"role": "user", "parts": [{"text": "go"}]},
        {"role": "model", "parts": [call("Bash", {"command": "ls"}, "toolu_vrtx_01A"), call("Bash", {"command": "pwd"}, "toolu_vrtx_01A")]},
        {
            "role": "user",
            "parts": [
                answer("Bash", "a.py", "toolu_vrtx_01A"),
                answer("Bash", "/p", "bash-1763000000000-x"),  # the client's own id: paired by name and order
                answer("Read", "stray"),  # no call asked for it
            ],
        },
        {"role": "model", "parts": [call("Read", {"file_path": "/p/a b.py"}, "list_directory:1")]},
        {"role": "user", "parts": [answer("Read", "x", "list_directory:1"), answer("Read", "again", "list_directory:1")]},
    ]
    out = prepare(agent_body(claude_code, contents))
    assert refusals(out) == []
    found = ids(out)
    assert found[0] == ("functionCall", "Bash", "toolu_vrtx_01A")
    second = found[1][2]
    assert second != "toolu_vrtx_01A"  # two calls cannot share an id
    assert [f[2] for f in found[2:4]] == ["toolu_vrtx_01A", second]
    assert found[4:] == [("functionCall", "Read", "list_directory_1"), ("functionResponse", "Read", "list_directory_1")]
    assert out["contents"][2]["parts"][2] == {"text": '[Read result] {"output": "stray"}'}  # an answer of no call: text
    assert out["contents"][4]["parts"][1] == {"text": '[Read result] {"output": "again"}'}  # a second answer: text


def test_translated_requests_keep_the_callers_ids(claude_code: dict[str, Any]) -> None:
    """Claude Code through the Anthropic protocol: its toolu_ ids reach Claude as they are, and so
    do the ids a Gemini caller's decoding made up (a Gemini model never sees those)."""
    body = copy.deepcopy(claude_code)
    body["messages"] = [m for m in body["messages"] if m["role"] != "system"] + [
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should list it.", "signature": CLAUDE_SIG},
            {"type": "tool_use", "id": "toolu_01XYZ", "name": "Bash", "input": {"command": "ls"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01XYZ", "content": "a.py"}]},
    ]
    request = registry.CALLERS["anthropic"].decode_request(body, model=None)
    out = prepare(g.antigravity.encode_request(request, OPUS))
    assert refusals(out) == []
    assert ids(out) == [("functionCall", "Bash", "toolu_01XYZ"), ("functionResponse", "Bash", "toolu_01XYZ")]
    # Claude Code's adaptive thinking at effort "high": a concrete budget, its own max_tokens kept.
    assert out["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 24576
    assert out["generationConfig"]["maxOutputTokens"] == 64000
    assert out["contents"][1]["parts"][0] == {"text": "I should list it.", "thought": True, "thoughtSignature": CLAUDE_SIG}
    gemini_caller = g.caller.decode_request(agent_body(claude_code), model=OPUS)
    for model, expected in ((OPUS, True), (FLASH, False)):
        encoded = g.antigravity.encode_request(gemini_caller, model)
        assert all(("id" in p["functionCall"]) is expected for t in encoded["contents"] for p in t["parts"] if "functionCall" in p)


# --- thinking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thinking", "max_tokens", "limit", "budget", "room"),
    [
        ({"thinkingLevel": "HIGH"}, None, LIMIT, 24576, 32768),
        ({"thinkingLevel": "medium"}, 4096, LIMIT, 8192, 16384),  # too little room: raised
        ({"thinkingLevel": "low"}, 20000, LIMIT, 1024, 20000),
        ({"thinkingLevel": "xhigh", "includeThoughts": True}, None, LIMIT, 32768, 40960),
        ({"thinkingLevel": "max"}, None, LIMIT, 63999, 64000),
        ({"thinkingBudget": -1}, 64000, LIMIT, 24576, 64000),  # auto
        ({"includeThoughts": True}, None, LIMIT, 24576, 32768),  # adaptive: no amount at all
        ({"thinkingBudget": 100_000}, 128_000, LIMIT, 63999, 64000),  # above the limit: both clamped
        ({"thinkingBudget": 60000}, None, LIMIT, 60000, 64000),  # budget + 8192 would pass the limit
        ({"thinkingBudget": 100_000}, None, None, 100_000, 108_192),  # no limit known: nothing to clamp to
        ({"thinkingBudget": 2048, "thinkingLevel": "high"}, 4096, LIMIT, 2048, 4096),  # a budget beats a level
    ],
)
def test_thinking_gets_a_concrete_budget_and_room_above_it(
    claude_code: dict[str, Any], thinking: dict[str, Any], max_tokens: int | None, limit: int | None, budget: int, room: int
) -> None:
    body = agent_body(claude_code)
    body["generationConfig"] = {"thinkingConfig": thinking} | ({"maxOutputTokens": max_tokens} if max_tokens else {})
    out = prepare(body, limit=limit)
    assert refusals(out, limit=limit) == []
    config = out["generationConfig"]
    assert config["thinkingConfig"]["thinkingBudget"] == budget and "thinkingLevel" not in config["thinkingConfig"]
    assert config.get("thinkingConfig", {}).get("includeThoughts") == thinking.get("includeThoughts")
    assert config["maxOutputTokens"] == room


@pytest.mark.parametrize("thinking", [{"thinkingLevel": "minimal"}, {"thinkingBudget": 512}, {"thinkingBudget": 0}])
def test_a_budget_under_1024_means_no_thinking(claude_code: dict[str, Any], thinking: dict[str, Any]) -> None:
    body = agent_body(claude_code)
    body["generationConfig"] = {"temperature": 1, "thinkingConfig": thinking}
    out = prepare(body)
    assert out["generationConfig"] == {"temperature": 1} and refusals(out) == []


def test_output_is_capped_for_every_model(cli_body: dict[str, Any]) -> None:
    body = copy.deepcopy(cli_body)
    assert prepare(body, FLASH, 65536) is body  # nothing to do for Gemini: the very same body
    body["generationConfig"]["maxOutputTokens"] = 100_000
    capped = prepare(body, FLASH, 65536)
    assert capped["generationConfig"] == {**body["generationConfig"], "maxOutputTokens": 65536}
    assert capped["contents"] is body["contents"]  # only what changed is copied
    assert prepare(body, FLASH, None) is body
    snake = {"contents": body["contents"], "generation_config": {"max_output_tokens": 70000, "top_k": 64}}
    assert prepare(snake, "gpt-oss-120b-medium", 32768)["generation_config"] == {"max_output_tokens": 32768, "top_k": 64}
    claude = prepare({"contents": body["contents"], "generationConfig": {"maxOutputTokens": 100_000}}, SONNET)
    assert claude["generationConfig"] == {"maxOutputTokens": LIMIT}


# --- signatures ---------------------------------------------------------------------------------


def test_a_history_signed_by_gemini_loses_its_thoughts_and_this_turns_thinking(claude_code: dict[str, Any]) -> None:
    """The conversation ran on gemini-3-flash, now it goes to Claude: Gemini's thoughts and
    signatures (and the placeholder an encoder put on a call) cannot go with it."""
    contents = agent_history()
    contents[1]["parts"] = [
        {"text": "Listing first.", "thought": True, "thoughtSignature": GEMINI_SIG},
        call("Bash", {"command": "ls"}, thoughtSignature=GEMINI_CALL_SIG),
    ]
    contents[3]["parts"] = [
        {"text": "Now read.", "thought": True},  # unsigned
        {"text": "Reading both files.", "thoughtSignature": GEMINI_SIG},
        call("Read", {"file_path": "/p/a.py"}, thoughtSignature="skip_thought_signature_validator"),
        call("Read", {"file_path": "/p/b.py"}),
        call("WebSearch", {"query": "TODO"}),
    ]
    contents[5]["parts"] = [{"text": "Done.", "thoughtSignature": CLAUDE_SIG_2}, {"text": "", "thoughtSignature": GEMINI_SIG}]
    out = prepare(agent_body(claude_code, contents))
    assert refusals(out) == []
    assert "thinkingConfig" not in out["generationConfig"]  # thoughts were dropped: thinking off this turn
    assert out["generationConfig"]["maxOutputTokens"] == 32000
    model_turns = [t["parts"] for t in out["contents"] if t["role"] == "model"]
    assert not any(p.get("thought") for parts in model_turns for p in parts)
    assert model_turns[0] == [{"functionCall": {"name": "Bash", "args": {"command": "ls"}, "id": ids(out)[0][2]}}]
    assert model_turns[1][0] == {"text": "Reading both files."}
    assert model_turns[2] == [{"text": "Done.", "thoughtSignature": CLAUDE_SIG_2}]  # Claude's own stays; the empty part goes


def test_claude_signed_history_keeps_thinking_through_an_open_tool_loop(claude_code: dict[str, Any]) -> None:
    contents = agent_history()[:5]  # ends on the answers: the loop is open
    contents[3]["parts"].insert(0, {"text": "Read and grep.", "thought": True, "thoughtSignature": CLAUDE_SIG})
    contents[1]["parts"].insert(0, {"text": "", "thought": True, "thoughtSignature": CLAUDE_SIG_2})  # display omitted
    out = prepare(agent_body(claude_code, contents))
    assert refusals(out) == []
    assert out["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 10000}
    assert out["contents"][1]["parts"][0] == {"text": "", "thought": True, "thoughtSignature": CLAUDE_SIG_2}
    # A signature this gateway never saw (say, issued before a restart) is not taken for foreign.
    unknown = prepare(agent_body(claude_code, contents), family=lambda sig: None)
    assert unknown["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 10000


def test_thinking_is_off_when_the_open_loop_has_no_signed_thought(claude_code: dict[str, Any]) -> None:
    """Gemini CLI keeps no thought parts: Claude's signature rides on the call instead."""
    contents = agent_history()[:5]
    contents[3]["parts"][1]["thoughtSignature"] = CLAUDE_SIG
    out = prepare(agent_body(claude_code, contents))
    assert refusals(out) == []
    assert "thinkingConfig" not in out["generationConfig"]
    assert out["contents"][3]["parts"][1]["thoughtSignature"] == CLAUDE_SIG  # Claude's own, on a call: kept
    closed = prepare(agent_body(claude_code, agent_history()))  # the same turns, the loop since closed
    assert closed["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 10000 and refusals(closed) == []


# --- tools --------------------------------------------------------------------------------------


def test_claude_code_tool_schemas_fit_claudes_subset(claude_code: dict[str, Any]) -> None:
    body = agent_body(claude_code)
    body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["Bash", "Read"]}}
    out = prepare(body)
    assert refusals(out) == []
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED", "allowedFunctionNames": ["Bash", "Read"]}}
    schemas = {d["name"]: d["parametersJsonSchema"] for d in out["tools"][0]["functionDeclarations"]}
    originals = {t["name"]: t["input_schema"] for t in claude_code["tools"]}
    assert schemas.keys() == originals.keys()
    for name, schema in schemas.items():
        if originals[name]["properties"]:
            assert schema["properties"].keys() == originals[name]["properties"].keys(), name
            assert schema.get("required", []) == originals[name].get("required", []), name
    # Constraints live on as hints in the descriptions.
    read = schemas["Read"]["properties"]
    assert read["offset"]["description"].endswith("(minimum: 0; maximum: 9007199254740991)")
    assert read["limit"]["description"].endswith("(maximum: 9007199254740991; exclusiveMinimum: 0)")
    assert schemas["WebFetch"]["properties"]["url"] == {"type": "string", "description": "The URL to fetch content from (format: uri)"}
    assert "default: 30000" in schemas["TaskOutput"]["properties"]["timeout"]["description"]
    assert schemas["TaskUpdate"]["properties"]["status"]["enum"] == ["pending", "in_progress", "completed", "deleted"]
    # Objects without properties get the placeholder, at the top and further down.
    placeholder = {"reason": {"type": "string", "description": "Brief explanation of why you are calling this tool"}}
    assert schemas["CronList"] == {"type": "object", "properties": placeholder, "required": ["reason"]}
    metadata = schemas["TaskCreate"]["properties"]["metadata"]
    assert metadata["properties"] == placeholder and metadata["required"] == ["reason"]
    assert claude_code["tools"][0]["input_schema"].get("$schema")  # the fixture itself untouched


def test_schemas_in_every_spelling_and_shape() -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [
            {"functionDeclarations": [
                {"name": "no_args", "description": "Takes nothing."},
                {"name": "openapi", "parameters": {
                    "type": "OBJECT",
                    "properties": {"when": {"type": "STRING", "format": "date-time", "nullable": True},
                                   "n": {"type": "INTEGER", "minimum": 1, "maximum": 9}},
                    "required": ["when"],
                }},
                {"name": "refs", "parametersJsonSchema": {
                    "$defs": {"Point": {
                        "type": "object",
                        "properties": {"x": {"type": "number", "multipleOf": 0.5}},
                        "additionalProperties": False,
                        "x-order": 1,
                    }},
                    "type": "object",
                    "properties": {
                        "at": {"$ref": "#/$defs/Point"},
                        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "minItems": 1, "uniqueItems": True},
                        "kind": {"anyOf": [{"const": "a"}, {"const": "b"}], "default": "a", "deprecated": True},
                        "pattern": {"type": "string", "maxLength": 80},  # a property named like a keyword
                    },
                }},
            ]},
            {"googleSearch": {}},
        ],
    }
    out = prepare(body)
    assert refusals(out) == []
    no_args, openapi, refs = out["tools"][0]["functionDeclarations"]
    assert no_args == {"name": "no_args", "description": "Takes nothing.",
                       "parameters": {"type": "object", "properties": {"reason": cloudcode.PLACEHOLDER_SCHEMA}, "required": ["reason"]}}
    assert openapi["parameters"]["properties"] == {
        "when": {"type": "string", "nullable": True, "description": "format: date-time"},
        "n": {"type": "integer", "description": "minimum: 1; maximum: 9"},
    }
    props = refs["parametersJsonSchema"]["properties"]
    assert props["at"] == {"type": "object", "properties": {"x": {"type": "number", "description": "multipleOf: 0.5"}}}
    assert props["tags"]["items"] == {"type": "string", "description": 'pattern: "^[a-z]+$"'}
    assert props["tags"]["description"] == "minItems: 1"
    assert props["kind"] == {"type": "string", "enum": ["a", "b"], "description": 'default: "a"'}
    assert props["pattern"] == {"type": "string", "description": "maxLength: 80"}
    assert out["tools"][1] == {"googleSearch": {}}
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED"}}


# --- Gemini CLI's own body ----------------------------------------------------------------------


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)


def snake_case(body: dict[str, Any]) -> dict[str, Any]:
    """The body as a snake_case client writes it: field names only, never arguments or schemas."""
    def fields(node: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
        return {_snake(k): inner[k](v) if k in inner else v for k, v in node.items()}

    part = lambda p: fields(p, {"functionCall": lambda v: v, "functionResponse": lambda v: v})  # noqa: E731
    content = lambda t: fields(t, {"parts": lambda ps: [part(p) for p in ps]})  # noqa: E731
    declaration = lambda d: fields(d, {})  # noqa: E731
    return fields(body, {
        "contents": lambda ts: [content(t) for t in ts],
        "systemInstruction": content,
        "tools": lambda ts: [fields(t, {"functionDeclarations": lambda ds: [declaration(d) for d in ds]}) for t in ts],
        "generationConfig": lambda cfg: fields(cfg, {"thinkingConfig": lambda tc: fields(tc, {})}),
    })


def cli_session(cli_body: dict[str, Any]) -> dict[str, Any]:
    """Gemini CLI asked for claude-sonnet-4-6, a turn after Claude listed the directory."""
    body = copy.deepcopy(cli_body)
    body["contents"] += [
        {"role": "model", "parts": [
            {"text": "I'll list it.", "thoughtSignature": CLAUDE_SIG},  # the CLI dropped the thought, kept its signature
            call("list_directory", {"dir_path": "."}, "toolu_vrtx_01Q"),
        ]},
        {"role": "user", "parts": [answer("list_directory", "a.py b.py", "toolu_vrtx_01Q")]},
    ]
    return body


@pytest.mark.parametrize("spelling", ["camelCase", "snake_case"])
def test_gemini_clis_own_body_for_a_claude_model(cli_body: dict[str, Any], spelling: str) -> None:
    body = cli_session(cli_body)
    if spelling == "snake_case":
        body = snake_case(body)
        assert "generation_config" in body and "thought_signature" in body["contents"][1]["parts"][0]
    out = prepare(body, SONNET)
    assert refusals(out) == []
    assert out.keys() == {"contents", "systemInstruction", "tools", "generationConfig", "toolConfig"}
    assert out["generationConfig"] == {"temperature": 1, "topP": 0.95, "topK": 64}  # open loop, no thought: off
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED"}}
    read_file = next(d for d in out["tools"][0]["functionDeclarations"] if d["name"] == "read_file")
    assert read_file["parametersJsonSchema"]["properties"]["start_line"]["description"].endswith("(minimum: 1)")
    assert ids(out) == [("functionCall", "list_directory", "toolu_vrtx_01Q"), ("functionResponse", "list_directory", "toolu_vrtx_01Q")]
    first = prepare(snake_case(cli_body) if spelling == "snake_case" else cli_body, SONNET)
    assert first["generationConfig"] == {
        "temperature": 1, "topP": 0.95, "topK": 64,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192}, "maxOutputTokens": 16384,
    }
    assert refusals(first) == []


def test_both_spellings_at_once_keep_the_camel_one() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 100}, "generation_config": {"max_output_tokens": 5}}
    assert prepare(body)["generationConfig"] == {"maxOutputTokens": 100}
    assert "generation_config" not in prepare(body)


# --- through the gateway ------------------------------------------------------------------------


class _Pool:
    def output_limit(self, model: str) -> int | None:
        return {OPUS: LIMIT, SONNET: LIMIT, FLASH: 65536}.get(model)


def _encoder(protocol_path: str, body: dict[str, Any], caller: str, remembered: dict[str, str]) -> Any:
    gateway = Gateway(Settings())
    gateway.pool = _Pool()  # type: ignore[assignment]
    for signature, model in remembered.items():
        gateway.signatures.remember([c.Thinking("t", signature)], model_family(model, "antigravity"))
    route = routes.classify("POST", protocol_path, {})
    assert route is not None
    request = registry.CALLERS[caller].decode_request(body, model=route.model)
    gateway.signatures.restore(request)
    return gateway._encoder(route, body, request)


def test_the_gateway_fits_passed_through_gemini_bodies_for_claude(cli_body: dict[str, Any]) -> None:
    body = cli_session(cli_body)
    body["generationConfig"]["maxOutputTokens"] = 100_000
    encode = _encoder(f"/v1beta/models/{SONNET}:streamGenerateContent?alt=sse", body, "gemini", {CLAUDE_SIG: SONNET})
    out = encode("antigravity", SONNET)
    assert refusals(out) == [] and out["generationConfig"]["maxOutputTokens"] == LIMIT
    assert out["contents"][-2]["parts"][0]["thoughtSignature"] == CLAUDE_SIG
    # The same history for a Gemini model: Claude's signature is foreign there, so it is translated.
    gemini = encode("antigravity", FLASH)
    assert gemini["generationConfig"]["maxOutputTokens"] == 65536
    assert gemini["contents"][-2]["parts"] == [
        {"text": "I'll list it."},
        {"functionCall": {"name": "list_directory", "args": {"dir_path": "."}, "id": "toolu_vrtx_01Q"},
         "thoughtSignature": "skip_thought_signature_validator"},
    ]
    first = copy.deepcopy(cli_body)
    first["generationConfig"]["maxOutputTokens"] = 100_000
    encode = _encoder(f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", first, "gemini", {})
    passed = encode("antigravity", FLASH)  # passed through: only the cap
    assert passed["generationConfig"] == {**first["generationConfig"], "maxOutputTokens": 65536}
    assert passed["contents"] is first["contents"]
    assert encode("gemini", FLASH) is first  # a Gemini key: no Cloud Code rules


def test_the_gateway_drops_gemini_signatures_for_claude_whichever_path(cli_body: dict[str, Any]) -> None:
    """Signatures from gemini-3-flash on v1internal are foreign to Claude on the same transport:
    the request is translated (not passed through), then fitted."""
    body = cli_session(cli_body)
    body["contents"][-2]["parts"] = [
        {"text": "Listing.", "thought": True, "thoughtSignature": GEMINI_SIG},
        call("list_directory", {"dir_path": "."}, "call_1", thoughtSignature=GEMINI_CALL_SIG),
    ]
    body["contents"][-1]["parts"] = [answer("list_directory", "a.py", "call_1")]
    encode = _encoder(f"/v1beta/models/{SONNET}:generateContent", body, "gemini", {GEMINI_SIG: FLASH, GEMINI_CALL_SIG: FLASH})
    out = encode("antigravity", OPUS)
    assert refusals(out) == []
    assert "thinkingConfig" not in out["generationConfig"]
    assert out["contents"][-2]["parts"] == [{"text": "Listing."}, {"functionCall": {"name": "list_directory", "args": {"dir_path": "."}, "id": "call_1"}}]
    assert encode("antigravity", FLASH)["contents"][-2]["parts"][1]["thoughtSignature"] == GEMINI_CALL_SIG


def test_the_gateway_fits_translated_claude_code_requests(claude_code: dict[str, Any]) -> None:
    encode = _encoder("/v1/messages?beta=true", claude_code, "anthropic", {})
    out = encode("antigravity", OPUS)
    assert refusals(out) == []
    assert out["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 24576
    assert out["toolConfig"]["functionCallingConfig"]["mode"] == "VALIDATED"


def test_an_image_model_gets_what_cloud_code_takes_for_one(cli_body: dict[str, Any]) -> None:
    """A chat (Gemini CLI's own body, snake_case fields, tools, a system prompt and thinking) sent
    to an image model: no tools, no system prompt, no thinking, no response modalities."""
    body = copy.deepcopy(cli_body)
    body["generation_config"] = {**body.pop("generationConfig", {}), "response_modalities": ["TEXT", "IMAGE"]}
    sent = copy.deepcopy(body)
    prepared = cloudcode.prepare(body, "gemini-3.1-flash-image", output_limit=32768, signature_family=ISSUED.get)
    assert not {"tools", "toolConfig", "systemInstruction", "tool_config", "system_instruction"} & prepared.keys()
    assert not {"thinkingConfig", "responseModalities"} & prepared.get("generationConfig", {}).keys()
    assert prepared["contents"] == cli_body["contents"]
    assert body == sent  # the input is left as it was
