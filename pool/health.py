"""Upstream failures: what kind each one is, and what the pool does about it.

`POLICIES` is the single table that decides, for every class of error, the next step of the
request, the scope of the cooldown (the whole account, or the account for one model) and how
long it lasts when the upstream gave no hint. `classify` reads an upstream answer (Google RPC,
OpenAI or Anthropic error bodies, `Retry-After`) into a `Verdict`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal, Mapping


class ErrorClass(StrEnum):
    RATE_LIMIT = "rate_limit"
    QUOTA_EXHAUSTED = "quota_exhausted"
    CAPACITY = "capacity"
    AUTH = "auth"
    FORBIDDEN = "forbidden"
    VALIDATION_REQUIRED = "validation_required"
    INVALID_GRANT = "invalid_grant"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"
    SERVER = "server"
    NETWORK = "network"
    TIMEOUT = "timeout"
    CLIENT_OUTDATED = "client_outdated"


class Step(StrEnum):
    """What the request does next, on the same account or another."""

    NEXT_ENDPOINT = "next_endpoint"  # same account, its next endpoint; then the next account
    RETRY_SAME = "retry_same"  # same account once more after a short wait; then the next account
    REFRESH = "refresh"  # new access token, same account once more; then the next account
    NEXT_ACCOUNT = "next_account"
    GIVE_UP = "give_up"  # the request itself is at fault: no other account would do better


Scope = Literal["account", "model"] | None


@dataclass(frozen=True, slots=True)
class Policy:
    step: Step
    scope: Scope  # what cools down: the account, the account for this model, or nothing
    base: float  # first cooldown without an upstream hint, seconds; doubles per repeat...
    cap: float  # ...up to this
    caller_status: int  # what the caller sees when this is the last word
    disable: bool = False  # needs the user: the account is taken out until they act
    trigger: str = ""  # what upstream answer is this class (for the README table)
    advice: str = ""  # what the user can do about it, in plain words (CLI, errors)


MINUTE, HOUR = 60.0, 3600.0

# Durations are for answers without a hint: a hint (Retry-After, RetryInfo, quotaResetDelay,
# quotaResetTimeStamp, fetchAvailableModels' resetTime) always wins. Every cooldown ends with one
# probe request; a success clears the account's cooldowns for that model and account-wide.
POLICIES: dict[ErrorClass, Policy] = {
    ErrorClass.RATE_LIMIT: Policy(
        Step.NEXT_ACCOUNT, "model", 15, 2 * MINUTE, 429,
        trigger="429 `RATE_LIMIT_EXCEEDED` / `RESOURCE_EXHAUSTED` (per-minute limits)",
        advice="a per-minute limit: the account serves again after its cooldown"),
    ErrorClass.QUOTA_EXHAUSTED: Policy(
        Step.NEXT_ACCOUNT, "model", HOUR, 24 * HOUR, 429,
        trigger="429 `QUOTA_EXHAUSTED`, or a reset hint (`quotaResetDelay`, a retry delay of 5 min or more); OpenAI `insufficient_quota`",
        advice="the quota resets at the time shown; other accounts serve meanwhile"),
    ErrorClass.CAPACITY: Policy(
        Step.RETRY_SAME, "model", 5, 2 * MINUTE, 503,
        trigger="`MODEL_CAPACITY_EXHAUSTED`, 529, Anthropic `overloaded_error`",
        advice="nothing to do: the model is busy upstream; try again shortly or use another model"),
    ErrorClass.AUTH: Policy(
        Step.REFRESH, "account", MINUTE, HOUR, 502,
        trigger="401, `API_KEY_INVALID`",
        advice="check the credentials: the API key, or the OAuth client_id/client_secret this refresh token was issued for"),
    ErrorClass.FORBIDDEN: Policy(
        Step.NEXT_ACCOUNT, "account", 10 * MINUTE, 6 * HOUR, 502,
        trigger="403, no Cloud Code project",
        advice="the account may not use this service: sign in once in the Antigravity IDE (or give --project), or check the key's permissions"),
    ErrorClass.VALIDATION_REQUIRED: Policy(
        Step.NEXT_ACCOUNT, "account", 24 * HOUR, 24 * HOUR, 502,
        trigger="403 `VALIDATION_REQUIRED` (its URL is kept and shown by `accounts list`)",
        advice="open the verification URL in a browser signed in to this account, then run `switchyard accounts enable ID`"),
    ErrorClass.INVALID_GRANT: Policy(
        Step.NEXT_ACCOUNT, "account", 0, 0, 502, disable=True,
        trigger="token refresh answers `invalid_grant` (revoked or expired refresh token)",
        advice="sign in again with `switchyard accounts login` (or add a new refresh token)"),
    ErrorClass.NOT_FOUND: Policy(
        Step.NEXT_ENDPOINT, "model", 10 * MINUTE, HOUR, 404,
        trigger="404 (the model is not available to this account)",
        advice="use a model the account lists (`switchyard accounts list`), or map the name in [model_mapping]"),
    ErrorClass.BAD_REQUEST: Policy(
        Step.GIVE_UP, None, 0, 0, 400,
        trigger="400, 413, 422: the request itself is wrong",
        advice="the request was refused as it is: the message says what the upstream objects to"),
    ErrorClass.SERVER: Policy(
        Step.NEXT_ENDPOINT, "model", 5, 5 * MINUTE, 502,
        trigger="5xx, 408, an unreadable, cut-off or empty answer, an HTML page or an error inside a 200",
        advice="nothing to do: an upstream fault; the account serves again after its cooldown"),
    ErrorClass.NETWORK: Policy(
        Step.NEXT_ENDPOINT, "account", 5, 5 * MINUTE, 502,
        trigger="connection refused, reset or broken (also after the headers)",
        advice="check the network path to the upstream (base URL, proxy, firewall)"),
    ErrorClass.TIMEOUT: Policy(
        Step.NEXT_ACCOUNT, "model", 15, 5 * MINUTE, 504,
        trigger="no status and first event within `first_byte_timeout`, silent for `idle_timeout` mid-answer, or not done within `request_timeout`",
        advice="nothing to do unless it repeats: then check the network, or raise the timeout the message names"),
    ErrorClass.CLIENT_OUTDATED: Policy(
        Step.GIVE_UP, None, 0, 0, 502,
        trigger="\"This version of Antigravity is no longer supported\" (an error, or the whole answer)",
        advice="raise [upstreams.antigravity] client_version in config.toml to the current Antigravity release (every Google account shares it)"),
}

STEP_TEXT: dict[Step, str] = {
    Step.NEXT_ENDPOINT: "next endpoint of the account, then the next account",
    Step.RETRY_SAME: "same account once more after the hint (at most 2 s), then the next account",
    Step.REFRESH: "refresh the access token and retry the same account once, then the next account",
    Step.NEXT_ACCOUNT: "next account",
    Step.GIVE_UP: "answer the caller now (no other account would do better)",
}


def policy_table() -> str:
    """POLICIES as the Markdown table the README shows, so the two never disagree."""

    def span(seconds: float) -> str:
        return f"{seconds / HOUR:g} h" if seconds >= HOUR else f"{seconds / MINUTE:g} min" if seconds >= MINUTE else f"{seconds:g} s"

    rows = ["| class | upstream answer | next step | cools | without a hint | caller sees |", "|---|---|---|---|---|---|"]
    for error_class, p in POLICIES.items():
        scope = {"account": "account", "model": "account + model", None: "nothing"}[p.scope]
        if p.disable:
            scope, duration = "account disabled, reason kept", "until `accounts enable` / `login`"
        elif p.scope is None:
            duration = "-"
        elif p.base == p.cap:
            duration = span(p.base)
        else:
            duration = f"{span(p.base)}, doubling to {span(p.cap)}"
        rows.append(f"| `{error_class}` | {p.trigger} | {STEP_TEXT[p.step]} | {scope} | {duration} | {p.caller_status} |")
    return "\n".join(rows)


# Google RPC `reason`s that name the class outright, whatever the status.
REASONS: dict[str, ErrorClass] = {
    "RATE_LIMIT_EXCEEDED": ErrorClass.RATE_LIMIT,
    "QUOTA_EXHAUSTED": ErrorClass.QUOTA_EXHAUSTED,
    "RESOURCE_EXHAUSTED": ErrorClass.RATE_LIMIT,
    "MODEL_CAPACITY_EXHAUSTED": ErrorClass.CAPACITY,
    "VALIDATION_REQUIRED": ErrorClass.VALIDATION_REQUIRED,
    "API_KEY_INVALID": ErrorClass.AUTH,
    "API_KEY_EXPIRED": ErrorClass.AUTH,
    "insufficient_quota": ErrorClass.QUOTA_EXHAUSTED,
    "overloaded_error": ErrorClass.CAPACITY,
    "invalid_grant": ErrorClass.INVALID_GRANT,
}

STATUSES: dict[int, ErrorClass] = {
    400: ErrorClass.BAD_REQUEST,
    401: ErrorClass.AUTH,
    403: ErrorClass.FORBIDDEN,
    404: ErrorClass.NOT_FOUND,
    408: ErrorClass.SERVER,
    413: ErrorClass.BAD_REQUEST,
    422: ErrorClass.BAD_REQUEST,
    429: ErrorClass.RATE_LIMIT,
    529: ErrorClass.CAPACITY,
}


@dataclass(slots=True)
class Verdict:
    error_class: ErrorClass
    message: str
    status: int | None = None  # the upstream's status, None for network errors
    retry_after: float | None = None  # the upstream's hint, seconds from now
    validation_url: str | None = None

    @property
    def policy(self) -> Policy:
        return POLICIES[self.error_class]

    def cooldown(self, failures: int) -> float:
        """Seconds to cool: the upstream's hint wins; without one, back off exponentially."""
        if self.retry_after is not None:
            return max(self.retry_after, 0.0)
        policy = self.policy
        return min(policy.base * 2 ** max(failures - 1, 0), policy.cap)


LONG_RETRY = 300.0  # seconds: a "rate limit" that asks for this long a wait is an exhausted quota

# Phrases Google's Cloud Code uses, in an error or as the whole answer, for a client version it
# no longer serves; the fix is the user's client_version, not a cooldown.
OUTDATED_PHRASES = (
    "This version of Antigravity is no longer supported",
    "Your current version of Antigravity is out of date",
)


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
    error = _error_object(body)
    reasons = _reasons(error)
    message = _message(error, body, status)
    error_class = next((REASONS[r] for r in reasons if r in REASONS), None)
    if error_class is None:
        error_class = STATUSES.get(status) or (ErrorClass.SERVER if status >= 500 else ErrorClass.BAD_REQUEST)
    if error_class is ErrorClass.RATE_LIMIT and status == 429 and _mentions_quota(error):
        error_class = ErrorClass.QUOTA_EXHAUSTED
    if any(phrase in message for phrase in OUTDATED_PHRASES):
        error_class = ErrorClass.CLIENT_OUTDATED
    retry_after = _retry_hint(error_class, error, headers)
    if error_class is ErrorClass.RATE_LIMIT and retry_after is not None and retry_after >= LONG_RETRY:
        error_class = ErrorClass.QUOTA_EXHAUSTED
    return Verdict(
        error_class=error_class,
        message=message,
        status=status,
        retry_after=retry_after,
        validation_url=_validation_url(error),
    )


def outdated_text(text: str) -> bool | None:
    """Whether an answer's text is Google refusing the client's version (the refusal is the
    whole answer): True, False, or None while the text so far could still become one of those
    phrases (a stream read part way)."""
    head = text.lstrip()
    if head.startswith(OUTDATED_PHRASES):
        return True
    if any(phrase.startswith(head) for phrase in OUTDATED_PHRASES):
        return None
    return False


def embedded_error(body: bytes) -> Verdict | None:
    """The error inside a 200: a body, or the first event of a stream, that is `{"error": ...}`
    (a fallback host of Google's answers some refusals so), as the verdict it stands for."""
    text = body.lstrip()
    if text.startswith(b"data:"):
        text = text[5:].split(b"\n", 1)[0]
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("response"), dict) and "error" in data["response"]:
        data = data["response"]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 502
    verdict = classify(status, {}, json.dumps({"error": error}).encode())
    verdict.message = f"{verdict.message} (an error inside a 200 answer)"
    return verdict


def network_failure(exc: BaseException) -> Verdict:
    """A failed exchange (a `TransportError`, or a timeout) as a verdict."""
    if getattr(exc, "timeout", False) or isinstance(exc, TimeoutError):
        return Verdict(ErrorClass.TIMEOUT, f"upstream did not answer in time ({exc or type(exc).__name__})")
    detail = str(exc) or type(exc).__name__
    return Verdict(ErrorClass.NETWORK, f"cannot reach the upstream: {detail}")


# --- reading error bodies ---------------------------------------------------------------------


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini's JSON-array stream form
    if not isinstance(data, dict):
        return {}
    error = data.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # OAuth: {"error": "invalid_grant", "error_description": ...}
        return {"reason": error, "message": data.get("error_description") or error}
    return {}


def _details(error: dict[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _reasons(error: dict[str, Any]) -> list[str]:
    found = [d.get("reason") for d in _details(error)]
    found += [error.get("reason"), error.get("code"), error.get("type"), error.get("status")]
    return [r for r in found if isinstance(r, str)]


def _mentions_quota(error: dict[str, Any]) -> bool:
    return any("quotaResetDelay" in d.get("metadata", {}) for d in _details(error))


def _message(error: dict[str, Any], body: bytes, status: int) -> str:
    message = error.get("message")
    if isinstance(message, str) and message:
        return message[:500]
    text = body.decode("utf-8", "replace").strip()
    return text[:200] if text else f"upstream answered {status}"


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def parse_duration(text: str) -> float | None:
    """Google's durations: "1.2s", "2h1m1s", "500ms", "34m12.5s"."""
    text = text.strip()
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


# Resets named only in the message: "Your quota will reset after 1h2m3s.", "retry after 30s".
_TEXT_HINTS = re.compile(r"(?:reset|retry) (?:after|in) (\d+(?:\.\d+)?(?:ms|h|m|s)(?:\d+(?:\.\d+)?(?:ms|m|s))*)", re.I)


def _text_hint(error: dict[str, Any]) -> float | None:
    match = _TEXT_HINTS.search(str(error.get("message", "")))
    return parse_duration(match.group(1)) if match else None


def _retry_hint(error_class: ErrorClass, error: dict[str, Any], headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asks us to wait. For an exhausted quota the reset hints describe one
    moment at different precisions (quotaResetDelay is often whole seconds), so the latest wins:
    a cooldown that ends a little late costs nothing, one that ends early costs a failed probe.
    A time named only in the message counts when nothing structured says more."""
    retry: float | None = None
    quota_resets: list[float] = []
    for detail in _details(error):
        if isinstance(delay := detail.get("retryDelay"), str):
            retry = parse_duration(delay)
        metadata = detail.get("metadata")
        if isinstance(metadata, dict):
            if isinstance(delay := metadata.get("quotaResetDelay"), str) and (seconds := parse_duration(delay)) is not None:
                quota_resets.append(seconds)
            if isinstance(stamp := metadata.get("quotaResetTimeStamp"), str) and (seconds := _seconds_until(stamp)) is not None:
                quota_resets.append(seconds)
    header = _retry_after_header(headers)
    if error_class is ErrorClass.QUOTA_EXHAUSTED:
        hints = quota_resets + [v for v in (retry,) if v is not None]
        return max(hints) if hints else header if header is not None else _text_hint(error)
    return next((v for v in (header, retry, *quota_resets, _text_hint(error)) if v is not None), None)


def _retry_after_header(headers: Mapping[str, str]) -> float | None:
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None


def _seconds_until(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - time.time()
    except ValueError:
        return None


_URL = re.compile(r"https://\S+")


def _validation_url(error: dict[str, Any]) -> str | None:
    for detail in _details(error):
        metadata = detail.get("metadata")
        if isinstance(metadata, dict):
            for key in ("validation_url", "validationUrl", "appeal_url", "appealUrl", "url"):
                if isinstance(url := metadata.get(key), str):
                    return url
    if "VALIDATION_REQUIRED" in _reasons(error):
        match = _URL.search(str(error.get("message", "")))
        return match.group(0).rstrip(".,)") if match else None
    return None
