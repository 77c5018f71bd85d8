"""Routes, model mapping and the error-class reading: pure functions, checked on real shapes."""

from __future__ import annotations

import json

import pytest

from addons import routes
from pool import health, mapping


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("POST", "/v1/chat/completions", {}, ("openai_chat", "generate", None)),
        ("POST", "/chat/completions", {}, ("openai_chat", "generate", None)),
        ("POST", "/v1/responses", {}, ("openai_responses", "generate", None)),
        ("POST", "/responses", {}, ("openai_responses", "generate", None)),
        ("POST", "/v1/completions", {}, ("openai_completions", "generate", None)),
        ("POST", "/v1/messages?beta=true", {}, ("anthropic", "generate", None)),
        ("POST", "/messages", {}, ("anthropic", "generate", None)),
        ("POST", "/v1/messages/count_tokens", {}, ("anthropic", "count_tokens", None)),
        ("GET", "/v1/models", {}, ("openai_chat", "models", None)),
        ("GET", "/v1/models", {"anthropic-version": "2023-06-01"}, ("anthropic", "models", None)),
        ("GET", "/v1/models", {"x-goog-api-key": "k"}, ("gemini", "models", None)),
        ("GET", "/v1beta/models", {}, ("gemini", "models", None)),
        ("GET", "/v1beta/models/gemini-2.5-flash", {}, ("gemini", "model", "gemini-2.5-flash")),
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", {}, ("gemini", "generate", "gemini-2.5-flash")),
        ("POST", "/v1/models/gemini-2.5-pro:streamGenerateContent?alt=sse", {}, ("gemini", "generate", "gemini-2.5-pro")),
        ("POST", "/v1beta/models/gemini-2.5-flash:countTokens", {}, ("gemini", "count_tokens", "gemini-2.5-flash")),
        ("GET", "/healthz", {}, ("local", "health", None)),
        ("GET", "/metrics", {}, ("local", "metrics", None)),
    ],
)
def test_routes(method, path, headers, expected):
    route = routes.classify(method, path, headers)
    assert route is not None
    assert (route.protocol, route.operation, route.model) == expected


def test_gemini_stream_flags():
    sse = routes.classify("POST", "/v1beta/models/m:streamGenerateContent?alt=sse")
    array = routes.classify("POST", "/v1beta/models/m:streamGenerateContent")
    whole = routes.classify("POST", "/v1beta/models/m:generateContent")
    assert (sse.stream, sse.sse) == (True, True)
    assert (array.stream, array.sse) == (True, False)
    assert whole.stream is False


def test_unroutable():
    assert routes.classify("GET", "/v1/chat/completions") is None
    assert routes.path_exists("/v1/chat/completions")
    assert routes.classify("POST", "/v2/whatever") is None
    assert not routes.path_exists("/v2/whatever")
    assert routes.guess_protocol("/v1beta/x", {}) == "gemini"
    assert routes.guess_protocol("/v1/x", {"anthropic-version": "1"}) == "anthropic"
    assert routes.guess_protocol("/v1/x", {}) == "openai_chat"


def test_mapping_most_specific_wins():
    table = {"gpt-*": "gemini-2.5-flash", "gpt-4o*": "gemini-2.5-pro", "gpt-4o-mini": "gemini-2.5-flash-lite", "*": "x"}
    assert mapping.resolve("gpt-4o-mini", table) == "gemini-2.5-flash-lite"
    assert mapping.resolve("gpt-4o-2024", table) == "gemini-2.5-pro"
    assert mapping.resolve("gpt-5", table) == "gemini-2.5-flash"
    assert mapping.resolve("claude", table) == "x"
    assert mapping.resolve("models/gemini-2.5-pro", {}) == "gemini-2.5-pro"


def _google_error(status: int, reason: str, **extra) -> bytes:
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "metadata": extra.get("metadata", {})}]
    if "retry" in extra:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": extra["retry"]})
    return json.dumps({"error": {"code": status, "message": "m", "status": "X", "details": details}}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "cls", "retry"),
    [
        (429, {}, _google_error(429, "RATE_LIMIT_EXCEEDED", retry="1.5s"), "rate_limit", 1.5),
        (429, {}, _google_error(429, "QUOTA_EXHAUSTED", metadata={"quotaResetDelay": "2h1m1s"}, retry="3s"), "quota_exhausted", 7261),
        (503, {}, _google_error(503, "MODEL_CAPACITY_EXHAUSTED"), "capacity", None),
        (403, {}, _google_error(403, "VALIDATION_REQUIRED", metadata={"validation_url": "https://v.example/x"}), "validation_required", None),
        (429, {"retry-after": "17"}, b'{"error":{"message":"slow down","type":"rate_limit_error"}}', "rate_limit", 17),
        (429, {}, b'{"error":{"message":"no money","type":"insufficient_quota","code":"insufficient_quota"}}', "quota_exhausted", None),
        (529, {}, b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}', "capacity", None),
        (401, {}, b"{}", "auth", None),
        (400, {}, _google_error(400, "API_KEY_INVALID"), "auth", None),
        (400, {}, b'{"error":{"code":400,"message":"bad field","status":"INVALID_ARGUMENT"}}', "bad_request", None),
        (404, {}, b"", "not_found", None),
        (502, {}, b"<html>bad gateway</html>", "server", None),
        (400, {}, b'{"error":"invalid_grant","error_description":"Token has been expired or revoked."}', "invalid_grant", None),
    ],
)
def test_classify(status, headers, body, cls, retry):
    verdict = health.classify(status, headers, body)
    assert verdict.error_class == cls
    assert verdict.retry_after == retry
    if cls == "validation_required":
        assert verdict.validation_url == "https://v.example/x"


def test_backoff_without_hints_doubles_up_to_the_cap():
    verdict = health.Verdict(health.ErrorClass.SERVER, "x")
    durations = [verdict.cooldown(n) for n in range(1, 12)]
    assert durations[:3] == [5, 10, 20]
    assert max(durations) == health.POLICIES[health.ErrorClass.SERVER].cap
    hinted = health.Verdict(health.ErrorClass.RATE_LIMIT, "x", retry_after=2.5)
    assert hinted.cooldown(7) == 2.5


@pytest.mark.parametrize(("text", "seconds"), [("1.2s", 1.2), ("2h1m1s", 7261), ("500ms", 0.5), ("34m12.5s", 2052.5), ("", None), ("soon", None)])
def test_durations(text, seconds):
    assert health.parse_duration(text) == seconds


def test_client_names_route_by_family_to_what_is_served():
    served = mapping.Served(["gemini-2.5-flash", "gemini-2.5-pro", "claude-sonnet-4-5"])
    assert mapping.resolve("claude-opus-4-1", {}, served) == "claude-sonnet-4-5"  # no opus: the next family
    assert mapping.resolve("claude-sonnet-4-5-20250929", {}, served) == "claude-sonnet-4-5"
    assert mapping.resolve("gpt-5-codex", {}, served) == "gemini-2.5-pro"
    assert mapping.resolve("gemini-2.5-flash", {}, served) == "gemini-2.5-flash"  # served as asked
    assert mapping.resolve("gpt-5-codex", {"gpt-*": "claude-sonnet-4-5"}, served) == "claude-sonnet-4-5"  # config wins
    assert mapping.resolve("mystery", {}, served) == "mystery"
    assert mapping.resolve("claude-x", {}, mapping.Served()) == "claude-x"


def test_readme_carries_the_error_table_from_the_code():
    """The table users read is the one the code acts on."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert health.policy_table() in readme
