"""The error-class table and the reading of upstream errors into it (health.py), on real-shaped
bodies: Google RPC errors from Cloud Code, OpenAI and Anthropic errors, OAuth errors."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from pool.health import POLICIES, ErrorClass, Step, classify, network_failure, parse_duration, policy_table


def google_error(status: int, reason: str | None = None, metadata: dict | None = None, retry: str | None = None,
                 message: str = "Resource has been exhausted (e.g. check quota).") -> bytes:
    details: list[dict] = []
    if reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                        "domain": "cloudcode-pa.googleapis.com", "metadata": metadata or {}})
    if retry:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry})
    status_name = {429: "RESOURCE_EXHAUSTED", 403: "PERMISSION_DENIED", 503: "UNAVAILABLE"}.get(status, "UNKNOWN")
    return json.dumps({"error": {"code": status, "message": message, "status": status_name, "details": details}}).encode()


def test_every_class_has_a_policy_and_the_readme_table_shows_them_all():
    assert set(POLICIES) == set(ErrorClass)
    table = policy_table()
    assert all(f"| `{c}` |" in table for c in ErrorClass)
    assert table.count("\n") == len(ErrorClass) + 1


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_class", "retry_after"),
    [
        (429, google_error(429, "RATE_LIMIT_EXCEEDED", retry="1.5s"), {}, ErrorClass.RATE_LIMIT, 1.5),
        (429, google_error(429), {"retry-after": "7"}, ErrorClass.RATE_LIMIT, 7.0),
        (429, google_error(429, "MODEL_CAPACITY_EXHAUSTED", retry="0.8s"), {}, ErrorClass.CAPACITY, 0.8),
        (429, google_error(429, "QUOTA_EXHAUSTED", {"quotaResetDelay": "2h1m1s"}), {}, ErrorClass.QUOTA_EXHAUSTED, 7261.0),
        # A reason-less 429 that names a reset is still an exhausted quota.
        (429, google_error(429, "OTHER", {"quotaResetDelay": "34m12.5s"}), {}, ErrorClass.QUOTA_EXHAUSTED, 2052.5),
        (403, google_error(403, "VALIDATION_REQUIRED", {"validation_url": "https://accounts.google.com/v?x=1"}), {},
         ErrorClass.VALIDATION_REQUIRED, None),
        (401, google_error(401, message="Request had invalid authentication credentials."), {}, ErrorClass.AUTH, None),
        (403, google_error(403, message="The caller does not have permission"), {}, ErrorClass.FORBIDDEN, None),
        (404, google_error(404, message="Requested entity was not found."), {}, ErrorClass.NOT_FOUND, None),
        (400, google_error(400, message="Invalid JSON payload received."), {}, ErrorClass.BAD_REQUEST, None),
        (503, google_error(503, message="The service is currently unavailable."), {}, ErrorClass.SERVER, None),
        (529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', {}, ErrorClass.CAPACITY, None),
        (429, b'{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}',
         {"retry-after-ms": "2500"}, ErrorClass.QUOTA_EXHAUSTED, 2.5),
        (400, b'{"error":"invalid_grant","error_description":"Token has been expired or revoked."}', {},
         ErrorClass.INVALID_GRANT, None),
        (502, b"<html>bad gateway</html>", {}, ErrorClass.SERVER, None),
    ],
)
def test_classify(status, body, headers, error_class, retry_after):
    verdict = classify(status, headers, body)
    assert verdict.error_class is error_class
    assert verdict.retry_after == (pytest.approx(retry_after) if retry_after is not None else None)


def test_quota_reset_takes_the_latest_of_its_hints():
    """quotaResetDelay is often whole seconds while the timestamp and RetryInfo are exact:
    ending the cooldown at the earliest would probe before the quota is back."""
    reset = time.time() + 100.6
    stamp = datetime.fromtimestamp(reset, UTC).isoformat().replace("+00:00", "Z")
    body = google_error(429, "QUOTA_EXHAUSTED", {"quotaResetDelay": "1m40s", "quotaResetTimeStamp": stamp}, retry="100.2s")
    verdict = classify(429, {}, body)
    assert verdict.retry_after == pytest.approx(100.6, abs=0.05)


def test_validation_url_is_kept():
    body = google_error(403, "VALIDATION_REQUIRED", message="Verify your account at https://accounts.google.com/signin/continue?a=1.")
    assert classify(403, {}, body).validation_url == "https://accounts.google.com/signin/continue?a=1"
    appeal = google_error(403, "VALIDATION_REQUIRED", {"appeal_url": "https://support.google.com/appeal?c=2"})
    assert classify(403, {}, appeal).validation_url == "https://support.google.com/appeal?c=2"


def test_cooldowns_back_off_exponentially_to_a_cap_and_hints_win():
    verdict = classify(429, {}, google_error(429, "RATE_LIMIT_EXCEEDED"))
    policy = POLICIES[ErrorClass.RATE_LIMIT]
    lengths = [verdict.cooldown(n) for n in range(1, 8)]
    assert lengths[:4] == [policy.base, policy.base * 2, policy.base * 4, policy.base * 8]
    assert max(lengths) == policy.cap and lengths == sorted(lengths)
    assert classify(429, {"retry-after": "3"}, b"").cooldown(5) == 3.0


def test_steps_that_the_dispatcher_relies_on():
    assert POLICIES[ErrorClass.CAPACITY].step is Step.RETRY_SAME
    assert POLICIES[ErrorClass.AUTH].step is Step.REFRESH
    assert POLICIES[ErrorClass.BAD_REQUEST].step is Step.GIVE_UP and POLICIES[ErrorClass.BAD_REQUEST].scope is None
    assert POLICIES[ErrorClass.INVALID_GRANT].disable
    assert {c for c, p in POLICIES.items() if p.scope == "model"} >= {ErrorClass.RATE_LIMIT, ErrorClass.QUOTA_EXHAUSTED, ErrorClass.CAPACITY}


def test_network_failures():
    from pool.transport import TransportError

    assert network_failure(TransportError("ClientConnectorError: refused")).error_class is ErrorClass.NETWORK
    assert network_failure(TransportError("timed out", timeout=True)).error_class is ErrorClass.TIMEOUT
    assert network_failure(TimeoutError()).error_class is ErrorClass.TIMEOUT


@pytest.mark.parametrize(("text", "seconds"), [("1.2s", 1.2), ("2h1m1s", 7261), ("500ms", 0.5), ("34m12.5s", 2052.5), ("x", None), ("", None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


# --- what the live Cloud Code service does beyond the documented fields -------------------------


@pytest.mark.parametrize(
    ("body", "error_class", "retry_after"),
    [
        # the only hint is in the words
        (google_error(429, "RATE_LIMIT_EXCEEDED", message="You have exhausted your capacity on this model. Your quota"
                      " will reset after 1h2m3s."), ErrorClass.QUOTA_EXHAUSTED, 3723.0),
        (google_error(429, "RATE_LIMIT_EXCEEDED", message="Too many requests, retry after 12s."), ErrorClass.RATE_LIMIT, 12.0),
        (google_error(429, "QUOTA_EXHAUSTED", message="Your quota will reset after 34m12s."), ErrorClass.QUOTA_EXHAUSTED, 2052.0),
        # a per-minute limit that asks for five minutes or more is an exhausted quota
        (google_error(429, "RATE_LIMIT_EXCEEDED", retry="300s"), ErrorClass.QUOTA_EXHAUSTED, 300.0),
        (google_error(429, "RATE_LIMIT_EXCEEDED", retry="299s"), ErrorClass.RATE_LIMIT, 299.0),
        # structured hints win over the words
        (google_error(429, "QUOTA_EXHAUSTED", {"quotaResetDelay": "10s"}, message="reset after 1h"), ErrorClass.QUOTA_EXHAUSTED, 10.0),
    ],
)
def test_resets_named_only_in_the_message_and_long_rate_limits(body, error_class, retry_after):
    verdict = classify(429, {}, body)
    assert verdict.error_class is error_class
    assert verdict.retry_after == pytest.approx(retry_after)


def test_an_outdated_client_is_its_own_class_that_cools_nothing_and_tells_what_to_do():
    body = json.dumps({"error": {"code": 400, "status": "FAILED_PRECONDITION", "message":
                                 "This version of Antigravity is no longer supported. Please update to receive the latest features!"}})
    verdict = classify(400, {}, body.encode())
    assert verdict.error_class is ErrorClass.CLIENT_OUTDATED
    policy = verdict.policy
    assert policy.step is Step.GIVE_UP and policy.scope is None and not policy.disable
    assert "client_version" in policy.advice


def test_outdated_answer_text_is_told_apart_from_a_real_answer_as_early_as_possible():
    from pool.health import outdated_text

    phrase = "This version of Antigravity is no longer supported. Please update to receive the latest features!"
    assert outdated_text(phrase) is True
    assert outdated_text("  " + phrase[:60]) is True
    assert outdated_text("Your current version of Antigravity is out of date. Please visit https://antigravity.google") is True
    assert outdated_text("") is None and outdated_text("This ver") is None and outdated_text("Your") is None
    assert outdated_text("Thus") is False and outdated_text("echo: hi") is False
    assert outdated_text("A quote: This version of Antigravity is no longer supported") is False  # not the whole answer


@pytest.mark.parametrize(
    ("raw", "error_class", "status"),
    [
        (b'{"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED", "details": [{"reason": "QUOTA_EXHAUSTED"}]}}',
         ErrorClass.QUOTA_EXHAUSTED, 429),
        (b'data: {"response": {"error": {"code": 503, "message": "no capacity", "status": "UNAVAILABLE"}}}\r\n\r\n',
         ErrorClass.SERVER, 503),
        (b'[{"error": {"code": 400, "message": "This version of Antigravity is no longer supported.", "status": "FAILED_PRECONDITION"}}]',
         ErrorClass.CLIENT_OUTDATED, 400),
        (b'{"error": {"message": "no code"}}', ErrorClass.SERVER, 502),
    ],
)
def test_an_error_inside_a_200_is_the_error_it_carries(raw, error_class, status):
    from pool.health import embedded_error

    verdict = embedded_error(raw)
    assert verdict is not None and verdict.error_class is error_class and verdict.status == status
    assert "inside a 200" in verdict.message


@pytest.mark.parametrize("raw", [b'{"candidates": []}', b"data: {\"response\": {\"candidates\": []}}\r\n\r\n", b"<html>", b""])
def test_an_ordinary_200_is_no_embedded_error(raw):
    from pool.health import embedded_error

    assert embedded_error(raw) is None
