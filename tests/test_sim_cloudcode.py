"""The simulated Cloud Code (v1internal): exactly as strict as the live service, per
/work/notes' v1internal sheet. Every rule has a case the sim refuses and one it accepts, because
the gateway's Cloud Code tests trust both halves."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sim_kit import (ANTHROPIC_HEADERS, CALL_TEXT, GOOGLE_KEY, WEATHER_GEMINI, bearer, client, envelope,
                     gemini_text, google_error, refresh, server, sim, sse_data, user)

from simupstream import (BYPASS_SIGNATURE, CATALOGUE, DEFAULT_GOOGLE_MODELS, DEPRECATED, INTERNAL, OUTDATED_TEXT,
                         REFUSALS, SimUpstream, client_headers, estimate_tokens)

__all__ = ["client", "server", "sim"]  # fixtures

LOAD = {"metadata": {"ideType": "ANTIGRAVITY"}}
ONBOARD = {"tier_id": "free-tier", "metadata": {"ide_type": "ANTIGRAVITY", "ide_version": "4.3.0",
                                                "ide_name": "antigravity"}}
CLAUDE = "claude-opus-4-6-thinking"
VALIDATED = {"functionCallingConfig": {"mode": "VALIDATED"}}
THINKING = {"maxOutputTokens": 4096, "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True}}
Loop = tuple[dict[str, str], dict[str, Any], dict[str, str]]  # headers, a valid body, a signature per family


def post(client: httpx.Client, method: str, body: dict[str, Any], headers: dict[str, str],
         **params: str) -> httpx.Response:
    return client.post(f"/v1internal:{method}", headers=headers, json=body, params=params)


def answer_parts(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return r.json()["response"]["candidates"][0]["content"]["parts"]


def token_only(client: httpx.Client, token: str = "rt-alice") -> dict[str, str]:
    return {"authorization": "Bearer " + refresh(client, token).json()["access_token"]}


# --------------------------------------------------------------------------- generation basics


def test_v1internal_generate(sim: SimUpstream, client: httpx.Client) -> None:
    r = post(client, "generateContent", envelope([user("hello there")], sessionId="-4242"), bearer(client))
    assert r.status_code == 200, r.text
    resp = r.json()["response"]
    cand = resp["candidates"][0]
    assert cand["content"] == {"role": "model", "parts": [{"text": "echo: hello there"}]}
    assert cand["finishReason"] == "STOP"
    usage = resp["usageMetadata"]
    assert usage["promptTokenCount"] == estimate_tokens("hello there")
    assert usage["candidatesTokenCount"] == estimate_tokens("echo: hello there")
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert resp["modelVersion"] == "gemini-2.5-flash" and "traceId" in r.json()
    entry = sim.log("google")[-1]
    assert entry["session"] == "-4242" and entry["model"] == "gemini-2.5-flash"
    post(client, "loadCodeAssist", LOAD, bearer(client))
    assert sim.log("google")[-1]["session"] is None


def test_v1internal_stream_with_thought(sim: SimUpstream, client: httpx.Client) -> None:
    sim.settings(events=4)
    r = client.post("/ep2/v1internal:streamGenerateContent", params={"alt": "sse"}, headers=bearer(client),
                    json=envelope([user("[[think]] stream me a longer answer please")]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "\r\n\r\n" in r.text
    docs = [d["response"] for d in sse_data(r.text)]
    assert len(docs) == 5  # one thought + 4 text chunks
    thought = docs[0]["candidates"][0]["content"]["parts"][0]
    assert thought["thought"] is True and thought["thoughtSignature"]
    assert gemini_text(docs) == "echo: [[think]] stream me a longer answer please"
    assert "usageMetadata" not in docs[1] and docs[-1]["candidates"][0]["finishReason"] == "STOP"
    assert docs[-1]["usageMetadata"]["thoughtsTokenCount"] == estimate_tokens("thinking about it")
    assert sim.log()[-1]["path"] == "/ep2/v1internal:streamGenerateContent" and sim.log()[-1]["stream"] is True


@pytest.mark.parametrize(("change", "status", "needle"), [
    (lambda b: b.pop("userAgent"), 400, "userAgent"),
    (lambda b: b.pop("requestId"), 400, "requestId"),
    (lambda b: b.update(model="gemini-9-ultra"), 404, "gemini-9-ultra"),
    (lambda b: b["request"].update(contents=[]), 400, "contents is not specified"),
    (lambda b: b["request"]["contents"].append(user("again")), 400, "alternate between user and model"),
    (lambda b: b["request"]["contents"].insert(0, {"role": "model", "parts": [{"text": "hi"}]}), 400,
     "start with a user turn"),
    (lambda b: b["request"]["contents"][0]["parts"].append({"text": "a", "inlineData": {}}), 400, "oneof"),
    (lambda b: b["request"]["contents"][0]["parts"][0].update(cache_control={}), 400, 'Unknown name "cache_control"'),
    (lambda b: b["request"].update(tools=[{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "object", "additionalProperties": False}}]}]), 400, "additionalProperties"),
    (lambda b: b["request"]["contents"][0]["parts"].append({"inlineData": {"mimeType": "image/png",
                                                                           "data": "!!!"}}), 400, "Base64"),
])
def test_v1internal_validation(client: httpx.Client, change: Any, status: int, needle: str) -> None:
    body = envelope([user("hi")])
    change(body)
    r = post(client, "generateContent", body, bearer(client))
    err = google_error(r, status, "INVALID_ARGUMENT" if status == 400 else "NOT_FOUND")
    assert needle in err["message"]


def test_function_response_must_answer_previous_call(client: httpx.Client) -> None:
    contents = [user("go"), {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "b", "response": {}}}]}]
    r = post(client, "generateContent", envelope(contents), bearer(client))
    assert "answers no function call" in google_error(r, 400, "INVALID_ARGUMENT")["message"]


def test_count_tokens(client: httpx.Client) -> None:
    body = {"request": {"model": "models/gemini-2.5-flash", "contents": [user("count these words")]}}
    r = post(client, "countTokens", body, bearer(client))
    assert r.json() == {"totalTokens": estimate_tokens("count these words")}


def test_tool_call_round_trip_with_signature_check(client: httpx.Client) -> None:
    """The functionCall carries a signature; sending it back without one is refused on Gemini 3."""
    headers = bearer(client)
    first = [user(CALL_TEXT)]
    r = post(client, "generateContent", envelope(first, "gemini-3.1-pro-high", tools=WEATHER_GEMINI), headers)
    part = answer_parts(r)[0]
    assert part["functionCall"]["name"] == "get_weather" and part["functionCall"]["args"] == {"city": "Paris"}
    assert part["functionCall"]["id"].startswith("call-") and part["thoughtSignature"]

    def follow_up(model_part: dict[str, Any], model: str = "gemini-3.1-pro-high") -> httpx.Response:
        contents = first + [{"role": "model", "parts": [model_part]},
                            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                                             "response": {"temp": 21}}}]}]
        return post(client, "generateContent", envelope(contents, model, tools=WEATHER_GEMINI), headers)

    ok = follow_up(part)
    assert gemini_text([ok.json()["response"]]) == 'tool result: {"temp":21}'
    assert follow_up(part, "gemini-pro-agent").status_code == 200  # the same family
    unsigned = {"functionCall": part["functionCall"]}
    r = follow_up(unsigned)
    assert "missing a thought_signature" in google_error(r, 400, "INVALID_ARGUMENT")["message"]
    assert follow_up(unsigned, "gemini-pro-agent").status_code == 400
    assert follow_up({**unsigned, "thoughtSignature": "Zm9yZ2Vk"}).status_code == 400
    assert follow_up({**unsigned, "thoughtSignature": BYPASS_SIGNATURE}).status_code == 200


def test_quota_exhausted_until_reset(sim: SimUpstream, client: httpx.Client) -> None:
    sim.set_quota("alice@example.com", "gemini-3.1-pro-high", remainingFraction=0, resetTime="2099-01-01T00:00:00Z")
    r = post(client, "generateContent", envelope([user("hi")], "gemini-3.1-pro-high"), bearer(client))
    info = google_error(r, 429, "RESOURCE_EXHAUSTED")["details"][0]
    assert info["reason"] == "QUOTA_EXHAUSTED" and info["metadata"]["quotaResetTimeStamp"] == "2099-01-01T00:00:00Z"
    assert post(client, "generateContent", envelope([user("hi")], "gemini-3.1-pro-low"), bearer(client)).is_success


# --------------------------------------------------------------------------- client identity


@pytest.mark.parametrize("headers", [
    client_headers(),
    client_headers("4.10.2", "darwin"),
    client_headers("5.0.0", "win32"),
    {"user-agent": "antigravity/hub/2.9.0 darwin/arm64"},
    {"user-agent": "antigravity/hub/3.1.4 linux/amd64", "x-client-name": "whatever"},
], ids=["4.3.0", "4.10.2-darwin", "5.0.0-win32", "hub-2.9.0", "hub-3.1.4"])
def test_current_clients_are_served(client: httpx.Client, headers: dict[str, str]) -> None:
    auth = token_only(client)
    r = post(client, "generateContent", envelope([user("hi")]), {**auth, **headers})
    assert gemini_text([r.json()["response"]]) == "echo: hi"
    assert post(client, "loadCodeAssist", LOAD, {**auth, **headers}).json()["cloudaicompanionProject"] == "proj-1"


OUTDATED = {
    "no-user-agent": {"user-agent": ""},
    "switchyard": {"user-agent": "switchyard/0.1.0"},
    "python": {"user-agent": "python-httpx/0.28.1"},
    "older": client_headers("4.2.9"),
    "no-client-name": {k: v for k, v in client_headers().items() if k != "x-client-name"},
    "version-mismatch": {**client_headers(), "x-client-version": "4.4.0"},
    "no-platform": {**client_headers(), "user-agent": "Antigravity/4.3.0 Chrome/132.0.6834.160 Electron/39.2.3"},
    "old-hub": {"user-agent": "antigravity/hub/2.8.9 darwin/arm64"},
}


@pytest.mark.parametrize("headers", OUTDATED.values(), ids=OUTDATED.keys())
def test_outdated_clients_get_the_text_for_generation(sim: SimUpstream, client: httpx.Client,
                                                      headers: dict[str, str]) -> None:
    sim.settings(events=4)
    auth = {**token_only(client), **headers}
    r = post(client, "generateContent", envelope([user("hi")], CLAUDE), auth)
    resp = r.json()["response"]
    assert resp["candidates"][0]["content"]["parts"] == [{"text": OUTDATED_TEXT}]
    assert resp["candidates"][0]["finishReason"] == "STOP" and resp["usageMetadata"]["candidatesTokenCount"] > 0
    r = post(client, "streamGenerateContent", envelope([user("hi")]), auth, alt="sse")
    docs = [d["response"] for d in sse_data(r.text)]
    assert len(docs) == 4 and gemini_text(docs) == OUTDATED_TEXT
    assert docs[-1]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in docs[-1]


@pytest.mark.parametrize("headers", [OUTDATED["switchyard"], OUTDATED["older"]], ids=["switchyard", "older"])
def test_outdated_clients_are_refused_housekeeping_and_count(client: httpx.Client, headers: dict[str, str]) -> None:
    auth = {**token_only(client), **headers}
    calls = [("loadCodeAssist", LOAD), ("onboardUser", ONBOARD), ("fetchAvailableModels", {"project": "proj-1"}),
             ("countTokens", {"request": {"model": "models/gemini-2.5-flash", "contents": [user("x")]}})]
    for method, body in calls:
        err = google_error(post(client, method, body, auth), 400, "FAILED_PRECONDITION")
        assert err["message"] == OUTDATED_TEXT, method


def test_outdated_reply_error_and_version_floor(sim: SimUpstream, client: httpx.Client) -> None:
    sim.settings(outdated_reply="error")
    auth = {**token_only(client), **OUTDATED["older"]}
    for method in ("generateContent", "streamGenerateContent"):
        err = google_error(post(client, method, envelope([user("hi")]), auth), 400, "FAILED_PRECONDITION")
        assert err["message"] == OUTDATED_TEXT
    assert post(client, "generateContent", envelope([user("hi")]), bearer(client)).is_success
    sim.settings(min_client_version="4.4.0")
    assert google_error(post(client, "generateContent", envelope([user("hi")]), bearer(client)), 400,
                        "FAILED_PRECONDITION")
    assert post(client, "generateContent", envelope([user("hi")]), {**token_only(client),
                                                                    **client_headers("4.4.0")}).is_success
    for bad_setting in ({"outdated_reply": "maybe"}, {"min_client_version": "4.3"}):
        with pytest.raises(ValueError):
            sim.settings(**bad_setting)


# --------------------------------------------------------------------------- projects and onboarding


def test_onboarding_a_new_account(sim: SimUpstream, client: httpx.Client) -> None:
    sim.add_google_account("rt-new", "new@example.com", "proj-new", onboarded=False, onboard_polls=2)
    headers = bearer(client, "rt-new")
    loaded = post(client, "loadCodeAssist", LOAD, headers).json()
    assert "cloudaicompanionProject" not in loaded and "currentTier" not in loaded
    tiers = loaded["allowedTiers"]
    assert [t["id"] for t in tiers] == ["free-tier", "standard-tier"] and tiers[0]["isDefault"] is True
    err = google_error(post(client, "generateContent", envelope([user("hi")], project="proj-new"), headers), 403,
                       "PERMISSION_DENIED")
    assert err["details"][0]["reason"] == "IAM_PERMISSION_DENIED"
    assert "tier_id" in google_error(post(client, "onboardUser", {**ONBOARD, "tier_id": "gold-tier"}, headers), 400,
                                     "INVALID_ARGUMENT")["message"]
    assert "metadata" in google_error(post(client, "onboardUser", {"tier_id": "free-tier"}, headers), 400,
                                      "INVALID_ARGUMENT")["message"]
    polls = [post(client, "onboardUser", ONBOARD, headers).json() for _ in range(3)]
    assert [p["done"] for p in polls] == [False, False, True]
    assert polls[0]["name"] == polls[2]["name"] and polls[0]["name"].startswith("operations/")
    assert polls[2]["response"]["cloudaicompanionProject"] == {"id": "proj-new", "name": "proj-new"}
    loaded = post(client, "loadCodeAssist", LOAD, headers).json()
    assert loaded["cloudaicompanionProject"] == "proj-new" and loaded["currentTier"]["id"] == "free-tier"
    assert post(client, "generateContent", envelope([user("hi")], project="proj-new"), headers).is_success
    assert next(a for a in sim.google_accounts() if a["email"] == "new@example.com")["onboarded"] is True


def test_onboarding_takes_camel_case_and_the_other_tier(sim: SimUpstream, client: httpx.Client) -> None:
    sim.add_google_account("rt-camel", "camel@example.com", None, onboarded=False)
    headers = bearer(client, "rt-camel")
    done = post(client, "onboardUser", {"tierId": "standard-tier", "metadata": {"ideType": "ANTIGRAVITY"}},
                headers).json()
    project = done["response"]["cloudaicompanionProject"]["id"]
    assert done["done"] is True and project.startswith("sim-project-")
    assert post(client, "loadCodeAssist", LOAD, headers).json()["currentTier"]["id"] == "standard-tier"


def test_generation_needs_the_accounts_own_project(sim: SimUpstream, client: httpx.Client) -> None:
    sim.add_google_account("rt-bob", "bob@example.com", "proj-bob")
    headers = bearer(client)
    for project in ("", "proj-bob", "someone-else"):
        body = envelope([user("hi")], project=project)
        if not project:
            del body["project"]
        err = google_error(post(client, "generateContent", body, headers), 403, "PERMISSION_DENIED")
        info = err["details"][0]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["reason"] == "IAM_PERMISSION_DENIED"
        assert info["metadata"]["resource"] == f"projects/{project}/locations/global"
    assert post(client, "generateContent", envelope([user("hi")]), headers).is_success


def test_models_take_no_project_or_the_own_one(client: httpx.Client) -> None:
    headers = bearer(client)
    assert post(client, "fetchAvailableModels", {}, headers).json()["models"]
    assert post(client, "fetchAvailableModels", {"project": "proj-1"}, headers).json()["models"]
    google_error(post(client, "fetchAvailableModels", {"project": "proj-2"}, headers), 403, "PERMISSION_DENIED")


def test_demo_accounts_need_one_onboarding(server: SimUpstream, client: httpx.Client) -> None:
    server.reset()
    server.add_demo_accounts()
    headers = bearer(client, "sim-demo-refresh-2")
    assert "cloudaicompanionProject" not in post(client, "loadCodeAssist", LOAD, headers).json()
    assert [post(client, "onboardUser", ONBOARD, headers).json()["done"] for _ in range(2)] == [False, True]
    assert post(client, "loadCodeAssist", LOAD, headers).json()["cloudaicompanionProject"]
    first = post(client, "loadCodeAssist", LOAD, bearer(client, "sim-demo-refresh-1")).json()
    assert first["cloudaicompanionProject"] == "demo-project-1"


# --------------------------------------------------------------------------- catalogue


def test_catalogue_of_today(client: httpx.Client) -> None:
    answer = post(client, "fetchAvailableModels", {"project": "proj-1"}, bearer(client)).json()
    models = answer["models"]
    assert list(models) == [*DEFAULT_GOOGLE_MODELS, *INTERNAL]
    assert set(DEFAULT_GOOGLE_MODELS) == {
        "claude-opus-4-6-thinking", "claude-sonnet-4-6", "gemini-3.1-pro-high", "gemini-3.1-pro-low",
        "gemini-pro-agent", "gemini-3-flash", "gemini-3.1-flash-image", "gemini-2.5-flash", "gpt-oss-120b-medium"}
    assert set(INTERNAL) == {"chat_20706", "chat_23310", "tab_flash_lite_preview"}
    opus = models["claude-opus-4-6-thinking"]
    assert opus["displayName"] == "Claude Opus 4.6 (Thinking)" and opus["maxOutputTokens"] == 64000
    assert opus["modelProvider"] == "MODEL_PROVIDER_ANTHROPIC" and opus["supportsThinking"] is True
    assert models["gemini-pro-agent"]["displayName"] == "Gemini 3.1 Pro (High)"
    assert models["gemini-3.1-flash-image"]["maxOutputTokens"] == 32768
    assert models["gemini-3-flash"]["maxOutputTokens"] == 65536
    assert models["gpt-oss-120b-medium"]["modelProvider"] == "MODEL_PROVIDER_OPENAI"
    for name, entry in models.items():
        assert set(entry) == {"displayName", "maxTokens", "maxOutputTokens", "quotaInfo", "supportsThinking",
                              "supportsImages", "recommended", "modelProvider"}, name
        assert entry["quotaInfo"]["remainingFraction"] == 1.0 and entry["quotaInfo"]["resetTime"]
        assert entry["maxOutputTokens"] == (CATALOGUE.get(name) or INTERNAL[name]).max_output
    assert answer["deprecatedModelIds"] == {
        "claude-sonnet-4-5": {"newModelId": "claude-sonnet-4-6"},
        "claude-opus-4-5-thinking": {"newModelId": "claude-opus-4-6-thinking"},
        "gemini-3-pro-high": {"newModelId": "gemini-3.1-pro-high"},
        "gemini-3-pro-low": {"newModelId": "gemini-3.1-pro-low"},
        "gemini-2.5-pro": {"newModelId": "gemini-3.1-pro-high"}}


@pytest.mark.parametrize("model", ["chat_20706", "tab_flash_lite_preview", *DEPRECATED, "gemini-9-ultra"])
def test_names_not_servable_are_404(client: httpx.Client, model: str) -> None:
    headers = bearer(client)
    err = google_error(post(client, "generateContent", envelope([user("hi")], model), headers), 404, "NOT_FOUND")
    assert model in err["message"]
    body = {"request": {"model": f"models/{model}", "contents": [user("x")]}}
    google_error(post(client, "countTokens", body, headers), 404, "NOT_FOUND")


@pytest.mark.parametrize(("model", "limit"), [("gemini-3.1-flash-image", 32768), ("claude-sonnet-4-6", 64000),
                                              ("gemini-2.5-flash", 65535)])
def test_max_output_tokens_above_the_model_limit(client: httpx.Client, model: str, limit: int) -> None:
    headers = bearer(client)
    request_type = "image_gen" if "-image" in model else "agent"  # image models are served as image_gen
    body = envelope([user("hi")], model, generationConfig={"maxOutputTokens": limit})
    ok = post(client, "generateContent", {**body, "requestType": request_type}, headers)
    assert ok.status_code == 200, ok.text
    snake = envelope([user("hi")], model, generation_config={"max_output_tokens": limit + 1})
    r = post(client, "generateContent", {**snake, "requestType": request_type}, headers)
    assert google_error(r, 400, "INVALID_ARGUMENT")["message"] == (
        f"The requested maxOutputTokens {limit + 1} exceeds the model limit {limit}")


def test_models_argument_sets_the_catalogue(sim: SimUpstream, client: httpx.Client) -> None:
    sim.add_google_account("rt-custom", "custom@example.com", "proj-c", models={
        "marker-model": {"maxOutputTokens": 100, "displayName": "Marker"}, "claude-sonnet-4-6": {}})
    headers = bearer(client, "rt-custom")
    models = post(client, "fetchAvailableModels", {}, headers).json()["models"]
    assert list(models) == ["marker-model", "claude-sonnet-4-6", *INTERNAL]
    assert models["marker-model"]["displayName"] == "Marker" and models["marker-model"]["maxOutputTokens"] == 100
    assert models["claude-sonnet-4-6"]["maxOutputTokens"] == 64000

    def gen(model: str, max_out: int) -> httpx.Response:
        return post(client, "generateContent", envelope([user("hi")], model, "proj-c",
                                                        generationConfig={"maxOutputTokens": max_out}), headers)
    assert gen("marker-model", 100).status_code == 200
    assert gen("marker-model", 101).status_code == 400
    assert gen("gemini-2.5-flash", 100).status_code == 404
    with pytest.raises(ValueError):
        sim.add_google_account("rt-bad", models={"m": {"maxOutputToken": 5}})


# --------------------------------------------------------------------------- Claude models


@pytest.fixture
def claude_loop(client: httpx.Client) -> Loop:
    """A valid open tool loop for the Claude thinking model (its model turn as the sim answered it),
    and one signature of each family."""
    headers = bearer(client)
    first = envelope([user(CALL_TEXT)], CLAUDE, tools=WEATHER_GEMINI, toolConfig=VALIDATED, generationConfig=THINKING)
    thought, call = answer_parts(post(client, "generateContent", first, headers))
    gemini = answer_parts(post(client, "generateContent", envelope([user("[[think]] x")], "gemini-3-flash"),
                               headers))[0]["thoughtSignature"]
    openai = answer_parts(post(client, "generateContent", envelope([user("[[think]] x")], "gpt-oss-120b-medium"),
                               headers))[0]["thoughtSignature"]
    body = copy.deepcopy(first)
    body["request"]["contents"] += [
        {"role": "model", "parts": [thought, call]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "id": call["functionCall"]["id"],
                                                         "response": {"temp": 21}}}]}]
    return headers, body, {"claude": thought["thoughtSignature"], "gemini": gemini, "openai": openai}


def test_claude_answers_ids_and_signed_thoughts(client: httpx.Client, claude_loop: Loop) -> None:
    headers, body, sigs = claude_loop
    thought, call = body["request"]["contents"][1]["parts"]
    assert thought["thought"] is True and thought["text"] and sigs["claude"] not in (sigs["gemini"], sigs["openai"])
    assert call["functionCall"]["id"].startswith("toolu_vrtx_") and len(call["functionCall"]["id"]) > 20
    assert "thoughtSignature" not in call
    parts = answer_parts(post(client, "generateContent", body, headers))
    assert parts[0]["thought"] is True and parts[0]["thoughtSignature"]
    assert parts[1] == {"text": 'tool result: {"temp":21}'}
    r = post(client, "streamGenerateContent", body, headers, alt="sse")
    docs = [d["response"] for d in sse_data(r.text)]
    assert docs[0]["candidates"][0]["content"]["parts"][0]["thought"] is True
    assert gemini_text(docs) == 'tool result: {"temp":21}'


def calls_turn(b: dict[str, Any]) -> list[dict[str, Any]]:
    return b["request"]["contents"][1]["parts"]


def tool_params(b: dict[str, Any]) -> dict[str, Any]:
    return b["request"]["tools"][0]["functionDeclarations"][0]


def gen_config(b: dict[str, Any]) -> dict[str, Any]:
    return b["request"]["generationConfig"]


def json_schema(b: dict[str, Any], schema: dict[str, Any]) -> None:
    decl = tool_params(b)
    decl.pop("parameters")
    decl["parametersJsonSchema"] = schema


Mutation = Callable[[dict[str, Any], dict[str, str]], Any]
CLAUDE_REFUSALS: dict[str, tuple[Mutation, str]] = {
    "call-without-id": (lambda b, s: calls_turn(b)[1]["functionCall"].pop("id"),
                        "messages.1.content.1.tool_use.id: Field required"),
    "response-without-id": (lambda b, s: b["request"]["contents"][2]["parts"][0]["functionResponse"].pop("id"),
                            "messages.2.content.0.tool_result.tool_use_id: Field required"),
    "response-id-unknown": (lambda b, s: b["request"]["contents"][2]["parts"][0]["functionResponse"].update(
        id="toolu_vrtx_nope"), "unexpected `tool_use_id` found in `tool_result` blocks: toolu_vrtx_nope"),
    "schema-format": (lambda b, s: tool_params(b)["parameters"]["properties"]["city"].update(format="email"),
                      "`format` at #/properties/city"),
    "schema-deep-minLength": (lambda b, s: tool_params(b)["parameters"]["properties"].update(tags={
        "type": "array", "items": {"type": "string", "minLength": 1}}), "`minLength` at #/properties/tags/items"),
    "schema-default": (lambda b, s: tool_params(b)["parameters"]["properties"]["city"].update(default="Paris"),
                       "`default`"),
    "schema-ref": (lambda b, s: json_schema(b, {"type": "object", "properties": {"city": {"$ref": "#/$defs/c"}}}),
                   "`$ref` at #/properties/city"),
    "schema-additionalProperties": (lambda b, s: json_schema(b, {"type": "object", "additionalProperties": False}),
                                    "`additionalProperties`"),
    "schema-anyOf-const": (lambda b, s: json_schema(b, {"type": "object", "properties": {"u": {"anyOf": [
        {"const": "c"}, {"type": "string"}]}}}), "`const` at #/properties/u/anyOf/0"),
    "schema-x-key": (lambda b, s: json_schema(b, {"type": "object", "x-google-enum-descriptions": []}),
                     "`x-google-enum-descriptions`"),
    "mode-missing": (lambda b, s: b["request"].pop("toolConfig"), "mode VALIDATED (got unset)"),
    "mode-auto": (lambda b, s: b["request"].update(toolConfig={"functionCallingConfig": {"mode": "AUTO"}}),
                  "mode VALIDATED (got AUTO)"),
    "thinking-level": (lambda b, s: gen_config(b).update(thinkingConfig={"thinkingLevel": "high",
                                                                         "includeThoughts": True}), "thinkingLevel"),
    "budget-512": (lambda b, s: gen_config(b)["thinkingConfig"].update(thinkingBudget=512),
                   "greater than or equal to 1024 (got 512)"),
    "budget-auto": (lambda b, s: gen_config(b)["thinkingConfig"].update(thinkingBudget=-1), "-1"),
    "max-tokens-missing": (lambda b, s: gen_config(b).pop("maxOutputTokens"),
                           "`max_tokens` must be greater than `thinking.budget_tokens`"),
    "max-tokens-equal": (lambda b, s: gen_config(b).update(maxOutputTokens=2048),
                         "`max_tokens` must be greater than `thinking.budget_tokens`"),
    "thought-unsigned": (lambda b, s: calls_turn(b)[0].pop("thoughtSignature"),
                         "messages.1.content.0.thinking.signature: Field required"),
    "thought-gemini-signed": (lambda b, s: calls_turn(b)[0].update(thoughtSignature=s["gemini"]),
                              "messages.1.content.0: Invalid `signature` in `thinking` block"),
    "thought-openai-signed": (lambda b, s: calls_turn(b)[0].update(thoughtSignature=s["openai"]),
                              "Invalid `signature` in `thinking` block"),
    "thought-forged": (lambda b, s: calls_turn(b)[0].update(thoughtSignature="Zm9yZ2Vk"),
                       "Invalid `signature` in `thinking` block"),
    "thought-placeholder": (lambda b, s: calls_turn(b)[0].update(thoughtSignature=BYPASS_SIGNATURE),
                            "Invalid `signature` in `thinking` block"),
    "call-placeholder": (lambda b, s: calls_turn(b)[1].update(thoughtSignature=BYPASS_SIGNATURE),
                         "messages.1.content.1: Invalid `signature` in `thinking` block"),
    "call-gemini-signed": (lambda b, s: calls_turn(b)[1].update(thoughtSignature=s["gemini"]),
                           "messages.1.content.1: Invalid `signature` in `thinking` block"),
    "text-gemini-signed": (lambda b, s: b["request"]["contents"][0]["parts"][0].update(thoughtSignature=s["gemini"]),
                           "messages.0.content.0: Invalid `signature` in `thinking` block"),
    "open-loop-no-thought": (lambda b, s: calls_turn(b).pop(0),
                             "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found"
                             " `tool_use`"),
    "open-loop-text-first": (lambda b, s: calls_turn(b).__setitem__(0, {"text": "let me check"}),
                             "but found `text`"),
}


@pytest.mark.parametrize("case", CLAUDE_REFUSALS, ids=list(CLAUDE_REFUSALS))
def test_claude_refusals(client: httpx.Client, claude_loop: Loop, case: str) -> None:
    headers, body, sigs = claude_loop
    mutate, needle = CLAUDE_REFUSALS[case]
    mutate(body, sigs)
    err = google_error(post(client, "generateContent", body, headers), 400, "INVALID_ARGUMENT")
    assert needle in err["message"]


CLAUDE_ACCEPTS: dict[str, Mutation] = {
    "as-answered": lambda b, s: None,
    "thinking-off-without-thought": lambda b, s: (b["request"].pop("generationConfig"), calls_turn(b).pop(0)),
    "budget-0-without-thought": lambda b, s: (gen_config(b)["thinkingConfig"].update(thinkingBudget=0),
                                              calls_turn(b).pop(0)),
    "budget-1024": lambda b, s: gen_config(b)["thinkingConfig"].update(thinkingBudget=1024),
    "include-thoughts-only-is-off": lambda b, s: (gen_config(b).update(thinkingConfig={"includeThoughts": True}),
                                                  gen_config(b).pop("maxOutputTokens"), calls_turn(b).pop(0)),
    "call-claude-signed": lambda b, s: calls_turn(b)[1].update(thoughtSignature=s["claude"]),
    "property-named-like-keywords": lambda b, s: tool_params(b)["parameters"]["properties"].update(
        pattern={"type": "string"}, format={"type": "string", "enum": ["a", "b"]}, default={"type": "string"}),
    "plain-json-schema": lambda b, s: json_schema(b, {"type": "object", "title": "w", "properties": {
        "city": {"type": "string", "description": "d"}, "n": {"type": ["integer", "null"]}}, "required": ["city"]}),
    "no-tools-no-mode": lambda b, s: (b["request"].pop("tools"), b["request"].pop("toolConfig")),
}


@pytest.mark.parametrize("case", CLAUDE_ACCEPTS, ids=list(CLAUDE_ACCEPTS))
def test_claude_accepts(client: httpx.Client, claude_loop: Loop, case: str) -> None:
    headers, body, sigs = claude_loop
    CLAUDE_ACCEPTS[case](body, sigs)
    parts = answer_parts(post(client, "generateContent", body, headers))
    assert parts[-1] == {"text": 'tool result: {"temp":21}'}


def test_claude_thinking_answers_only_when_on(client: httpx.Client) -> None:
    headers = bearer(client)
    on = envelope([user("hi")], "claude-sonnet-4-6", generationConfig=THINKING)
    parts = answer_parts(post(client, "generateContent", on, headers))
    assert parts[0]["thought"] is True and parts[0]["thoughtSignature"] and parts[1] == {"text": "echo: hi"}
    off = envelope([user("hi")], "claude-sonnet-4-6", generationConfig={"thinkingConfig": {"includeThoughts": True}})
    assert answer_parts(post(client, "generateContent", off, headers)) == [{"text": "echo: hi"}]


# --------------------------------------------------------------------------- signatures belong to families


def test_signatures_cross_transports_within_a_family(client: httpx.Client,
                                                     claude_loop: tuple[dict[str, str], dict[str, Any],
                                                                        dict[str, str]]) -> None:
    headers, body, sigs = claude_loop
    # An Anthropic key's Claude signature serves Claude on Cloud Code, and the other way round.
    ant = client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={
        "model": "claude-sonnet-4-5", "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "hi"}]}).json()["content"][0]
    calls_turn(body)[0]["thoughtSignature"] = ant["signature"]
    assert post(client, "generateContent", body, headers).status_code == 200

    def anthropic_follow_up(signature: str) -> httpx.Response:
        return client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={
            "model": "claude-sonnet-4-5", "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t", "signature": signature}, {"type": "text", "text": "x"}]},
                {"role": "user", "content": "again"}]})
    assert anthropic_follow_up(sigs["claude"]).status_code == 200
    assert "Invalid `signature`" in anthropic_follow_up(sigs["gemini"]).json()["error"]["message"]

    # A Gemini key's signature serves Gemini on Cloud Code, and the other way round; Claude's serves neither.
    key = {"x-goog-api-key": GOOGLE_KEY}
    first = [user(CALL_TEXT)]
    via_key = client.post("/v1beta/models/gemini-3-pro-preview:generateContent", headers=key,
                          json={"contents": first, "tools": WEATHER_GEMINI}).json()
    key_call = via_key["candidates"][0]["content"]["parts"][0]
    cc_call = answer_parts(post(client, "generateContent", envelope(first, "gemini-3-flash", tools=WEATHER_GEMINI),
                                headers))[0]

    def loop(call: dict[str, Any]) -> list[dict[str, Any]]:
        return first + [{"role": "model", "parts": [call]}, {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}]
    assert post(client, "generateContent", envelope(loop(key_call), "gemini-3-flash", tools=WEATHER_GEMINI),
                headers).status_code == 200
    assert client.post("/v1beta/models/gemini-3-pro-preview:generateContent", headers=key,
                       json={"contents": loop(cc_call), "tools": WEATHER_GEMINI}).status_code == 200
    claude_signed = {**cc_call, "thoughtSignature": sigs["claude"]}
    r = post(client, "generateContent", envelope(loop(claude_signed), "gemini-3-flash", tools=WEATHER_GEMINI), headers)
    assert google_error(r, 400, "INVALID_ARGUMENT")["message"] == "Corrupted thought signature."
    r = client.post("/v1beta/models/gemini-3-pro-preview:generateContent", headers=key,
                    json={"contents": loop(claude_signed), "tools": WEATHER_GEMINI})
    assert r.json()["error"]["message"] == "Corrupted thought signature."


# --------------------------------------------------------------------------- rules: a 200 carrying an error


def test_error200_carries_the_error(sim: SimUpstream, client: httpx.Client) -> None:
    headers = bearer(client)
    sim.behave("error200", match={"model": "gemini-3-flash"}, times=3, rpc="FAILED_PRECONDITION",
               message=OUTDATED_TEXT)
    body = envelope([user("hi")], "gemini-3-flash")
    r = post(client, "generateContent", body, headers)
    assert r.status_code == 200
    assert r.json() == {"error": {"code": 400, "message": OUTDATED_TEXT, "status": "FAILED_PRECONDITION"}}
    r = post(client, "streamGenerateContent", body, headers, alt="sse")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert sse_data(r.text) == [{"error": {"code": 400, "message": OUTDATED_TEXT, "status": "FAILED_PRECONDITION"}}]
    r = post(client, "streamGenerateContent", body, headers)
    assert r.json() == [{"error": {"code": 400, "message": OUTDATED_TEXT, "status": "FAILED_PRECONDITION"}}]
    assert [e["action"] for e in sim.log("google")][-3:] == ["error200"] * 3
    assert post(client, "generateContent", body, headers).json()["response"]  # times used up

    sim.behave("error200", match={"model": "gemini-3-flash"}, times=1)
    err = post(client, "generateContent", body, headers).json()["error"]
    assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT" and err["message"]
    sim.behave("error200", match={"model": "gemini-3-flash"}, times=1, status=429, reason="QUOTA_EXHAUSTED",
               quota_reset_delay="1h2m3s", retry_delay="3723s")
    err = post(client, "generateContent", body, headers).json()["error"]
    assert err["code"] == 429 and err["status"] == "RESOURCE_EXHAUSTED"
    info = err["details"][0]
    assert info["reason"] == "QUOTA_EXHAUSTED" and info["metadata"]["quotaResetDelay"] == "1h2m3s"
    assert err["details"][1]["retryDelay"] == "3723s" and "1h2m3s" in err["message"]
    for bad in ({"status": 418}, {"status": "400"}):
        with pytest.raises(ValueError):
            sim.behave("error200", **bad)
    with pytest.raises(ValueError):
        sim.behave("429", status=429)


def test_error200_in_the_other_dialects(sim: SimUpstream, client: httpx.Client) -> None:
    sim.behave("error200", match={"kind": "anthropic"}, status=529, message="Overloaded")
    r = client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={
        "model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    assert r.text == ('event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                      '"message":"Overloaded"}}\n\n')
    sim.behave("error200", match={"kind": "gemini"}, status=503)
    r = client.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent", params={"alt": "sse"},
                    headers={"x-goog-api-key": GOOGLE_KEY}, json={"contents": [user("x")]})
    assert r.status_code == 200 and sse_data(r.text)[0]["error"]["status"] == "UNAVAILABLE"


def test_rpc_status_and_message_only_hints_on_error_actions(sim: SimUpstream, client: httpx.Client) -> None:
    headers = bearer(client)
    sim.behave("400", times=1, rpc="FAILED_PRECONDITION", message=OUTDATED_TEXT)
    err = google_error(post(client, "generateContent", envelope([user("hi")]), headers), 400, "FAILED_PRECONDITION")
    assert err["message"] == OUTDATED_TEXT and "details" not in err
    sim.behave("429", times=1, message="Resource exhausted. Your quota will reset after 1h2m3s.")
    err = google_error(post(client, "generateContent", envelope([user("hi")]), headers), 429, "RESOURCE_EXHAUSTED")
    assert err["message"].endswith("reset after 1h2m3s.")
    assert "quotaResetDelay" not in err["details"][0].get("metadata", {})


def test_refusal_table_is_consistent() -> None:
    """Every rule has a Google RPC status that fits its HTTP status, and a template that formats."""
    fits = {400: {"INVALID_ARGUMENT", "FAILED_PRECONDITION"}, 401: {"UNAUTHENTICATED"}, 403: {"PERMISSION_DENIED"},
            404: {"NOT_FOUND"}, 429: {"RESOURCE_EXHAUSTED"}}
    for name, r in REFUSALS.items():
        assert r.rpc in fits[r.status], name
        fields = {f: "x" for f in ("where", "value", "name", "at", "field", "kind", "role", "calls", "responses",
                                   "position", "method", "tier", "allowed", "project", "permission", "model", "asked",
                                   "limit", "delay", "id", "keyword", "path", "tool", "mode", "level", "budget",
                                   "index", "found", "error", "expected", "count")}
        assert r.message.format(**fields), name
