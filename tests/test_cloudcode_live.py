"""A real gateway in front of the simulated Cloud Code, which refuses what the live service
refuses (../shared/UPSTREAM-FACTS.md): a new account is onboarded on its first request, an
outdated client is told to the user without cooling anything, refusals hidden in a 200 move the
request on, a conversation keeps one sessionId, output limits hold, and a history signed by
another model family reaches a Claude model in a form it takes."""

from __future__ import annotations

import json
import time
import uuid

import anthropic
import httpx
import openai
import pytest
from google.genai import types

from simupstream import OUTDATED_TEXT

MODEL = "gemini-3-flash"
CLAUDE = "claude-sonnet-4-6"


def google_calls(sim, email: str, method: str) -> list[dict]:
    return [e for e in sim.log("google") if e["account"] == email and e["path"].endswith(f":{method}")]


def rows(gateway) -> dict[str, dict]:
    return {row["id"]: row for row in gateway.accounts()}


# --- an account as Google hands it out ------------------------------------------------------


def test_a_never_onboarded_account_serves_its_first_request(make_gateway, sim):
    gateway = make_gateway(start=False)
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    account = gateway.add_google(email, onboarded=False, onboard_polls=1)
    gateway.start()
    answer = gateway.openai().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "first words"}]
    )
    assert answer.status_code == 200 and answer.parse().choices[0].message.content == "echo: first words"
    assert answer.headers["x-switchyard-account"] == account
    onboards = google_calls(sim, email, "onboardUser")
    assert [e["status"] for e in onboards] == [200, 200]  # "not done", then done
    project = next(a for a in sim.google_accounts() if a["email"] == email)["project"]
    row = rows(gateway)[account]
    assert row["project"] == project
    # every generation named the project onboarding gave
    assert [e["status"] for e in google_calls(sim, email, "streamGenerateContent")] == [200]


def test_an_outdated_client_version_is_told_to_the_caller_and_cools_nothing(make_gateway, sim):
    gateway = make_gateway(start=False)
    first = gateway.add_google(project="sim-fixed-1")
    second = gateway.add_google(project="sim-fixed-2")
    gateway.start()
    client = gateway.openai()
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "warm"}]).choices
    sim.settings(min_client_version="99.0.0")  # Google stops serving the gateway's version
    for reply, stream in (("text", False), ("text", True), ("error", False)):
        sim.settings(outdated_reply=reply)
        before = len([e for e in sim.log("google") if "enerateContent" in e["path"]])
        with pytest.raises(openai.APIStatusError) as caught:
            response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=stream)
            list(response) if stream else None
        assert caught.value.status_code == 502
        message = str(caught.value)
        assert "client_version" in message and "4.3.0" in message and "no longer supported" in message
        after = [e for e in sim.log("google") if "enerateContent" in e["path"]][before:]
        assert len(after) == 1  # no other account tried: they all share the identity
    listed = rows(gateway)
    for account in (first, second):
        assert listed[account]["cooldowns"] == {} and listed[account]["cooldown_until"] is None
    tried = [listed[a] for a in (first, second) if listed[a]["last_error"]]
    assert tried and all(r["last_error"]["error_class"] == "client_outdated" for r in tried)
    text = gateway.cli("accounts", "list").stdout
    assert "client_outdated" in text and "raise [upstreams.antigravity] client_version" in text
    sim.settings(min_client_version="4.3.0")  # Google serves it again: nothing was parked
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "back"}]).choices


def test_a_refusal_inside_a_200_moves_the_request_to_the_next_account(make_gateway, sim):
    gateway = make_gateway(start=False)
    bad_mail, good_mail = f"bad-{uuid.uuid4().hex[:6]}@example.com", f"good-{uuid.uuid4().hex[:6]}@example.com"
    bad = gateway.add_google(bad_mail)
    good = gateway.add_google(good_mail)
    gateway.start()
    sim.behave("error200", {"account": bad_mail}, status=429, reason="RATE_LIMIT_EXCEEDED", retry_delay="40s")
    client = gateway.openai()
    for stream in (False, True, False):
        response = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"x {stream}"}], stream=stream
        )
        assert response.status_code == 200 and response.headers["x-switchyard-account"] == good
        response.parse()
    row = rows(gateway)[bad]
    cooldown = row["cooldowns"][MODEL]
    assert cooldown["error_class"] == "rate_limit" and 30 < cooldown["until"] - time.time() <= 40
    assert "inside a 200" in row["last_error"]["message"]


# --- the envelope ---------------------------------------------------------------------------------


def test_a_conversation_keeps_one_session_id_and_another_gets_its_own(make_gateway, sim):
    gateway = make_gateway(start=False)
    email = f"s-{uuid.uuid4().hex[:6]}@example.com"
    gateway.add_google(email)
    gateway.start()
    client = gateway.anthropic()
    history: list[dict] = []
    for turn in range(3):
        history.append({"role": "user", "content": f"turn {turn} of the first conversation"})
        answer = client.messages.create(model=MODEL, max_tokens=256, messages=history)
        history.append({"role": "assistant", "content": answer.content[0].text})
    client.messages.create(model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "another one"}])
    sessions = [e["session"] for e in google_calls(sim, email, "streamGenerateContent")]
    assert len(sessions) == 4 and all(s and s.startswith("-") for s in sessions)
    assert len(set(sessions[:3])) == 1 and sessions[3] != sessions[0]


def test_output_asked_beyond_a_models_limit_is_capped_to_it(make_gateway, sim):
    gateway = make_gateway(start=False)
    gateway.add_google()
    gateway.start()
    client = gateway.openai()
    answer = client.chat.completions.create(model=MODEL, max_tokens=500_000, messages=[{"role": "user", "content": "long"}])
    assert answer.choices[0].message.content == "echo: long"  # the sim refuses more than 65536
    message = gateway.anthropic().messages.create(
        model=CLAUDE, max_tokens=200_000, messages=[{"role": "user", "content": "long too"}]
    )
    assert message.content[0].text == "echo: long too"  # claude-sonnet-4-6: 64000


# --- Claude behind Cloud Code, after another family ---------------------------------------------------

TOOL = {
    "name": "lookup",
    "description": "Looks a word up.",
    "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
        "properties": {"word": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"}}, "required": ["word"],
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_history_signed_by_gemini_goes_on_on_a_claude_model(make_gateway, stream):
    gateway = make_gateway(start=False)
    gateway.add_google()
    gateway.start()
    client = gateway.anthropic()
    thinking = {"type": "enabled", "budget_tokens": 2048}
    messages = [{"role": "user", "content": '[[think]] [[call lookup {"word": "gateway"}]]'}]
    first = client.messages.create(model=MODEL, max_tokens=4096, thinking=thinking, tools=[TOOL], messages=messages)
    assert [b.type for b in first.content] == ["thinking", "tool_use"]  # signed by a gemini model
    call = first.content[1]
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "a place where trains switch"}]},
    ]
    kwargs = dict(model=CLAUDE, max_tokens=4096, thinking=thinking, tools=[TOOL], messages=messages)
    if stream:
        with client.messages.stream(**kwargs) as events:
            second = events.get_final_message()
    else:
        second = client.messages.create(**kwargs)
    assert second.content[-1].text.startswith("tool result: ") and "a place where trains switch" in second.content[-1].text


def test_a_gemini_cli_style_history_signed_by_gemini_goes_on_on_a_claude_model(make_gateway):
    gateway = make_gateway(start=False)
    gateway.add_google()
    gateway.start()
    client = gateway.genai()
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="list_directory", description="Lists a directory.",
        parameters_json_schema={"type": "object", "properties": {"dir_path": {"type": "string", "default": "."}},
                                "required": ["dir_path"], "additionalProperties": False},
    )])
    config = types.GenerateContentConfig(
        tools=[tool], thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=2048),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [types.Content(role="user", parts=[types.Part(text='[[call list_directory {"dir_path": "."}]]')])]
    first = client.models.generate_content(model=MODEL, contents=contents, config=config)
    model_turn = first.candidates[0].content
    assert any(p.thought for p in model_turn.parts) and any(p.function_call for p in model_turn.parts)
    contents += [model_turn, types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        name="list_directory", response={"output": "notes.txt"}))])]
    second = client.models.generate_content(model=CLAUDE, contents=contents, config=config)
    assert second.text == 'tool result: {"output":"notes.txt"}' or "notes.txt" in (second.text or "")


# --- housekeeping renews a token that died early ----------------------------------------------------


def test_housekeeping_renews_a_dead_access_token_once(make_gateway, sim):
    gateway = make_gateway({"quota": {"refresh_interval": 1}}, start=False)
    email = f"h-{uuid.uuid4().hex[:6]}@example.com"
    gateway.add_google(email, project="sim-fixed-h")
    gateway.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not google_calls(sim, email, "fetchAvailableModels"):
        time.sleep(0.05)
    refreshes = len([e for e in sim.log("oauth") if e["account"] == email])
    expired = time.time()
    sim.expire(email)  # the access token dies before its time

    def fetches() -> list[tuple[str | None, int]]:
        # a refused token names no account: the sim cannot tell whose it was
        return [(e["account"], e["status"]) for e in sim.log("google")
                if e["path"].endswith(":fetchAvailableModels") and e["t"] >= expired]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (email, 200) not in fetches():
        time.sleep(0.05)
    assert fetches()[:2] == [(None, 401), (email, 200)], fetches()
    assert len([e for e in sim.log("oauth") if e["account"] == email]) == refreshes + 1


# --- switchyard accounts check --------------------------------------------------------------------------


def check(gateway, *args: str) -> tuple[int, list[dict], str]:
    result = gateway.cli("accounts", "check", *args, "--json", check=False)
    text = gateway.cli("accounts", "check", *args, check=False).stdout if args else ""
    return result.returncode, json.loads(result.stdout), text


def steps(report: dict) -> dict[str, dict]:
    return {step["name"]: step for step in report["steps"]}


def test_accounts_check_passes_a_healthy_account_and_a_key(make_gateway, sim):
    gateway = make_gateway(start=False)
    email = f"ok-{uuid.uuid4().hex[:6]}@example.com"
    google = gateway.add_google(email, onboarded=False)
    key = gateway.add_key("openai")
    code, reports, _ = check(gateway)
    assert code == 0, reports
    by_id = {r["id"]: r for r in reports}
    assert by_id[google]["ok"] and by_id[key]["ok"]
    found = steps(by_id[google])
    assert list(found) == ["token", "project", "quota", "claude", "gemini", "gpt"]
    assert "onboarded just now to free-tier" in found["project"]["detail"]
    assert "answered" in found["claude"]["detail"] and "answered" in found["gemini"]["detail"]
    assert steps(by_id[key])["gpt"]["ok"]
    text = gateway.cli("accounts", "check").stdout
    assert "2 of 2 accounts can serve" in text and "=> can serve" in text
    assert "sim-refresh" not in text and "sk-openai" not in text  # no secret in the output


@pytest.mark.parametrize(
    ("case", "failing_step", "error_class", "advice"),
    [
        ("revoked", "token", "invalid_grant", "switchyard accounts login"),
        ("rate_limited", "gemini", "rate_limit", "wait until"),
        ("verification", "gemini", "validation_required", "https://accounts.example/verify"),
        ("outdated", "project", "client_outdated", "raise [upstreams.antigravity] client_version"),
    ],
)
def test_accounts_check_names_the_failing_step_and_what_to_do(make_gateway, sim, case, failing_step, error_class, advice):
    gateway = make_gateway(start=False)
    email = f"{case}-{uuid.uuid4().hex[:6]}@example.com"
    account = gateway.add_google(email)
    match case:
        case "revoked":
            sim.revoke(email)
        case "rate_limited":
            sim.behave("429", {"account": email, "model": "gemini-3-flash"}, retry_delay="45s")
        case "verification":
            sim.behave("403", {"account": email, "model": "gemini-3-flash"}, reason="VALIDATION_REQUIRED",
                       validation_url="https://accounts.example/verify?id=1",
                       message="Verify your account to continue.")
        case "outdated":
            sim.settings(min_client_version="99.0.0")
    code, reports, text = check(gateway, account, "--model", "gemini-3-flash") if case != "revoked" else check(gateway, account)
    assert code == 1
    failed = steps(reports[0])[failing_step]
    assert not failed["ok"] and failed["error_class"] == error_class
    assert advice in failed["next"]
    assert f"FAIL  {failing_step}" in text and advice in text and "cannot serve" in text
    if case == "verification":
        assert f"switchyard accounts enable {account}" in failed["next"]


# --- what Google's errors say besides their fields ----------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "error_class", "seconds"),
    [
        ({"reason": "RATE_LIMIT_EXCEEDED", "message": "You have exhausted your capacity on this model. Your quota will reset after 1h2m3s."},
         "quota_exhausted", 3723),
        ({"reason": "RATE_LIMIT_EXCEEDED", "retry_delay": "600s"}, "quota_exhausted", 600),
        ({"reason": "RATE_LIMIT_EXCEEDED", "retry_delay": "20s"}, "rate_limit", 20),
    ],
)
def test_quota_resets_in_the_words_and_long_rate_limits_cool_as_quota(make_gateway, sim, rule, error_class, seconds):
    gateway = make_gateway(start=False)
    tired_mail = f"tired-{uuid.uuid4().hex[:6]}@example.com"
    tired = gateway.add_google(tired_mail)
    fresh = gateway.add_google()
    gateway.start()
    sim.behave("429", {"account": tired_mail}, **rule)
    client = gateway.openai()
    for n in range(3):
        response = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": f"n{n}"}])
        assert response.headers["x-switchyard-account"] == fresh
    cooldown = rows(gateway)[tired]["cooldowns"][MODEL]
    assert cooldown["error_class"] == error_class
    assert seconds - 10 < cooldown["until"] - time.time() <= seconds


def test_a_model_list_refused_with_the_project_is_asked_for_without_it(make_gateway, sim):
    gateway = make_gateway(start=False)
    email = f"p-{uuid.uuid4().hex[:6]}@example.com"
    gateway.add_google(email)
    sim.behave("403", {"account": email, "path": "fetchAvailableModels"}, times=1)
    gateway.start()
    names = {m.id for m in gateway.openai().models.list()}
    assert {MODEL, CLAUDE} <= names
    assert [e["status"] for e in google_calls(sim, email, "fetchAvailableModels")][:2] == [403, 200]


def test_a_deprecated_name_reaches_google_as_its_successor(make_gateway, sim):
    gateway = make_gateway(start=False)
    email = f"d-{uuid.uuid4().hex[:6]}@example.com"
    gateway.add_google(email)
    gateway.start()
    response = gateway.anthropic().messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "old name"}]
    )
    assert response.headers["x-switchyard-model"] == "claude-sonnet-4-6"
    assert [e["model"] for e in google_calls(sim, email, "streamGenerateContent")] == ["claude-sonnet-4-6"]
