"""What goes to Google's Cloud Code besides the body: who the gateway says it is, the envelope
(project, stable sessionId, request id) and the choice to ask for a stream; and how a streamed
Gemini answer becomes one body again for a caller that wanted it whole."""

from __future__ import annotations

import json
import re

import pytest

from addons.translate.passthrough import merge_gemini, response_body
from pool import identity, upstreams
from pool.accounts import Account
from pool.config import Config, ConfigError, parse

GOOGLE = Account(id="g1", kind="google", secret="refresh")
GEMINI_KEY = Account(id="k1", kind="gemini", secret="key")
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
UA = re.compile(r"^Antigravity/(\d+\.\d+\.\d+) \(([^()]+)\) Chrome/[\d.]+ Electron/[\d.]+$")


def google_target(config: Config, *, stream: bool = False, session: str | None = "conv-1", operation="generate"):
    return upstreams.target(
        GOOGLE, "https://cloudcode.example/v1internal", operation, model="gemini-3-flash", stream=stream,
        body=BODY, credential="ya29.token", config=config, project="proj-1", session=session,
    )


def test_every_cloud_code_call_names_the_antigravity_client_and_its_version():
    config = Config()
    headers = google_target(config).headers
    match = UA.fullmatch(headers["user-agent"])
    assert match, headers["user-agent"]
    assert match.group(1) == config.upstreams.antigravity.client_version == headers["x-client-version"]
    assert headers["x-client-name"] == "antigravity"
    assert headers["authorization"] == "Bearer ya29.token"
    assert headers == {"authorization": "Bearer ya29.token", **identity.headers(config.upstreams.antigravity)}


def test_client_version_and_platform_come_from_the_config():
    config = parse({"upstreams": {"antigravity": {"client_version": "9.8.7", "platform": "Windows NT 10.0; Win64; x64"}}})
    headers = identity.headers(config.upstreams.antigravity)
    assert headers["user-agent"].startswith("Antigravity/9.8.7 (Windows NT 10.0; Win64; x64) Chrome/")
    assert headers["x-client-version"] == "9.8.7"


@pytest.mark.parametrize(("key", "value"), [("client_version", "latest"), ("client_version", "4.3"), ("platform", "x) evil (")])
def test_a_bad_identity_setting_is_refused_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=f"upstreams.antigravity.{key}"):
        parse({"upstreams": {"antigravity": {key: value}}})


def test_the_envelope_keeps_a_conversation_on_one_session_id_and_asks_for_a_stream():
    config = Config()
    first, again, other = google_target(config), google_target(config), google_target(config, session="conv-2")
    assert first.url.endswith(":streamGenerateContent?alt=sse")  # a whole answer is asked for as a stream
    body = first.body
    assert body["project"] == "proj-1" and body["model"] == "gemini-3-flash"
    assert body["userAgent"] == "antigravity" and body["requestType"] == "agent"
    assert re.fullmatch(r"agent-[0-9a-f-]{36}", body["requestId"])
    assert body["requestId"] != again.body["requestId"]
    session = body["request"]["sessionId"]
    assert re.fullmatch(r"-\d+", session) and int(session[1:]) < 2**63
    assert again.body["request"]["sessionId"] == session
    assert other.body["request"]["sessionId"] != session
    assert body["request"]["contents"] == BODY["contents"] and "sessionId" not in BODY  # the caller's body untouched


def test_count_tokens_and_key_accounts_keep_their_own_shape():
    config = Config()
    count = google_target(config, operation="count_tokens")
    assert count.url.endswith(":countTokens") and count.body == {"request": {"model": "models/gemini-3-flash", "contents": BODY["contents"]}}
    key = upstreams.target(GEMINI_KEY, "https://g.example", "generate", model="gemini-3-flash", stream=False,
                           body=BODY, credential="key", config=config)
    assert key.url.endswith("/v1beta/models/gemini-3-flash:generateContent") and "user-agent" not in key.headers
    assert not upstreams.streams(GEMINI_KEY, "generate", False) and upstreams.streams(GOOGLE, "generate", False)
    assert not upstreams.streams(GOOGLE, "count_tokens", False)


def sse(*docs: dict) -> bytes:
    return b"".join(b"data: " + json.dumps({"response": d}).encode() + b"\r\n\r\n" for d in docs)


def test_a_streamed_gemini_answer_becomes_one_body_with_every_field_kept():
    docs = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "thinking", "thought": True, "thoughtSignature": "c2ln"}]}, "index": 0}],
         "modelVersion": "gemini-3-flash", "responseId": "r1"},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo", "thoughtSignature": "ZW5k"}]}, "index": 0}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
                         "finishReason": "STOP", "index": 0, "groundingMetadata": {"webSearchQueries": ["q"]}}],
         "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5}},
    ]
    whole = json.loads(response_body("antigravity", sse(*docs), streamed=True))
    assert whole == merge_gemini(docs)
    candidate = whole["candidates"][0]
    assert candidate["content"]["parts"] == [
        {"text": "thinking", "thought": True, "thoughtSignature": "c2ln"},
        {"text": "Hello", "thoughtSignature": "ZW5k"},
        {"functionCall": {"name": "f", "args": {"a": 1}}},
    ]
    assert candidate["finishReason"] == "STOP" and candidate["groundingMetadata"] == {"webSearchQueries": ["q"]}
    assert whole["usageMetadata"]["candidatesTokenCount"] == 5
    assert whole["modelVersion"] == "gemini-3-flash" and whole["responseId"] == "r1"


@pytest.mark.parametrize(("operation", "model", "request_type"), [
    ("generate", "gemini-3-flash", "agent"),
    ("search", "gemini-3-flash", "web_search"),
    ("images", "gemini-3.1-flash-image", "image_gen"),
    ("generate", "gemini-3.1-flash-image", "image_gen"),  # an image model in a chat is still image work
])
def test_the_envelope_says_what_kind_of_work_a_request_is(operation, model, request_type):
    target = upstreams.target(GOOGLE, "https://cloudcode.example/v1internal", operation, model=model, stream=False,
                              body=BODY, credential="t", config=Config(), project="p", session="s")
    assert target.body["requestType"] == request_type
    assert target.url.endswith(":streamGenerateContent?alt=sse")  # asked for as a stream, assembled


def test_images_and_embeddings_go_where_each_key_kind_serves_them():
    openai_key = Account(id="o1", kind="openai", secret="sk", base_url="https://api.example/v1")

    def url(account, operation, body):
        return upstreams.target(account, upstreams.endpoints(account, Config())[0], operation, model="m", stream=False,
                                body=body, credential="k", config=Config()).url

    assert url(GEMINI_KEY, "embeddings", {"requests": []}).endswith("/v1beta/models/m:batchEmbedContents")
    assert url(GEMINI_KEY, "embeddings", {"content": {}}).endswith("/v1beta/models/m:embedContent")
    assert url(GEMINI_KEY, "images", BODY).endswith("/v1beta/models/m:generateContent")
    assert url(openai_key, "images", {"prompt": "x"}) == "https://api.example/v1/images/generations"
    assert url(openai_key, "images", upstreams.Form(b"", "multipart/form-data; boundary=x")) == (
        "https://api.example/v1/images/edits")
    assert url(openai_key, "embeddings", {}) == "https://api.example/v1/embeddings"
    assert upstreams.MAKES_IMAGES == {"google", "gemini", "openai"} and upstreams.EMBEDS == {"gemini", "openai"}
